"""pybuild's local image store: content-addressed blobs plus name:tag references.

The store directory is itself an OCI image layout (oci-layout, index.json, blobs/sha256/...),
so skopeo, umoci and podman read it as `oci:ROOT:name:tag`. A reference is an index.json
entry whose `org.opencontainers.image.ref.name` annotation is the full `name:tag`.

Blobs are written to a temp file under ROOT/.tmp, fsynced, then renamed into place: a reader
never sees a partial blob, and a crash leaves only temp files. index.json changes happen
under an flock on ROOT/.lock and are replaced atomically, so concurrent builds are safe.
"""
import contextlib
import errno as _errno
import fcntl
import json
import os
import threading
import time
import uuid

from ocispec import digest as _digest
from ocispec import image as _image
from ocispec import mediatypes as mt
from ocispec.errors import OCIError

DEFAULT_ROOT = "/var/lib/pybuild"
_CHUNK = 1 << 20


class Blob(tuple):
    """(digest, size) that also answers blob["digest"], blob.size and blob.descriptor()."""

    def __new__(cls, digest: str, size: int, media_type: str | None = None):
        self = super().__new__(cls, (digest, size))
        self.media_type = media_type
        return self

    digest = property(lambda self: tuple.__getitem__(self, 0))
    size = property(lambda self: tuple.__getitem__(self, 1))

    def __getitem__(self, key):
        if isinstance(key, str):
            return {"digest": self.digest, "size": self.size, "mediaType": self.media_type}[key]
        return tuple.__getitem__(self, key)

    def descriptor(self, media_type: str | None = None, **kw) -> dict:
        return _image.descriptor(media_type or self.media_type, self.digest, self.size, **kw)


def normalize_ref(name: str) -> str:
    """`busybox` -> `busybox:latest`; `host:5000/x` -> `host:5000/x:latest`; digests kept."""
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        raise OCIError(f"invalid image name {name!r}")
    if "@" in name:
        return name
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


