"""Moving images between the store and the formats other tools read.

Export: `oci:DIR[:tag]` (an OCI image layout directory, merged into an existing one),
`oci-archive:FILE[:tag]` (a tar of such a layout) and `docker-archive:FILE[:name:tag]`
(`docker save` format: manifest.json, repositories, <config>.json, <diff_id>/layer.tar).
Import: `oci:DIR[:tag]`, `oci-archive:FILE[:tag]` and `docker-archive:FILE[:name:tag]` into
the store (for `FROM oci:...`).

Every output is built under a temporary name next to its destination and renamed into place,
so a failed export leaves the destination as it was.
"""
import contextlib
import fcntl
import json
import os
import shutil
import tarfile
import tempfile

from ocispec import digest as _digest
from ocispec import image as _image
from ocispec import mediatypes as mt
from ocispec.errors import OCIError

from .store import Store, normalize_ref, select_platform, write_atomic

TRANSPORTS = ("oci", "oci-archive", "docker-archive")
# containerd's (and docker 25's, buildkit's) full image name on an index.json entry
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"


def parse_destination(text: str) -> tuple[str, str, str | None]:
    """`oci:DIR:tag` -> ("oci", "DIR", "tag"); `docker-archive:F:name:tag` -> (..., "name:tag")."""
    transport, sep, rest = text.partition(":")
    if not sep or transport not in TRANSPORTS or not rest:
        raise OCIError(f"invalid image location {text!r}",
                       hint="want oci:DIR[:tag], oci-archive:FILE[:tag] or docker-archive:FILE[:name:tag]")
    path, _, ref = rest.partition(":")
    if not path:
        raise OCIError(f"invalid image location {text!r}: empty path")
    return transport, path, ref or None


def _tag_of(ref_name: str | None) -> str:
    """The tag part of a store reference (`name:tag` -> `tag`), for a layout's ref.name."""
    if not ref_name:
        return "latest"
    ref = normalize_ref(ref_name)
    if "@" in ref:
        return "latest"
    return ref.rsplit(":", 1)[1]


def image_blobs(store: Store, manifest_desc: dict) -> list[dict]:
    """Descriptors of every blob an image needs: manifest (or index and its manifests),
    configs and layers."""
    out, todo = [], [manifest_desc]
    while todo:
        d = todo.pop(0)
        out.append(d)
        doc = store.read_json(d["digest"])
        if "manifests" in doc:
            todo.extend(doc["manifests"])
        else:
            out.append(doc["config"])
            out.extend(doc.get("layers") or [])
    seen, uniq = set(), []
    for d in out:
        if d["digest"] not in seen:
            seen.add(d["digest"])
            uniq.append(d)
    return uniq


def _resolve(store: Store, image) -> tuple[dict, str | None]:
    if isinstance(image, dict):
        return {k: v for k, v in image.items() if k != "annotations"}, _image.ref_name(image)
    desc = store.resolve(image)
    return {k: v for k, v in desc.items() if k != "annotations"}, normalize_ref(image)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@contextlib.contextmanager
