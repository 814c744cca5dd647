"""pybuild's local image store: content-addressed blobs plus name:tag references.

The store directory is itself an OCI image layout (oci-layout, index.json, blobs/sha256/...),
so skopeo, umoci and podman read it as `oci:ROOT:name:tag`. A reference is an index.json
entry whose `org.opencontainers.image.ref.name` annotation is the full `name:tag`.

Blobs are written to a temp file under ROOT/.tmp, fsynced, then renamed into place: a reader
never sees a partial blob, and a crash leaves only temp files. index.json changes happen
under an flock on ROOT/.lock and are replaced atomically, so concurrent builds are safe.

Two more locks and a hook keep garbage collection from taking what someone uses:
- ROOT/.use.lock: every Store holds it shared from construction to close() (builds, pulls,
  unpack: everything that may reference a blob no tag reaches yet, such as a cached layer or
  a half-written image). gc's sweep and rmi's delete hold it exclusive (exclusive()), so
  they never run beside a live user. Order: .use.lock before .lock, always.
- ROOT/refs/<kind>/<id>.json (add_user/remove_user/users): a long-lived user of an image, e.g.
  a working container ("containers"), names the manifest it uses. gc keeps that image's blobs
  and extracted layers, and rmi refuses the image without --force. A process that keeps a
  container for long should record it here and close() its Store, so gc need not wait.
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
        # blob digest -> diff_id of layers this process wrote (image.unpack.note_layer)
        self.written_layers: dict[str, str] = {}
        _private_root(self.root)
        os.makedirs(self.blobs_dir, exist_ok=True)
        private_dir(self.tmp_dir)
        self._use = _UseLock.acquire(self.root)
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
        """End this process's session: its scratch dir and lock go, and so does this Store's
        share of the use lock (gc waits for it)."""
        with self._tlock:
            s, self._session = self._session, None
            use, self._use = self._use, None
        if s is not None:
            s.close()
        if use is not None:
            use.release()

    @contextlib.contextmanager
    def exclusive(self, *, wait: bool = True, on_wait=None):
        """Hold the use lock exclusively: no other pybuild process has this store open.

        Without `wait`, raises StoreBusy at once when another process has it open; with it,
        calls on_wait() once (to say why we wait) and blocks. Back to shared afterwards."""
        use = self._use
        if use is None:
            raise OCIError(f"the store {self.root} is closed")
        with use.exclusive(wait=wait, on_wait=on_wait):
            yield self

    # -- users: what gc must keep and rmi must refuse ---------------------------------

    def _user_path(self, kind: str, uid: str) -> str:
        for what, v in (("kind", kind), ("id", uid)):
            if not v or "/" in v or v.startswith(".") or "\0" in v or len(v) > 200:
                raise OCIError(f"invalid store user {what} {v!r}")
        return os.path.join(self.root, "refs", kind, uid + ".json")

    def add_user(self, kind: str, uid: str, image) -> dict:
        """Record that `kind`/`uid` (e.g. "containers", a container id) uses `image` (a name,
        digest or manifest descriptor) until remove_user(). Resolved under the index lock, so
        an rmi either sees the user or has already removed the image (then this fails)."""
        path = self._user_path(kind, uid)
        with self.lock():
            desc = self.resolve(image) if isinstance(image, str) else image
            if not self.has(desc["digest"]):
                raise OCIError(f"image {desc['digest']} does not exist in the store {self.root}")
            rec = {"manifest": desc["digest"],
                   "image": image if isinstance(image, str) else _image.ref_name(desc),
                   "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            private_dir(os.path.dirname(os.path.dirname(path)))
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            write_atomic(path, json.dumps(rec).encode(), self.tmp_dir)
        return rec

    def remove_user(self, kind: str, uid: str) -> None:
        with self.lock(), contextlib.suppress(FileNotFoundError):
            os.unlink(self._user_path(kind, uid))

    def users(self) -> list[dict]:
        """[{"kind", "id", "manifest", "image", ...}] of every recorded user."""
        out = []
        base = os.path.join(self.root, "refs")
        for kind in sorted(_listdir(base)):
            for name in sorted(_listdir(os.path.join(base, kind))):
                if not name.endswith(".json") or name.startswith("."):
                    continue
                try:
                    with open(os.path.join(base, kind, name)) as f:
                        rec = json.load(f)
                except (OSError, ValueError):
                    rec = {}
                if not isinstance(rec, dict):
                    rec = {}
                out.append(dict(rec, kind=kind, id=name[:-5]))
        return out

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

    def gc(self, *, grace_seconds: float = 0, wait: bool = True) -> list[str]:
        """Delete blobs no tag or user reaches (with their extracted layers and cache entries);
        returns the removed digests. See pybuild.image.gc."""
        from .gc import collect
        return [d for d, _ in collect(self, grace_seconds=grace_seconds, wait=wait).blobs]


class StoreBusy(OCIError):
    """Another pybuild process has the store open (exclusive(wait=False))."""


class _UseLock:
    """The process's one shared flock on ROOT/.use.lock, counted per Store: flock locks of
    one process on two open files of the same path would conflict with each other."""

    _held: dict = {}
    _mu = threading.Lock()

    def __init__(self, root, fd):
        self.root, self.fd, self.count, self.ex = root, fd, 0, 0

    @classmethod
    def acquire(cls, root: str) -> "_UseLock":
        with cls._mu:
            u = cls._held.get(root)
            if u is None:
                fd = os.open(os.path.join(root, ".use.lock"),
                             os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a gc sweeps
                except BaseException:
                    os.close(fd)
                    raise
                u = cls._held[root] = cls(root, fd)
            u.count += 1
            return u

    def release(self) -> None:
        with self._mu:
            self.count -= 1
            if self.count == 0:
                del self._held[self.root]
                os.close(self.fd)

    @contextlib.contextmanager
    def exclusive(self, *, wait: bool, on_wait=None):
        with self._mu:
            if self.ex:  # re-entrant within this process
                self.ex += 1
            else:
                try:  # a conversion drops the shared lock first (flock(2)), even on failure
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not wait:
                        fcntl.flock(self.fd, fcntl.LOCK_SH)
                        raise StoreBusy(f"other pybuild processes are using the store {self.root}")
                    if on_wait is not None:
                        on_wait()
                    fcntl.flock(self.fd, fcntl.LOCK_EX)
                self.ex = 1
        try:
            yield
        finally:
            with self._mu:
                self.ex -= 1
                if self.ex == 0:
                    fcntl.flock(self.fd, fcntl.LOCK_SH)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


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
