"""Pull and push: manifests and blobs between a registry and the store.

Where a pull verifies digests: `_download` hashes every byte as it streams to a temp file in
the store and commits the file under its digest only when digest and size match the
descriptor; a cut connection resumes with `Range: bytes=N-` (or restarts from zero when the
registry ignores the range); nothing half-written is ever under a digest. Manifests are
checked against the digest they were asked by (or the registry's Docker-Content-Digest), and
the tag moves only after every blob is in the store.

Push sends the stored bytes unchanged (so digests stay), skips blobs the registry has (HEAD),
mounts blobs it has in another repository (known from earlier pulls and pushes), and uploads
the rest, in chunks when they are large.
"""
import concurrent.futures as _futures
import contextlib
import json
import os
import threading
import urllib.parse

from ocispec import digest as _digest
from ocispec import image as _image
from ocispec import mediatypes as mt
from ocispec.errors import OCIError

from . import names as _names
from .client import NET_ERRORS, Client, Options, RegistryError, retry_sleep

MANIFEST_ACCEPT = ", ".join([mt.IMAGE_MANIFEST, mt.IMAGE_INDEX, mt.DOCKER_MANIFEST_V2,
                             mt.DOCKER_MANIFEST_LIST])
_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws")
MAX_MANIFEST = 4 << 20  # containerd's limit too
WORKERS = 3
RETRIES = 5
_READ = 1 << 20
# Blobs larger than this go up in PATCH chunks of this size (PYBUILD_PUSH_CHUNK to change).
CHUNK = int(os.environ.get("PYBUILD_PUSH_CHUNK") or 16 << 20)
_SOURCES_FILE = "registry-sources.json"


class _Cancelled(Exception):
    pass


def client_for(ref: _names.Reference, opts: Options) -> Client:
    if ref.is_local:
        raise OCIError(f"{ref}: localhost/ names are local images; there is no registry to "
                       f"reach (use host:port/name for a registry on this machine)")
    return Client(ref.api_host, opts, display=ref.domain)


def _scope(path: str, actions: str = "pull") -> str:
    return f"repository:{path}:{actions}"


# -- manifests -----------------------------------------------------------------------------

def fetch_manifest(client: Client, ref: _names.Reference, reference: str, what: str):
    """(bytes, media type, digest) of a manifest or index, verified."""
    r = client.request("GET", f"/v2/{ref.path}/manifests/{reference}",
                       headers={"Accept": MANIFEST_ACCEPT}, scopes=(_scope(ref.path),),
                       repository=ref.repository, what=what)
    with r:
        data = r.read(MAX_MANIFEST + 1)
        ctype = (r.header("Content-Type") or "").split(";")[0].strip()
        header_digest = r.header("Docker-Content-Digest")
    if len(data) > MAX_MANIFEST:
        raise RegistryError(f"{what}: manifest larger than {MAX_MANIFEST >> 20} MiB")
    try:
        doc = json.loads(data)
    except ValueError:
        raise RegistryError(f"{what}: the manifest is not JSON") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what}: the manifest is not a JSON object")
    mtype = doc.get("mediaType") or ctype
    if mtype in _SCHEMA1 or ctype in _SCHEMA1 or doc.get("schemaVersion") == 1:
        raise RegistryError(f"{what}: Docker schema 1 manifests are not supported (deprecated "
                            f"since 2017)", hint="push the image again with a current client")
    if mtype not in mt.MANIFEST_TYPES and mtype not in mt.INDEX_TYPES:
        mtype = mt.IMAGE_INDEX if "manifests" in doc else mt.IMAGE_MANIFEST if "layers" in doc \
            else mtype
    if mtype not in mt.MANIFEST_TYPES and mtype not in mt.INDEX_TYPES:
        raise RegistryError(f"{what}: not an image manifest or index ({mtype or 'no media type'})")
    want = reference if reference.startswith("sha") and ":" in reference else header_digest
    algorithm = _digest.parse(want)[0] if want and _digest.is_valid(want) else "sha256"
    h = _digest.Hasher(algorithm)
    h.update(data)
    if want and _digest.is_valid(want) and h.digest != want:
        raise RegistryError(f"{what}: manifest content digest {h.digest} does not match {want}; "
                            f"nothing stored")
    if algorithm != "sha256":  # the store names manifests by sha256
        h = _digest.Hasher()
        h.update(data)
    return data, mtype, h.digest