def _dir_lock(path: str):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_oci_layout(store: Store, image, layout_dir, tag: str | None = None) -> dict:
    """Export to an OCI image layout dir (created or merged); returns the index entry."""
    desc, ref = _resolve(store, image)
    tag = tag or _tag_of(ref)
    layout_dir = os.path.abspath(os.fspath(layout_dir))
    os.makedirs(layout_dir, exist_ok=True)
    with _dir_lock(layout_dir):
        lay = os.path.join(layout_dir, mt.IMAGE_LAYOUT_FILE)
        if os.path.exists(lay):
            with open(lay) as f:
                version = json.load(f).get("imageLayoutVersion")
            if version != mt.IMAGE_LAYOUT_VERSION:
                raise OCIError(f"{lay}: unsupported imageLayoutVersion {version!r}")
        blobs = os.path.join(layout_dir, "blobs", "sha256")
        os.makedirs(blobs, exist_ok=True)
        for d in image_blobs(store, desc):  # blobs first: index.json never names a missing one
            dst = os.path.join(blobs, _digest.parse(d["digest"])[1])
            if not os.path.exists(dst):
                tmp = f"{dst}.pybuild-tmp-{os.getpid()}"
                _link_or_copy(store.blob_path(d["digest"]), tmp)
                os.rename(tmp, dst)
        if not os.path.exists(lay):
            write_atomic(lay, json.dumps({"imageLayoutVersion": mt.IMAGE_LAYOUT_VERSION}).encode())
        idx_path = os.path.join(layout_dir, mt.IMAGE_INDEX_FILE)
        manifests = []
        if os.path.exists(idx_path):
            with open(idx_path, "rb") as f:
                manifests = _image.parse_index(f.read(), source=idx_path)["manifests"]
        entry = dict(desc, annotations={_image.ANNOTATION_REF_NAME: tag})
        manifests = [m for m in manifests if _image.ref_name(m) != tag] + [entry]
        write_atomic(idx_path, json.dumps(_image.index(manifests), indent=2).encode())
    return entry


def _tar_add_bytes(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), mode
    tf.addfile(ti, _BytesReader(data))


class _BytesReader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def read(self, n=-1):
        end = len(self.data) if n is None or n < 0 else self.pos + n
        out = self.data[self.pos:end]
        self.pos += len(out)
        return out