class Store:
    """A content-addressed blob store with name:tag references under `root`."""

    def __init__(self, root: str | os.PathLike | None = None):
        root = root or os.environ.get("PYBUILD_ROOT") or DEFAULT_ROOT
        self.root = os.path.abspath(os.fspath(root))
        self.blobs_dir = os.path.join(self.root, "blobs", "sha256")
        self.tmp_dir = os.path.join(self.root, ".tmp")
        self._index_path = os.path.join(self.root, mt.IMAGE_INDEX_FILE)
        self._tlock = threading.RLock()
        self._lock_fd = None
        self._lock_depth = 0
        self._session = None
        _private_root(self.root)
        os.makedirs(self.blobs_dir, exist_ok=True)
        private_dir(self.tmp_dir)
        layout = os.path.join(self.root, mt.IMAGE_LAYOUT_FILE)
        if not os.path.exists(layout):
            write_atomic(layout, json.dumps({"imageLayoutVersion": mt.IMAGE_LAYOUT_VERSION}).encode(),
                          self.tmp_dir)
        if not os.path.exists(self._index_path):
            with self.lock():
                if not os.path.exists(self._index_path):
                    self._write_index([])

    def __repr__(self):
        return f"Store({self.root!r})"

    # -- locking -------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self):
        """Exclusive lock on the store (re-entrant within this object, across threads safe)."""
        with self._tlock:
            if self._lock_depth == 0:
                fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                             0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    fd, self._lock_fd = self._lock_fd, None
                    os.close(fd)  # closing the last fd of the open file releases the flock

    # -- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        algorithm, hexd = _digest.parse(digest)
        if algorithm != "sha256":
            return os.path.join(self.root, "blobs", algorithm, hexd)
        return os.path.join(self.blobs_dir, hexd)

    def has(self, digest: str) -> bool:
        return os.path.exists(self.blob_path(digest))

    def open_blob(self, digest: str):
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise OCIError(f"blob {digest} does not exist in the store {self.root}") from None

    def read_blob(self, digest: str, *, verify: bool = True) -> bytes:
        with self.open_blob(digest) as f:
            data = f.read()
        if verify:
            _digest.verify_bytes(data, digest, what=f"blob {digest}")
        return data

    def read_json(self, digest: str) -> dict:
        return json.loads(self.read_blob(digest))

    def blob_size(self, digest: str) -> int:
        return os.stat(self.blob_path(digest)).st_size

    # -- this process's scratch --------------------------------------------------------

    def session(self):
        """This process's Session (lock + scratch dir), opened on first use."""
        with self._tlock:
            if self._session is None:
                from ..build.session import Session
                self._session = Session(self.root)
            return self._session

    def close(self) -> None:
        """End this process's session: its scratch dir and lock go."""
        with self._tlock:
            s, self._session = self._session, None
        if s is not None:
            s.close()

    def temp_file(self, suffix: str = ""):
        """A new (fileobj, path) in the store's temp dir, for commit_temp(). The name carries
        the session id, so `pybuild prune` removes it if this process dies."""
        path = os.path.join(self.tmp_dir, f"{self.session().id}-{uuid.uuid4().hex}{suffix}")
        return open(path, "xb"), path

    def commit_temp(self, tmp_path: str, digest: str, size: int | None = None,
                    media_type: str | None = None) -> Blob:
        """Move a finished temp file into place as blob `digest` (its content's digest).

        The caller computed the digest while writing; the file is fsynced here first.
        """
        if size is None:
            size = os.stat(tmp_path).st_size
        dest = self.blob_path(digest)
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if os.path.exists(dest):
            os.unlink(tmp_path)  # same content already stored
        else:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.chmod(tmp_path, 0o644)
            os.rename(tmp_path, dest)
            _fsync_dir(os.path.dirname(dest))
        return Blob(digest, size, media_type)

    def discard_temp(self, tmp_path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)

    def put_blob_stream(self, src, media_type: str | None = None, *,
                        expected_digest: str | None = None,
                        expected_size: int | None = None) -> Blob:
        """Store a blob read from a file object (.read) or an iterator of bytes.

        With expected_digest/expected_size (a descriptor's), content that differs is an
        error and never committed; reading stops as soon as the size is exceeded.
        """
        h = _digest.Hasher()
        what = f"blob {expected_digest}" if expected_digest else "blob"
        f, tmp = self.temp_file()
        try:
            with f:
                if hasattr(src, "read"):
                    chunks = iter(lambda: src.read(_CHUNK), b"")
                else:
                    chunks = src
                for chunk in chunks:
                    if chunk:
                        h.update(chunk)
                        if expected_size is not None and h.size > expected_size:
                            raise OCIError(f"{what}: more than the descriptor's size "
                                           f"{expected_size} bytes")
                        f.write(chunk)
            if expected_size is not None and h.size != expected_size:
                raise OCIError(f"{what}: size {h.size} does not match the descriptor's size "
                               f"{expected_size}")
            if expected_digest is not None and h.digest != expected_digest:
                raise OCIError(f"blob content digest {h.digest} does not match {expected_digest}")
            return self.commit_temp(tmp, h.digest, h.size, media_type)
        except BaseException:
            self.discard_temp(tmp)
            raise

    def put_bytes(self, data: bytes, media_type: str | None = None) -> Blob:
        dg = _digest.sha256_bytes(data)
        if self.has(dg):
            return Blob(dg, len(data), media_type)
        return self.put_blob_stream([data], media_type)

    def put_json(self, doc, media_type: str) -> Blob:
        """Store a document as canonical JSON; returns its Blob (use .descriptor())."""
        return self.put_bytes(_image.dumps(doc), media_type)

    def put_file(self, path, media_type: str | None = None) -> Blob:
        with open(path, "rb") as f:
            return self.put_blob_stream(f, media_type)

    # -- references ----------------------------------------------------------------------

    def _read_index(self) -> dict:
        try:
            with open(self._index_path, "rb") as f:
                return _image.parse_index(f.read(), source=self._index_path)
        except FileNotFoundError:
            return _image.index([])

    def _write_index(self, manifests) -> None:
        write_atomic(self._index_path, json.dumps(_image.index(manifests), indent=2).encode(),
                      self.tmp_dir)

    def tag(self, name: str, manifest_descriptor: dict) -> dict:
        """Point `name` (name[:tag]) at a manifest; returns the stored descriptor."""
        ref = normalize_ref(name)
        desc = dict(manifest_descriptor)
        if not self.has(desc["digest"]):
            raise OCIError(f"cannot tag {ref}: manifest {desc['digest']} is not in the store")
        ann = dict(desc.get("annotations") or {})
        ann[_image.ANNOTATION_REF_NAME] = ref
        desc["annotations"] = ann
        with self.lock():
            ms = [m for m in self._read_index()["manifests"] if _image.ref_name(m) != ref]
            ms.append(desc)
            self._write_index(ms)
        return desc

    def resolve(self, name: str) -> dict:
        """The manifest descriptor `name` points at (a `sha256:` digest also resolves)."""
        if name.startswith("sha256:") or "@" in name:
            dg = name.split("@", 1)[-1]
            for m in self._read_index()["manifests"]:
                if m["digest"] == dg:
                    return {k: v for k, v in m.items() if k != "annotations"}
            if self.has(dg):
                return _image.descriptor(mt.IMAGE_MANIFEST, dg, self.blob_size(dg))
            raise OCIError(f"image {name} does not exist in the store {self.root}")
        ref = normalize_ref(name)
        for m in self._read_index()["manifests"]:
            if _image.ref_name(m) == ref:
                return m
        raise OCIError(f"image {ref} does not exist in the store {self.root}")

    def list_images(self) -> list[tuple[str, dict]]:
        """[(name:tag, manifest descriptor)], sorted by name."""
        out = [(_image.ref_name(m), m) for m in self._read_index()["manifests"]]
        return sorted(((n, m) for n, m in out if n), key=lambda x: x[0])

    def delete(self, name: str) -> None:
        """Remove a reference (blobs stay until gc())."""
        ref = normalize_ref(name)
        with self.lock():
            ms = self._read_index()["manifests"]
            keep = [m for m in ms if _image.ref_name(m) != ref]
            if len(keep) == len(ms):
                raise OCIError(f"image {ref} does not exist in the store {self.root}")
            self._write_index(keep)

    # -- reading images ------------------------------------------------------------------

    def manifest(self, name_or_desc) -> dict:
        """The image manifest for a name or descriptor (an index resolves to this host's platform)."""
        desc = self.resolve(name_or_desc) if isinstance(name_or_desc, str) else name_or_desc
        doc = self.read_json(desc["digest"])
        if doc.get("mediaType") in mt.INDEX_TYPES or "manifests" in doc:
            desc = select_platform(_image.parse_index(doc)["manifests"])
            doc = self.read_json(desc["digest"])
        return _image.parse_manifest(doc, source=f"manifest {desc['digest']}")

    def image_config(self, manifest: dict) -> dict:
        return _image.parse_config(self.read_blob(manifest["config"]["digest"]))

    def referenced_blobs(self) -> set[str]:
        """Every blob digest reachable from index.json."""
        seen: set[str] = set()
        todo = [m["digest"] for m in self._read_index()["manifests"]]
        while todo:
            dg = todo.pop()
            if dg in seen or not self.has(dg):
                continue
            seen.add(dg)
            try:
                doc = self.read_json(dg)
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(doc, dict):
                continue
            for d in doc.get("manifests") or []:
                todo.append(d["digest"])
            if isinstance(doc.get("config"), dict):
                seen.add(doc["config"]["digest"])
            for d in doc.get("layers") or []:
                seen.add(d["digest"])
        return seen

    def gc(self, *, grace_seconds: float = 3600) -> list[str]:
        """Delete blobs no reference reaches and older than the grace period (in-flight
        builds store blobs before they tag them); returns removed digests."""
        removed = []
        now = time.time()
        with self.lock():
            keep = self.referenced_blobs()
            for name in os.listdir(self.blobs_dir):
                dg = "sha256:" + name
                p = os.path.join(self.blobs_dir, name)
                if dg not in keep and now - os.lstat(p).st_mtime > grace_seconds:
                    os.unlink(p)
                    removed.append(dg)
            from ..build.session import _session_of
            for name in os.listdir(self.tmp_dir):  # left by crashed writers
                p = os.path.join(self.tmp_dir, name)
                if _session_of(name) is not None:
                    continue  # a session's: prune removes it once its process is gone
                if os.path.isfile(p) and now - os.lstat(p).st_mtime > grace_seconds:
                    os.unlink(p)
        return removed