# -- blob sources (for cross-repository mounts) ---------------------------------------------

def _sources_path(store) -> str:
    return os.path.join(store.root, _SOURCES_FILE)


def load_sources(store) -> dict:
    try:
        with open(_sources_path(store), "rb") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def record_sources(store, repository: str, digests) -> None:
    """Remember that `repository` holds these blobs (a few repositories per blob)."""
    from ..image.store import write_atomic
    try:
        with store.lock():
            doc = load_sources(store)
            for dg in digests:
                repos = [r for r in doc.get(dg, []) if r != repository]
                doc[dg] = ([repository] + repos)[:8]
            write_atomic(_sources_path(store), json.dumps(doc).encode(), store.tmp_dir,
                         durable=False)
    except OSError:
        pass  # only an optimisation for later pushes


# -- parallel blobs -------------------------------------------------------------------------

def _parallel(fn, items):
    """Run fn(item, cancel) for each item in WORKERS threads; the first error cancels the rest
    and is raised (a real error is preferred over the cancellations it caused)."""
    cancel = threading.Event()
    errors: list[BaseException] = []
    if not items:
        return
    with _futures.ThreadPoolExecutor(max_workers=min(WORKERS, len(items))) as ex:
        futs = [ex.submit(fn, it, cancel) for it in items]
        for f in _futures.as_completed(futs):
            e = f.exception()
            if e is not None:
                cancel.set()
                errors.append(e)
    real = [e for e in errors if not isinstance(e, _Cancelled)]
    if real:
        raise real[0]
    if errors:
        raise OCIError("cancelled")


# -- pull -----------------------------------------------------------------------------------

def _download(client: Client, ref, store, desc: dict, progress, cancel, commit=None) -> None:
    """Download a blob into the store; with `commit`, hand the verified temp file to
    commit(tmp_path) instead (an encrypted layer is stored decrypted, under another digest)."""
    dg, size = desc["digest"], desc["size"]
    algorithm, _ = _digest.parse(dg)
    if commit is None and store.has(dg):
        progress.skipped(dg, size, "exists")
        return
    what = f"pull {ref}: blob {dg}"
    h = progress.blob(dg, size)
    hasher = _digest.Hasher(algorithm)
    attempt = 0
    f, tmp = store.temp_file(".pull")
    try:
        with f:
            while True:
                if cancel.is_set():
                    raise _Cancelled()
                offset = hasher.size
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                try:
                    r = client.request("GET", f"/v2/{ref.path}/blobs/{dg}", headers=headers,
                                       scopes=(_scope(ref.path),), repository=ref.repository,
                                       ok=(200, 206), what=what)
                except RegistryError as e:
                    if (e.status or 0) >= 500 or e.status is None:
                        attempt += 1
                        if attempt < RETRIES:
                            retry_sleep(attempt)
                            continue
                    raise
                with r:
                    if offset and r.status == 200:  # the range was ignored: start over
                        f.seek(0)
                        f.truncate()
                        hasher = _digest.Hasher(algorithm)
                        progress.restart(h, 0)
                    elif r.status == 206 and not (r.header("Content-Range") or "").startswith(
                            f"bytes {offset}-"):
                        raise RegistryError(f"{what}: the registry answered range {offset}- with "
                                            f"{r.header('Content-Range')!r}")
                    try:
                        while True:
                            chunk = r.read(_READ)
                            if not chunk:
                                break
                            hasher.update(chunk)
                            if hasher.size > size:
                                raise RegistryError(f"{what}: the registry sent more than the "
                                                    f"descriptor's {size} bytes; nothing stored")
                            _write(f, chunk, store, what)
                            progress.advance(h, len(chunk))
                            if cancel.is_set():
                                raise _Cancelled()
                    except NET_ERRORS as e:
                        if isinstance(e, OCIError):
                            raise
                        attempt += 1
                        if attempt >= RETRIES:
                            raise RegistryError(f"{what}: connection lost after {hasher.size} of "
                                                f"{size} bytes, {RETRIES} times; nothing "
                                                f"stored") from None
                        retry_sleep(attempt)
                        continue  # resume from hasher.size
                if hasher.size < size:  # the body ended early without an error: resume
                    attempt += 1
                    if attempt >= RETRIES:
                        raise RegistryError(f"{what}: the registry sent {hasher.size} of {size} "
                                            f"bytes; nothing stored")
                    continue
                break
        if hasher.size != size:
            raise RegistryError(f"{what}: got {hasher.size} bytes, the descriptor says {size}; "
                                f"nothing stored")
        if hasher.digest != dg:
            raise RegistryError(f"{what}: content digest {hasher.digest} does not match; the "
                                f"blob is corrupt, nothing stored")
        try:
            if commit is not None:
                commit(tmp)
                store.discard_temp(tmp)
            else:
                store.commit_temp(tmp, dg, size, desc.get("mediaType"))
        except OSError as e:
            raise _disk_error(e, store, what) from None
        progress.finish(h, "done")
    except BaseException:
        store.discard_temp(tmp)
        progress.finish(h, "failed")
        raise