def _tar_add_dir(tf: tarfile.TarFile, name: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    tf.addfile(ti)


def _tar_add_file(tf: tarfile.TarFile, name: str, path: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = os.stat(path).st_size, 0o644
    with open(path, "rb") as f:
        tf.addfile(ti, f)


@contextlib.contextmanager
def _atomic_output(path: str):
    """Yield a temp path beside `path`; rename it over `path` on success."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_oci_archive(store: Store, image, path, tag: str | None = None, *,
                      name: str | None = None) -> dict:
    """Export to a tar of an OCI image layout (one image). `name` (name:tag) is also kept
    in containerd's image-name annotation, so `load` gets the whole name back."""
    desc, ref = _resolve(store, image)
    tag = tag or _tag_of(ref)
    ann = {_image.ANNOTATION_REF_NAME: tag}
    if name:
        ann[ANNOTATION_IMAGE_NAME] = normalize_ref(name)
    entry = dict(desc, annotations=ann)
    with _atomic_output(path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        _tar_add_bytes(tf, mt.IMAGE_LAYOUT_FILE,
                       json.dumps({"imageLayoutVersion": mt.IMAGE_LAYOUT_VERSION}).encode())
        _tar_add_bytes(tf, mt.IMAGE_INDEX_FILE, json.dumps(_image.index([entry]), indent=2).encode())
        _tar_add_dir(tf, "blobs")
        _tar_add_dir(tf, "blobs/sha256")
        for d in image_blobs(store, desc):
            _tar_add_file(tf, "blobs/sha256/" + _digest.parse(d["digest"])[1], store.blob_path(d["digest"]))
    return entry


def write_docker_archive(store: Store, image, path, repo_tag: str | None = None) -> dict:
    """Export in `docker save` format; layers are stored uncompressed as docker does."""
    from .extract import open_decompressed
    desc, ref = _resolve(store, image)
    manifest = store.manifest(desc)
    config_hex = _digest.parse(manifest["config"]["digest"])[1]
    cfg = store.image_config(manifest)
    diff_ids = cfg["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest["layers"]):
        raise OCIError(f"image {ref or desc['digest']}: {len(manifest['layers'])} layers but "
                       f"{len(diff_ids)} diff_ids in its config")
    tags = [normalize_ref(repo_tag or ref)] if (repo_tag or ref) and "@" not in (repo_tag or ref) else []
    layer_names = []
    with _atomic_output(path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        _tar_add_file(tf, f"{config_hex}.json", store.blob_path(manifest["config"]["digest"]))
        for layer, diff_id in zip(manifest["layers"], diff_ids):
            lhex = _digest.parse(diff_id)[1]
            name = f"{lhex}/layer.tar"
            if name in layer_names:
                continue
            # tar headers need the size first: decompress to a temp file, checking the diff_id
            f, ltmp = store.temp_file(".tar")
            try:
                h = _digest.Hasher()
                with f, store.open_blob(layer["digest"]) as src:
                    stream = open_decompressed(src)
                    for chunk in iter(lambda: stream.read(1 << 20), b""):
                        h.update(chunk)
                        f.write(chunk)
                if h.digest != diff_id:
                    raise OCIError(f"layer {layer['digest']}: uncompressed digest {h.digest} "
                                   f"does not match diff_id {diff_id}")
                _tar_add_dir(tf, lhex)
                _tar_add_bytes(tf, f"{lhex}/VERSION", b"1.0")
                _tar_add_file(tf, name, ltmp)
            finally:
                store.discard_temp(ltmp)
            layer_names.append(name)
        manifest_json = [{"Config": f"{config_hex}.json", "RepoTags": tags, "Layers": layer_names}]
        _tar_add_bytes(tf, "manifest.json", json.dumps(manifest_json).encode())
        repos = {}
        for t in tags:
            name, _, tg = t.rpartition(":")
            repos.setdefault(name, {})[tg] = layer_names[-1].split("/")[0] if layer_names else config_hex
        _tar_add_bytes(tf, "repositories", json.dumps(repos).encode())
    return {"config": manifest["config"]["digest"], "repo_tags": tags, "layers": layer_names}


def export_image(store: Store, image, destination: str) -> dict:
    """Export `image` (a store name or manifest descriptor) to `oci:`, `oci-archive:` or
    `docker-archive:` destination text."""
    transport, path, ref = parse_destination(destination)
    if transport == "oci":
        return write_oci_layout(store, image, path, ref)
    if transport == "oci-archive":
        return write_oci_archive(store, image, path, ref)
    return write_docker_archive(store, image, path, ref)


# -- import ----------------------------------------------------------------------------

def _pick(manifests: list[dict], tag: str | None, where: str) -> dict:
    if tag:
        for m in manifests:
            if _image.ref_name(m) == tag:
                return m
        raise OCIError(f"{where}: no image tagged {tag!r}",
                       hint="tags: " + (", ".join(sorted(filter(None, map(_image.ref_name, manifests)))) or "none"))
    if len(manifests) == 1:
        return manifests[0]
    raise OCIError(f"{where}: holds {len(manifests)} images; name one with :tag")


def _copy_in(store: Store, opener, d: dict) -> None:
    if store.has(d["digest"]):
        return
    with opener(d["digest"]) as f:  # checked as it streams: a wrong blob is never stored
        store.put_blob_stream(f, expected_digest=d["digest"], expected_size=d["size"])


def _import(store: Store, index_doc: dict, opener, tag: str | None, where: str, store_tag: str | None) -> dict:
    idx = _image.parse_index(index_doc, source=f"{where}/index.json")
    desc = _pick(idx["manifests"], tag, where)
    desc = {k: v for k, v in desc.items() if k != "annotations"}
    # an entry may itself be an index: take this platform's manifest
    with opener(desc["digest"]) as f:
        doc = json.loads(f.read())
    if "manifests" in doc:
        desc = {k: v for k, v in select_platform(doc["manifests"]).items() if k != "annotations"}
        with opener(desc["digest"]) as f:
            doc = json.loads(f.read())
    manifest = _image.parse_manifest(doc, source=f"{where} manifest {desc['digest']}")
    for d in [manifest["config"], *manifest["layers"]]:
        _copy_in(store, opener, d)
    _copy_in(store, opener, desc)
    if store_tag:
        store.tag(store_tag, desc)
    return desc


def import_oci_layout(store: Store, layout_dir, tag: str | None = None, *, store_tag: str | None = None) -> dict:
    """Copy an image from an OCI layout dir into the store; returns its manifest descriptor."""
    layout_dir = os.fspath(layout_dir)
    try:
        with open(os.path.join(layout_dir, mt.IMAGE_INDEX_FILE), "rb") as f:
            index_doc = f.read()
    except FileNotFoundError:
        raise OCIError(f"{layout_dir}: not an OCI image layout (no index.json)") from None

    def opener(dg):
        algorithm, hexd = _digest.parse(dg)
        try:
            return open(os.path.join(layout_dir, "blobs", algorithm, hexd), "rb")
        except FileNotFoundError:
            raise OCIError(f"{layout_dir}: blob {dg} does not exist") from None
    return _import(store, index_doc, opener, tag, layout_dir, store_tag)


def _open_archive(path: str):
    """(tarfile, read(name) -> file object) for an archive of either format."""
    try:
        tf = tarfile.open(path, "r:*")
        members = {_member_name(m.name): m for m in tf.getmembers() if m.isreg() or m.issym()}
    except tarfile.ReadError as e:  # its text lists every method tried, one per line
        why = "not a tar archive" if "could not be opened" in str(e) else str(e).splitlines()[0]
        raise OCIError(f"{path}: cannot read the archive: {why}") from None
    except (OSError, tarfile.TarError, EOFError) as e:
        raise OCIError(f"{path}: cannot read the archive: {e}") from None

    def read(name):
        m = members.get(name)
        if m is not None and m.issym():  # docker links repeated layers to the first copy
            m = members.get(os.path.normpath(os.path.join(os.path.dirname(name), m.linkname)))
        if m is None or not m.isreg():
            raise OCIError(f"{path}: {name} does not exist in the archive")
        return tf.extractfile(m)
    read.has = lambda name: name in members
    return tf, read


def _member_name(name: str) -> str:
    while name.startswith(("./", "/")):
        name = name[1:] if name.startswith("/") else name[2:]
    return name


def _oci_opener(read):
    def opener(dg):
        algorithm, hexd = _digest.parse(dg)
        return read(f"blobs/{algorithm}/{hexd}")
    return opener


def import_oci_archive(store: Store, path, tag: str | None = None, *, store_tag: str | None = None) -> dict:
    """Copy an image from a tar of an OCI layout into the store."""
    path = os.fspath(path)
    tf, read = _open_archive(path)
    with tf:
        with read(mt.IMAGE_INDEX_FILE) as f:
            index_doc = f.read()
        return _import(store, index_doc, _oci_opener(read), tag, path, store_tag)


def import_docker_archive(store: Store, path, ref: str | None = None, *,
                          store_tag: str | None = None) -> dict:
    """Copy an image from a `docker save` / `podman save` archive into the store as an OCI
    image (config kept byte for byte, layers stored as they are, typed by their content)."""
    path = os.fspath(path)
    tf, read = _open_archive(path)
    with tf:
        with read("manifest.json") as f:
            entries = _docker_manifest(f.read(), path)
        if ref:
            want = normalize_ref(ref)
            entries = [e for e in entries if want in [normalize_ref(t) for t in e.get("RepoTags") or []]]
            if not entries:
                raise OCIError(f"{path}: no image tagged {ref!r}")
        elif len(entries) > 1:
            raise OCIError(f"{path}: holds {len(entries)} images; name one with :name:tag")
        desc = _import_docker_entry(store, read, entries[0], path)
    if store_tag:
        store.tag(store_tag, desc)
    return desc


def _docker_manifest(data: bytes, path: str) -> list[dict]:
    try:
        entries = json.loads(data)
    except ValueError as e:
        raise OCIError(f"{path}: manifest.json: invalid JSON: {e}") from None
    if not isinstance(entries, list) or not entries or not all(
            isinstance(e, dict) and isinstance(e.get("Config"), str)
            and isinstance(e.get("Layers") or [], list) for e in entries):
        raise OCIError(f"{path}: manifest.json lists no images (want [{{Config, RepoTags, Layers}}])")
    return entries


def _import_docker_entry(store: Store, read, entry: dict, path: str) -> dict:
    """One image of a docker archive into the store; its manifest descriptor (untagged)."""
    from .extract import detect_compression
    with read(entry["Config"]) as f:
        cfg_bytes = f.read()
    cfg = _image.parse_config(cfg_bytes, source=f"{path}: {entry['Config']}")
    diff_ids = cfg["rootfs"]["diff_ids"]
    if len(diff_ids) != len(entry.get("Layers") or []):
        raise OCIError(f"{path}: {len(entry.get('Layers') or [])} layers but {len(diff_ids)} diff_ids")
    layers = []
    for name, diff_id in zip(entry["Layers"], diff_ids):
        with read(name) as f:
            head = f.read(6)
            kind = detect_compression(head)
            if kind not in (None, "gzip", "zstd"):
                raise OCIError(f"{path}: {name}: {kind} layers are not part of the image-spec")
            # an uncompressed layer's digest is its diff_id: checked while it streams in
            blob = store.put_blob_stream(_chain(head, f),
                                         expected_digest=diff_id if kind is None else None)
        layers.append(blob.descriptor(mt.layer_media_type(kind)))
    cblob = store.put_bytes(cfg_bytes)
    man = _image.manifest(cblob.descriptor(mt.IMAGE_CONFIG), layers)
    return store.put_json(man, mt.IMAGE_MANIFEST).descriptor(mt.IMAGE_MANIFEST)


def _chain(head: bytes, f):
    yield head
    yield from iter(lambda: f.read(1 << 20), b"")


def import_image(store: Store, source: str, *, store_tag: str | None = None) -> dict:
    """`oci:DIR[:tag]`, `oci-archive:FILE[:tag]` or `docker-archive:FILE[:name:tag]` into the
    store; returns the manifest descriptor."""
    transport, path, ref = parse_destination(source)
    if transport == "oci":
        return import_oci_layout(store, path, ref, store_tag=store_tag)
    if transport == "oci-archive":
        return import_oci_archive(store, path, ref, store_tag=store_tag)
    return import_docker_archive(store, path, ref, store_tag=store_tag)


# -- load: every image of a `docker save` / `podman save` / oci-archive tarball -------------

def _oci_entry_names(entry: dict) -> list[str]:
    ann = entry.get("annotations") or {}
    name = ann.get(ANNOTATION_IMAGE_NAME) or ann.get(_image.ANNOTATION_REF_NAME)
    return [normalize_ref(name)] if name else []


def load_archive(store: Store, path, *, tag: str | None = None) -> list[tuple[list[str], dict]]:
    """Load every image of an oci-archive or docker-archive (format told by its content)
    and tag each with the names the archive gives it (`tag` names an archive's only image);
    returns [(names, manifest descriptor)]. Names are checked before any blob is stored;
    blobs are checked as they stream in; tags are written last."""
    path = os.fspath(path)
    tf, read = _open_archive(path)
    out = []
    with tf:
        if read.has(mt.IMAGE_LAYOUT_FILE) or (read.has(mt.IMAGE_INDEX_FILE)
                                              and not read.has("manifest.json")):
            with read(mt.IMAGE_INDEX_FILE) as f:
                idx = _image.parse_index(f.read(), source=f"{path}: index.json")
            items = [(_oci_entry_names(e), e) for e in idx["manifests"]]
            kind = "oci"
        elif read.has("manifest.json"):
            with read("manifest.json") as f:
                entries = _docker_manifest(f.read(), path)
            items = [([normalize_ref(t) for t in e.get("RepoTags") or []], e) for e in entries]
            kind = "docker"
        else:
            raise OCIError(f"{path}: neither an oci-archive (index.json) nor a docker-archive "
                           "(manifest.json)")
        if tag:
            if len(items) != 1:
                raise OCIError(f"{path}: holds {len(items)} images; --tag names a single one")
            items = [([normalize_ref(tag)], items[0][1])]
        for i, (names, _) in enumerate(items):
            if not names:
                raise OCIError(f"{path}: image {i + 1} has no name", hint="give it one with --tag NAME")
        for names, entry in items:
            if kind == "oci":
                desc = _import(store, _image.index([entry]), _oci_opener(read), None, path, None)
            else:
                desc = _import_docker_entry(store, read, entry, path)
            out.append((names, desc))
    for names, desc in out:
        for n in names:
            store.tag(n, desc)
    return out


# -- import: a root filesystem tarball becomes a one-layer image ---------------------------

def import_rootfs(store: Store, src, name: str, *, message: str | None = None,
                  source_name: str = "-") -> dict:
    """`docker import`: the tar (plain, gzip, zstd, xz or bzip2) read from `src` becomes
    the image's only layer, kept compressed as it came (xz/bzip2 are stored as plain tar,
    which the image-spec allows). The tar is checked whole (headers, names, end of archive)
    before anything is stored; returns the manifest descriptor, tagged `name`."""
    import time as _time
    from .extract import _Tap, _check_end, _clean, _stream_errors, detect_compression
    ref = normalize_ref(name)
    head = src.read(6)
    kind = detect_compression(head)
    f, tmp = store.temp_file(".layer")
    try:
        h = _digest.Hasher()
        with f:
            stream = _chain(head, src)
            if kind in ("xz", "bzip2"):
                from .extract import open_decompressed
                dec = open_decompressed(_Chained(stream))
                stream = iter(lambda: dec.read(1 << 20), b"")
                kind = None
            try:
                for chunk in stream:
                    h.update(chunk)
                    f.write(chunk)
            except _stream_errors() as e:
                raise OCIError(f"{source_name}: not a valid {kind or 'compressed'} stream: {e}") from None
        what = f"{source_name}"
        with open(tmp, "rb") as raw:
            from .extract import open_decompressed
            plain = _Tap(open_decompressed(raw), hashed=True, what=what, keep=4 * tarfile.RECORDSIZE)
            try:
                with tarfile.open(fileobj=plain, mode="r|", errorlevel=2) as tf:
                    n = 0
                    for m in tf:
                        _clean(m.name)
                        n += 1
                    if n == 0:
                        raise OCIError(f"{what}: not a tar archive (no entries)")
                    _check_end(tf, plain, what)
                plain.drain()
            except _stream_errors() as e:
                raise OCIError(f"{what}: not a valid tar archive: {e}") from None
        diff_id = plain.h.digest
        blob = store.commit_temp(tmp, h.digest, h.size, mt.layer_media_type(kind))
    except BaseException:
        store.discard_temp(tmp)
        raise
    now = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime())
    hist = {"created": now, "created_by": f"pybuild import {os.path.basename(source_name)}"}
    if message:
        hist["comment"] = message
    cfg = _image.image_config(diff_ids=[diff_id], history=[hist], created=now)
    cblob = store.put_json(cfg, mt.IMAGE_CONFIG)
    man = _image.manifest(cblob.descriptor(mt.IMAGE_CONFIG), [blob.descriptor()])
    desc = store.put_json(man, mt.IMAGE_MANIFEST).descriptor(mt.IMAGE_MANIFEST)
    store.tag(ref, desc)
    return desc


class _Chained:
    """A read()-able stream over an iterator of chunks."""

    def __init__(self, chunks):
        self.it, self.buf = chunks, b""

    def read(self, n=-1):
        while n < 0 or len(self.buf) < n:
            try:
                self.buf += next(self.it)
            except StopIteration:
                break
        if n < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out