def _private_root(root: str) -> None:
    """Make the store dir 0700, as /var/lib/containers: layers and RUN rootfs below it hold
    images' setuid files, which host users must not reach. An existing store is tightened;
    a non-empty directory that is not a store yet is left as it is (its private subdirs are
    0700 in any case)."""
    try:
        os.mkdir(root, 0o700)
        return
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(root), exist_ok=True)
        os.mkdir(root, 0o700)
        return
    st = os.stat(root)
    if st.st_mode & 0o077 and st.st_uid == os.geteuid() and (
            os.path.exists(os.path.join(root, mt.IMAGE_LAYOUT_FILE)) or not os.listdir(root)):
        os.chmod(root, 0o700)


def private_dir(path: str) -> str:
    """mkdir -p path as 0700, tightened when it exists."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def select_platform(manifests, platform: dict | None = None) -> dict:
    """The index entry for `platform` (default this host), else the only entry."""
    want = platform or _image.host_platform()
    for m in manifests:
        p = m.get("platform")
        if p and p.get("os") == want["os"] and p.get("architecture") == want["architecture"] \
                and (not want.get("variant") or p.get("variant") in (None, want["variant"])):
            return m
    unplatformed = [m for m in manifests if not m.get("platform")]
    if len(unplatformed) == 1 or len(manifests) == 1:
        return (unplatformed or manifests)[0]
    raise OCIError(f"no manifest for platform {want['os']}/{want['architecture']} in the index")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems refuse fsync on directories
        if e.errno not in (_errno.EINVAL, _errno.EROFS):
            raise
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, tmp_dir: str | None = None, *,
                 durable: bool = True) -> None:
    """Write a temp file beside path (or in tmp_dir, same filesystem), fsync, rename: readers
    see the old file or the new one, and a failure leaves neither a half file nor the temp.
    durable=False skips the fsync, for notes whose loss after a crash only costs a re-check."""
    tmp_dir = tmp_dir or os.path.dirname(path)
    tmp = os.path.join(tmp_dir, f".{os.path.basename(path)}.{uuid.uuid4().hex}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