def _write(f, chunk, store, what):
    try:
        f.write(chunk)
    except OSError as e:
        raise _disk_error(e, store, what) from None


def _disk_error(e: OSError, store, what: str) -> OCIError:
    return OCIError(f"{what}: writing to the store {store.root}: {e.strerror or e}",
                    errno=e.errno)


def _prefixed(e: OCIError, what: str) -> OCIError:
    """The error with `pull NAME: ` in front, once."""
    if e.message.startswith(what):
        return e
    return OCIError(f"{what}: {e.message}", errno=e.errno, hint=e.hint)


@contextlib.contextmanager
def _operation(client: Client, store, what: str):
    """One pull or push: errors say what they were part of, the connections close."""
    try:
        yield
    except OSError as e:
        raise _disk_error(e, store, what) from None
    except OCIError as e:
        raise _prefixed(e, what) from None
    finally:
        client.close()


class _Decryption:
    """The encrypted layers of a manifest, their keys unwrapped before any download (a wrong
    or missing key fails before anything is fetched)."""

    def __init__(self, man: dict, keys, what: str):
        from ..trust import ocicrypt
        self.layers = {}
        self.done = {}
        for i, d in enumerate(man["layers"]):
            if not ocicrypt.is_encrypted(d):
                continue
            lw = f"{what}: layer {i} ({d['digest']})"
            if not keys:
                raise OCIError(f"{what}: layer {i} is encrypted (ocicrypt); nothing stored",
                               hint="give the private key with --decryption-key KEY.pem")
            self.layers[d["digest"]] = ocicrypt.LayerKey(d, keys, lw)

    def commit(self, store, desc: dict):
        lk = self.layers.get(desc["digest"])
        if lk is None:
            return None

        def run(tmp):
            f, out = store.temp_file(".dec")
            try:
                with f, open(tmp, "rb") as src:
                    dg, size = lk.decrypt(src, f, f"layer {desc['digest']}")
                store.commit_temp(out, dg, size)
            except BaseException:
                store.discard_temp(out)
                raise
            self.done[desc["digest"]] = (dg, size)
        return run

    def manifest(self, man: dict) -> bytes:
        from ..trust import ocicrypt
        layers = []
        for d in man["layers"]:
            if d["digest"] in self.layers:
                d = ocicrypt.decrypted_descriptor(d, *self.done[d["digest"]])
            layers.append(d)
        return _image.dumps(dict(man, layers=layers))


def _decryption_plan(man: dict, keys, what: str) -> _Decryption:
    return _Decryption(man, keys, what)


def pull(store, name: str, opts: Options, progress, *, check=None,
         decryption_keys=None) -> tuple[str, dict]:
    """Pull `name` into the store; (stored name, manifest descriptor).

    check(client, ref, manifest bytes, digest) vets the top-level manifest (the signature
    policy) before any blob is fetched. Encrypted layers need decryption_keys (ocicrypt): they
    are stored decrypted, under a manifest rewritten as skopeo does, whose digest differs."""
    ref = _names.parse(name)
    what = f"pull {ref}"
    client = client_for(ref, opts)
    with _operation(client, store, what):
        data, mtype, dg = fetch_manifest(client, ref, ref.reference, what)
        if check is not None:
            check(client, ref, data, dg)
        index = None
        platform = None
        if mtype in mt.INDEX_TYPES:
            from ..image.store import select_platform
            idx = _image.parse_index(data, source=f"{what}: index")
            index = (data, mtype)
            try:
                entry = select_platform(idx["manifests"], opts.platform)
            except OCIError as e:
                raise OCIError(f"{what}: {e}") from None
            platform = entry.get("platform")
            data, mtype, dg = fetch_manifest(client, ref, entry["digest"], what)
            if mtype not in mt.MANIFEST_TYPES:
                raise RegistryError(f"{what}: index entry {entry['digest']} is not an image "
                                    f"manifest")
        man = _image.parse_manifest(data, source=f"{what}: manifest")
        blobs = [man["config"]] + list(man["layers"])
        n = len(man["layers"])
        decrypt = _decryption_plan(man, decryption_keys, what)
        progress.info(f"pulling {ref} ({n} layer{'' if n == 1 else 's'})")
        _parallel(lambda d, c: _download(client, ref, store, d, progress, c,
                                         decrypt.commit(store, d)), blobs)
        cfg = _image.parse_config(store.read_blob(man["config"]["digest"]),
                                  source=f"{what}: image config")
        want = opts.platform
        if want and (cfg.get("os"), cfg.get("architecture")) != (want["os"], want["architecture"]):
            raise OCIError(f"{what}: the image is for {cfg.get('os')}/{cfg.get('architecture')}, "
                           f"not {want['os']}/{want['architecture']}")
        if len(cfg["rootfs"]["diff_ids"]) != len(man["layers"]):
            raise OCIError(f"{what}: the config lists {len(cfg['rootfs']['diff_ids'])} diff_ids "
                           f"for {len(man['layers'])} layers")
        if decrypt.layers:
            data = decrypt.manifest(man)
            dg = _digest.sha256_bytes(data)
            index = None  # the index names the encrypted manifest
        if index is not None:
            store.put_bytes(index[0], index[1])
        store.put_bytes(data, mtype)
        desc = _image.descriptor(mtype, dg, len(data), platform=platform)
        stored = str(ref)
        store.tag(stored, desc)
    record_sources(store, ref.repository, [d["digest"] for d in blobs])
    return stored, desc


# -- push -----------------------------------------------------------------------------------

def resolve_local(store, name: str) -> tuple[str, dict]:
    for n in _names.store_candidates(name):
        try:
            return n, store.resolve(n)
        except OCIError:
            continue
    raise OCIError(f"image {name} does not exist in the store {store.root}")


def _upload(client: Client, ref, store, desc: dict, progress, cancel, sources,
            files=None) -> None:
    dg, size = desc["digest"], desc["size"]
    what = f"push {ref}: blob {dg}"
    scopes = (_scope(ref.path, "pull,push"),)
    r = client.request("HEAD", f"/v2/{ref.path}/blobs/{dg}", scopes=scopes,
                       repository=ref.repository, ok=(200, 404), what=what)
    r.read()
    r.close()
    if r.status == 200:
        progress.skipped(dg, size, "exists")
        return
    if cancel.is_set():
        raise _Cancelled()
    h = progress.blob(dg, size)
    try:
        location = None
        for src in sources.get(dg, []):
            dom, _, path = src.partition("/")
            if dom != ref.domain or path == ref.path:
                continue
            q = urllib.parse.urlencode({"mount": dg, "from": path})
            r = client.request("POST", f"/v2/{ref.path}/blobs/uploads/?{q}",
                               headers={"Content-Length": "0"},
                               scopes=scopes + (_scope(path),), repository=ref.repository,
                               ok=(201, 202), what=what)
            r.read()
            r.close()
            if r.status == 201:
                progress.finish(h, "mounted")
                return
            location = r.header("Location")  # 202: the registry started an upload instead
            break
        attempt = 0
        while True:
            try:
                _send(client, ref, store, dg, size, location, scopes, progress, h, cancel, what,
                      (files or {}).get(dg))
                break
            except RegistryError as e:
                attempt += 1
                if attempt >= 3 or (e.status is not None and e.status < 500):
                    raise
                location = None
                progress.restart(h, 0)
                retry_sleep(attempt)
        progress.finish(h, "done")
    except BaseException:
        progress.finish(h, "failed")
        raise


def _send(client, ref, store, dg, size, location, scopes, progress, h, cancel, what,
          path=None):
    if location is None:
        r = client.request("POST", f"/v2/{ref.path}/blobs/uploads/",
                           headers={"Content-Length": "0"}, scopes=scopes,
                           repository=ref.repository, ok=(202,), what=what)
        r.read()
        r.close()
        location = r.header("Location")
    if not location:
        raise RegistryError(f"{what}: the registry gave no upload location")
    base = f"{client.scheme}://{client.host}/v2/"
    url = urllib.parse.urljoin(base, location)

    def with_digest(u):
        return u + ("&" if "?" in u else "?") + urllib.parse.urlencode({"digest": dg})

    with (open(path, "rb") if path else store.open_blob(dg)) as f:
        if size <= CHUNK:  # one PUT
            body = f.read()
            r = client.request("PUT", with_digest(url), body=body, scopes=scopes,
                               repository=ref.repository, ok=(201,), what=what,
                               headers={"Content-Type": "application/octet-stream",
                                        "Content-Length": str(len(body))})
            progress.advance(h, len(body))
        else:
            off = 0
            while off < size:
                if cancel.is_set():
                    raise _Cancelled()
                chunk = f.read(CHUNK)
                if not chunk:
                    raise OCIError(f"{what}: the stored blob is shorter than {size} bytes")
                r = client.request("PATCH", url, body=chunk, scopes=scopes,
                                   repository=ref.repository, ok=(202,), what=what,
                                   headers={"Content-Type": "application/octet-stream",
                                            "Content-Range": f"{off}-{off + len(chunk) - 1}",
                                            "Content-Length": str(len(chunk))})
                r.read()
                r.close()
                url = urllib.parse.urljoin(url, r.header("Location") or url)
                off += len(chunk)
                progress.advance(h, len(chunk))
            r = client.request("PUT", with_digest(url), body=b"", scopes=scopes,
                               repository=ref.repository, ok=(201,), what=what,
                               headers={"Content-Length": "0"})
    r.read()
    r.close()
    got = r.header("Docker-Content-Digest")
    if got and got != dg:
        raise RegistryError(f"{what}: the registry stored it as {got}")


def _encrypt(store, data: bytes, mtype: str, encrypt, what: str, files: dict):
    """The manifest with the chosen layers encrypted (ocicrypt, JWE), as OCI media types;
    the encrypted blobs go to temp files in the store, recorded in `files`."""
    from ..trust import ocicrypt
    recipients, indices = encrypt
    if mtype not in mt.MANIFEST_TYPES:
        raise OCIError(f"{what}: encrypting an image index is not supported; push one "
                       f"platform's image")
    man = _image.parse_manifest(data, source=f"{what}: manifest")
    n = len(man["layers"])
    chosen = set(range(n))
    if indices:
        chosen = set()
        for i in indices:
            if not -n <= i < n:
                raise OCIError(f"--encrypt-layer {i}: the image has {n} layers (0..{n - 1}, or "
                               f"negative from the end)")
            chosen.add(i % n)
    oci = {mt.DOCKER_LAYER_GZIP: mt.LAYER_GZIP, mt.DOCKER_LAYER_TAR: mt.LAYER_TAR,
           mt.DOCKER_CONFIG: mt.IMAGE_CONFIG}
    layers = []
    for i, d in enumerate(man["layers"]):
        d = dict(d, mediaType=oci.get(d["mediaType"], d["mediaType"]))
        if i in chosen and not ocicrypt.is_encrypted(d):
            f, tmp = store.temp_file(".enc")
            files[tmp] = tmp  # known to _temp_files (removed) even if encryption fails
            h = _digest.Hasher()

            class _Out:
                def write(self, b):
                    h.update(b)
                    f.write(b)
            with f, store.open_blob(d["digest"]) as src:
                extra = ocicrypt.encrypt_layer(src, _Out(), d, recipients)
            files[h.digest] = tmp
            d = {"mediaType": extra["mediaType"], "digest": h.digest, "size": h.size,
                 "annotations": extra["annotations"]}
        layers.append(d)
    config = dict(man["config"], mediaType=oci.get(man["config"]["mediaType"],
                                                   man["config"]["mediaType"]))
    new = dict(man, mediaType=mt.IMAGE_MANIFEST, config=config, layers=layers)
    out = _image.dumps(new)
    return out, mt.IMAGE_MANIFEST, _digest.sha256_bytes(out)


@contextlib.contextmanager
def _temp_files(store, files: dict):
    try:
        yield
    finally:
        for path in set(files.values()):
            store.discard_temp(path)


def push(store, name: str, dest: str | None, opts: Options, progress, *, encrypt=None,
         after=None) -> tuple[str, str]:
    """Push a stored image to `dest` (default: its own name); (destination, manifest digest).

    encrypt=(public keys, layer indices or None for all) pushes the layers encrypted
    (ocicrypt), so the pushed manifest's digest differs from the stored one; after(client,
    ref, digest) runs once the manifest is up (signing)."""
    src_name, desc = resolve_local(store, name)
    ref = _names.parse(dest or src_name)
    what = f"push {ref}"
    client = client_for(ref, opts)
    files = {}  # digest -> temp file of a blob made for this push (encrypted layers)
    with _operation(client, store, what), _temp_files(store, files):
        data = store.read_blob(desc["digest"])
        top = json.loads(data)
        mtype = desc.get("mediaType") or top.get("mediaType") or mt.IMAGE_MANIFEST
        if encrypt is not None:
            data, mtype, dg = _encrypt(store, data, mtype, encrypt, what, files)
            desc = dict(desc, mediaType=mtype, digest=dg, size=len(data))
            top = json.loads(data)
        manifests = []  # (bytes, media type, digest) children first
        if mtype in mt.INDEX_TYPES:
            for m in _image.parse_index(top)["manifests"]:
                if not store.has(m["digest"]):
                    raise OCIError(f"{what}: the index lists {m['digest']}, which is not in the "
                                   f"store")
                manifests.append((store.read_blob(m["digest"]), m["mediaType"], m["digest"]))
        manifests.append((data, mtype, desc["digest"]))
        blobs, seen = [], set()
        for mdata, mtyp, _ in manifests:
            if mtyp in mt.INDEX_TYPES:
                continue
            man = _image.parse_manifest(mdata, source=f"{what}: manifest")
            for d in [man["config"]] + list(man["layers"]):
                if d["digest"] not in seen:
                    if d["digest"] not in files and not store.has(d["digest"]):
                        raise OCIError(f"{what}: blob {d['digest']} is not in the store")
                    seen.add(d["digest"])
                    blobs.append(d)
        progress.info(f"pushing {ref} ({len(blobs)} blobs)")
        sources = load_sources(store)
        _parallel(lambda d, c: _upload(client, ref, store, d, progress, c, sources, files),
                  blobs)
        scopes = (_scope(ref.path, "pull,push"),)
        for i, (mdata, mtyp, mdg) in enumerate(manifests):
            target = (ref.digest or ref.tag or "latest") if i == len(manifests) - 1 else mdg
            if ref.digest and ref.digest != mdg and i == len(manifests) - 1:
                raise OCIError(f"{what}: the image's digest is {mdg}, not {ref.digest}")
            r = client.request("PUT", f"/v2/{ref.path}/manifests/{target}", body=mdata,
                               headers={"Content-Type": mtyp, "Content-Length": str(len(mdata))},
                               scopes=scopes, repository=ref.repository, ok=(201,),
                               what=f"{what}: manifest")
            r.read()
            r.close()
            got = r.header("Docker-Content-Digest")
            if got and got != mdg:
                raise RegistryError(f"{what}: the registry stored the manifest as {got}, not "
                                    f"{mdg}")
        if after is not None:
            after(client, ref, desc["digest"])
    blobs = [d for d in blobs if d["digest"] not in files]
    record_sources(store, ref.repository, [d["digest"] for d in blobs])
    return str(ref), desc["digest"]
