"""Applying a layer onto a root filesystem directory, never writing outside it.

Every entry's parent directory is opened with openat2(RESOLVE_IN_ROOT) relative to the
destination: symlinks (absolute or relative) and `..` met on the way resolve as if the
destination were `/`, so a layer can follow the tree's own links (`lib -> usr/lib`) but can
never leave it. The final component is then created, replaced or removed relative to that
directory fd without following it. Entries naming `..` are refused outright.

Whiteouts: `.wh.NAME` removes NAME; `.wh..wh..opq` empties its directory of everything
the layers below put there (entries of this same layer stay).

Verification happens on the bytes as they stream by, never by reading anything twice: the
compressed blob's digest and size, the uncompressed stream's digest (the image config's
diff_id), the decompressor reaching its end of stream and the tar reaching its end-of-archive
marker (Python's tarfile silently stops at a damaged header; Go's archive/tar, which every
other runtime uses, calls that an error, and so do we).
"""
import collections
import ctypes
import errno
import io
import math
import os
import shutil
import stat
import tarfile

from ocispec import digest as _digest
from ocispec.errors import OCIError

from .layer import WHITEOUT_OPAQUE, WHITEOUT_PREFIX, clean_arcname as _clean

_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_O_PATH = getattr(os, "O_PATH", 0o10000000)
_libc = ctypes.CDLL(None, use_errno=True)
_CHUNK = 1 << 20
_MAX_DIR_FDS = 128
# overlayfs's own marks: a layer must not smuggle them in (they would change what a
# lowerdir means); whiteouts reach overlayfs only through the .wh. entries we translate.
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2_in_root(root_fd: int, path: str, flags: int) -> int:
    """Open `path` under root_fd as if root_fd were `/` (links and `..` cannot escape)."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    while True:
        fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(root_fd), os.fsencode(path or "."),
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR):
            continue
        raise OSError(err, os.strerror(err), path)


def detect_compression(head: bytes) -> str | None:
    """Compression of a stream from its first bytes: "gzip", "zstd", "bzip2", "xz" or None."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC) and len(head) > 3 and head[3:4].isdigit():
        return "bzip2"
    return None


class _Peek(io.RawIOBase):
    """A raw stream whose first bytes were already read for sniffing."""

    def __init__(self, f, head: bytes):
        super().__init__()
        self.f, self.head = f, head

    def readable(self):
        return True

    def readinto(self, b):
        n = len(b)
        if self.head:
            k = min(n, len(self.head))
            b[:k] = self.head[:k]
            self.head = self.head[k:]
            return k
        data = self.f.read(n)
        b[:len(data)] = data
        return len(data)


def _stream_errors() -> tuple:
    """Exceptions that mean "the bytes are not what they claim" for any decompressor."""
    import gzip
    import zlib
    errs = [tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error]
    try:
        from isal import isal_zlib
        errs.append(isal_zlib.error)
    except ImportError:
        pass
    try:
        import zstandard
        errs.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errs)


def open_decompressed(fileobj):
    """A readable stream of the uncompressed bytes, compression detected by content."""
    head = fileobj.read(6)
    src = io.BufferedReader(_Peek(fileobj, head), _CHUNK)
    kind = detect_compression(head)
    if kind == "gzip":
        from isal import igzip
        return igzip.GzipFile(fileobj=src, mode="rb")
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
    if kind == "xz":
        import lzma
        return lzma.LZMAFile(src)
    if kind == "bzip2":
        import bz2
        return bz2.BZ2File(src)
    return src


class _Tap:
    """A read()-able stream that hashes and counts what passes (and keeps the last `keep`
    bytes, for the end-of-archive check); over `limit` bytes is an error at once."""

    def __init__(self, f, *, hashed: bool, limit: int | None = None, keep: int = 0,
                 what: str = "layer"):
        self.f, self.limit, self.keep, self.what = f, limit, keep, what
        self.h = _digest.Hasher() if hashed else None
        self.pos = 0
        self.tail: collections.deque = collections.deque()
        self.tail_len = 0

    def read(self, n=-1):
        data = self.f.read(n)
        if data:
            self.pos += len(data)
            if self.limit is not None and self.pos > self.limit:
                raise OCIError(f"{self.what}: more than the {self.limit} bytes its descriptor says")
            if self.h is not None:
                self.h.update(data)
            if self.keep:
                self.tail.append(data)
                self.tail_len += len(data)
                while self.tail_len - len(self.tail[0]) >= self.keep:
                    self.tail_len -= len(self.tail.popleft())
        return data

    def last(self) -> tuple[int, bytes]:
        """(offset, bytes): the kept bytes and where they start in the stream."""
        return self.pos - self.tail_len, b"".join(self.tail)

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _check_end(tf: tarfile.TarFile, plain: _Tap, what: str) -> None:
    """The tar stopped at its end-of-archive marker (a zero block, the next one zero too if
    present) or exactly at the end of the stream; anything else is damage tarfile skipped."""
    off = tf.offset
    start, kept = plain.last()
    if off < start:  # tarfile reads at most one record ahead; keep is larger
        raise OCIError(f"{what}: cannot check the end of the archive")
    rest = kept[off - start:]
    while len(rest) < 2 * tarfile.BLOCKSIZE:
        more = plain.read(2 * tarfile.BLOCKSIZE - len(rest))
        if not more:
            break
        rest += more
    if not rest:
        return
    if len(rest) < tarfile.BLOCKSIZE or rest.count(0) != len(rest):
        raise OCIError(f"{what}: damaged tar stream: invalid header at offset {off} (the layer "
                       "is corrupt or truncated)")


def _check_entry(m: tarfile.TarInfo) -> None:
    """Header fields the kernel calls would choke on, refused with a reason."""
    if m.size < 0:
        raise OCIError(f"negative size {m.size}")
    if not isinstance(m.mtime, (int, float)) or not math.isfinite(m.mtime) \
            or abs(m.mtime) >= 2 ** 62:
        raise OCIError(f"invalid mtime {m.mtime!r}")
    for k in ("uid", "gid"):
        v = getattr(m, k)
        if not isinstance(v, int) or not 0 <= v < 2 ** 32 - 1:
            raise OCIError(f"{k} {v!r} out of range (0 to {2 ** 32 - 2})")
    if m.ischr() or m.isblk():
        if not (0 <= m.devmajor < 2 ** 32 and 0 <= m.devminor < 2 ** 32):
            raise OCIError(f"device number {m.devmajor}:{m.devminor} out of range")


class _Applier:
    def __init__(self, dest: str, *, same_owner: bool, whiteouts: str = "apply"):
        self.overlay = whiteouts == "overlay"  # keep whiteouts as overlayfs marks
        self.plain = whiteouts == "none"  # an ordinary archive: .wh. names are just files
        self.root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.same_owner = same_owner
        self.dirs: collections.OrderedDict[str, int] = collections.OrderedDict()  # LRU of dir fds
        self.created: set[str] = set()  # paths this layer made (opaque must keep them)
        self.dir_times: list = []        # directory mtimes are set last

    def close(self):
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()
        os.close(self.root_fd)

    def _forget(self, path: str):
        """Drop cached fds at or below `path` (it is being replaced)."""
        pre = path + "/"
        for k in [k for k in self.dirs if k == path or k.startswith(pre)]:
            os.close(self.dirs.pop(k))

    def dir_fd(self, path: str, *, create: bool = True) -> int:
        """An fd for directory `path`, resolved in root (made, with parents, when missing)."""
        if not path:
            return self.root_fd
        fd = self.dirs.get(path)
        if fd is not None:
            self.dirs.move_to_end(path)
            return fd
        try:
            fd = openat2_in_root(self.root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            if not create:
                raise
            head, _, base = path.rpartition("/")
            pfd = self.dir_fd(head)
            try:
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                # a file, or a link to nothing or to a non-directory, where a directory
                # must be: replace it, as tar does
                os.unlink(base, dir_fd=pfd)
                st = None
            if st is None:
                os.mkdir(base, 0o755, dir_fd=pfd)
            fd = openat2_in_root(self.root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
        self.dirs[path] = fd
        if len(self.dirs) > _MAX_DIR_FDS:  # stay far below any RLIMIT_NOFILE
            os.close(self.dirs.popitem(last=False)[1])
        return fd

    def _remove(self, pfd: int, base: str, path: str):
        """Remove whatever is at base (a whole tree for a directory), never following links."""
        self._forget(path)
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)

    def apply(self, tf: tarfile.TarFile, what: str = "layer"):
        """Apply every entry; an entry the kernel refuses is an OCIError naming it."""
        it = iter(tf)
        last = None
        while True:
            try:
                m = next(it)
            except StopIteration:
                break
            except (ValueError, OverflowError, UnicodeError) as e:  # a pax field tarfile chokes on
                after = f" after {last!r}" if last else ""
                raise OCIError(f"{what}: invalid tar header{after}: {e}") from None
            last = m.name
            try:
                _check_entry(m)
                self._apply1(tf, m)
            except OCIError as e:
                msg = str(e)
                raise OCIError(f"{what}: {msg}" if msg.startswith("layer entry") else
                               f"{what}: entry {_show(m.name)}: {msg}") from None
            except OSError as e:
                reason = e.strerror or str(e)
                if e.errno == errno.ENOSPC:
                    reason += " (free space on the destination's filesystem)"
                raise OCIError(f"{what}: entry {_show(m.name)}: {reason}", errno=e.errno) from None
            except (ValueError, OverflowError) as e:
                raise OCIError(f"{what}: entry {_show(m.name)}: {e}") from None
        try:
            self._finish()
        except OSError as e:
            raise OCIError(f"{what}: {e.strerror or e}", errno=e.errno) from None

    def _apply1(self, tf, m):
        name = _clean(m.name)
        if not name:
            if m.isdir():
                return
            raise OCIError(f"layer entry {m.name!r} has no name")
        head, _, base = name.rpartition("/")
        if self.plain:
            self.entry(tf, m, name, head, base)
            return
        if base == WHITEOUT_OPAQUE:
            if self.overlay:
                os.setxattr(self.dir_fd(head), "trusted.overlay.opaque", b"y")
            else:
                self.opaque(head)
            return
        if base.startswith(WHITEOUT_PREFIX):
            target = base[len(WHITEOUT_PREFIX):]
            if target in ("", ".", ".."):
                raise OCIError(f"layer entry {m.name!r}: bad whiteout")
            if (f"{head}/{target}" if head else target) in self.created:
                return  # whiteouts hide lower layers only, never this layer's entries
            if self.overlay:  # overlayfs whiteout: a 0:0 character device
                pfd = self.dir_fd(head)
                self._remove(pfd, target, f"{head}/{target}" if head else target)
                os.mknod(target, stat.S_IFCHR | 0o600, 0, dir_fd=pfd)
                return
            try:
                pfd = self.dir_fd(head, create=False)
            except (FileNotFoundError, NotADirectoryError):
                return  # nothing below to hide
            self._remove(pfd, target, f"{head}/{target}" if head else target)
            return
        self.entry(tf, m, name, head, base)

    def _finish(self):
        for pfd_path, base, mtime in reversed(self.dir_times):
            try:  # never create anything here: a later whiteout may have removed the dir
                os.utime(base, (mtime, mtime), dir_fd=self.dir_fd(pfd_path, create=False),
                         follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                pass

    def opaque(self, path: str):
        fd = self.dir_fd(path)
        pre = f"{path}/" if path else ""
        for child in os.listdir(fd):
            if pre + child not in self.created:
                self._remove(fd, child, pre + child)

    def entry(self, tf, m: tarfile.TarInfo, name: str, head: str, base: str):
        pfd = self.dir_fd(head)
        self.created.add(name)
        try:
            old = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None and not (m.isdir() and stat.S_ISDIR(old.st_mode)):
            self._remove(pfd, base, name)
        mode = m.mode & 0o7777
        if m.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=pfd)
            try:
                src = tf.extractfile(m)
                left = m.size
                while left:
                    chunk = src.read(min(left, _CHUNK))
                    if not chunk:
                        raise OCIError(f"layer entry {m.name!r}: truncated data")
                    left -= len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                self._meta_fd(fd, m, mode)
            finally:
                os.close(fd)
        elif m.isdir():
            if old is None or not stat.S_ISDIR(old.st_mode):
                os.mkdir(base, 0o700, dir_fd=pfd)
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                self._meta_fd(fd, m, mode, times=False)
            finally:
                os.close(fd)
            self.dir_times.append((head, base, m.mtime))
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=pfd)
            self._owner(base, pfd, m)
            os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        elif m.islnk():
            target = _clean(m.linkname)
            if not target:
                raise OCIError(f"layer entry {m.name!r}: hard link to nothing")
            thead, _, tbase = target.rpartition("/")
            try:
                os.link(tbase, base, src_dir_fd=self.dir_fd(thead, create=False), dst_dir_fd=pfd,
                        follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                raise OCIError(f"hard link to {m.linkname!r}, which is not in the layers so far") from None
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            dev = os.makedev(m.devmajor, m.devminor) if kind != stat.S_IFIFO else 0
            os.mknod(base, kind | 0o600, dev, dir_fd=pfd)
            fd = os.open(base, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                self._owner(base, pfd, m)
                os.chmod(base, mode, dir_fd=pfd)
                self._xattrs(f"/proc/self/fd/{fd}", m)
                os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(fd)
        else:
            raise OCIError(f"layer entry {m.name!r}: unsupported tar type {m.type!r}")

    def _owner(self, base, pfd, m):
        if self.same_owner:
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)

    def _meta_fd(self, fd, m, mode, times=True):
        if self.same_owner:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, mode)  # after chown, which clears set-id bits
        self._xattrs(fd, m)
        if times:
            os.utime(fd, (m.mtime, m.mtime))

    def _xattrs(self, target, m):
        for k, v in m.pax_headers.items():
            if k.startswith("SCHILY.xattr.") and not k.startswith(_OVERLAY_XATTRS, 13):
                try:
                    os.setxattr(target, k[13:], v.encode("utf-8", "surrogateescape"))
                except OSError as e:
                    if e.errno not in (errno.ENOTSUP, errno.EPERM):
                        raise OCIError(f"xattr {k[13:]}: {e.strerror}", errno=e.errno) from None


def _show(name: str) -> str:
    """An entry name for a one-line message (a hostile one may be kilobytes long)."""
    return repr(name) if len(name) <= 200 else repr(name[:100] + "...") + f" ({len(name)} chars)"


def apply_layer(blob, media_type: str | None, dest_dir, *, same_owner: bool | None = None,
                whiteouts: str = "apply", digest: str | None = None, size: int | None = None,
                diff_id: str | None = None, what: str | None = None) -> None:
    """Unpack a layer (path or binary file object) onto dest_dir.

    Compression is detected from the bytes (media_type is only informative). Owners are
    kept when running as root (same_owner defaults to that). whiteouts="apply" deletes what
    whiteouts name; whiteouts="overlay" records them as overlayfs does (0:0 char devices,
    trusted.overlay.opaque=y), for a layer extracted on its own to serve as a lowerdir;
    whiteouts="none" treats an ordinary archive (ADD) whose .wh. names are plain files.

    digest and size (the descriptor's) and diff_id (the image config's) are checked as the
    bytes stream by. Every failure, a mismatch included, is an OCIError naming the layer
    (`what`, default "layer DIGEST"); entries are written before the end is known, so the
    caller must then discard dest_dir.
    """
    if whiteouts not in ("apply", "overlay", "none"):
        raise ValueError(f"whiteouts={whiteouts!r}: want 'apply', 'overlay' or 'none'")
    if same_owner is None:
        same_owner = os.geteuid() == 0
    what = what or (f"layer {digest}" if digest else f"layer ({media_type or 'tar'})")
    own = not hasattr(blob, "read")
    try:
        f = open(blob, "rb") if own else blob
    except OSError as e:
        raise OCIError(f"{what}: {e.strerror}: {blob}", errno=e.errno) from None
    try:
        raw = _Tap(f, hashed=digest is not None, limit=size, what=what)
        plain = _Tap(open_decompressed(raw), hashed=diff_id is not None, what=what,
                     keep=4 * tarfile.RECORDSIZE)
        ap = _Applier(os.fspath(dest_dir), same_owner=same_owner, whiteouts=whiteouts)
        try:
            # default bufsize: tarfile's stream re-slices its buffer on every read
            with tarfile.open(fileobj=plain, mode="r|", errorlevel=2) as tf:
                ap.apply(tf, what)
                _check_end(tf, plain, what)
            plain.drain()  # the rest of the stream: padding, and the decompressor's own end
            raw.drain()
        except _stream_errors() as e:
            raise OCIError(f"{what}: not a valid tar stream (damaged or truncated): {e}") from None
        finally:
            ap.close()
    finally:
        if own:
            f.close()
    if size is not None and raw.pos != size:
        raise OCIError(f"{what}: {raw.pos} bytes, but its descriptor says {size}")
    if digest is not None and raw.h.digest != digest:
        raise OCIError(f"{what}: content digest {raw.h.digest} does not match the descriptor")
    if diff_id is not None and plain.h.digest != diff_id:
        raise OCIError(f"{what}: uncompressed digest {plain.h.digest} does not match the diff_id "
                       f"{diff_id} in the image config (the image claims another layer's content)")



def verify_layer_blob(path, *, digest: str, size: int | None, diff_id: str, what: str) -> None:
    """Check a layer blob's digest, size and diff_id by streaming it once (nothing written):
    for a layer whose content is already extracted under that diff_id."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise OCIError(f"{what}: {e.strerror}: {path}", errno=e.errno) from None
    with f:
        raw = _Tap(f, hashed=True, limit=size, what=what)
        plain = _Tap(open_decompressed(raw), hashed=True, what=what)
        try:
            plain.drain()
            raw.drain()
        except _stream_errors() as e:
            raise OCIError(f"{what}: not a valid tar stream (damaged or truncated): {e}") from None
    if size is not None and raw.pos != size:
        raise OCIError(f"{what}: {raw.pos} bytes, but its descriptor says {size}")
    if raw.h.digest != digest:
        raise OCIError(f"{what}: content digest {raw.h.digest} does not match the descriptor")
    if plain.h.digest != diff_id:
        raise OCIError(f"{what}: uncompressed digest {plain.h.digest} does not match the diff_id "
                       f"{diff_id} in the image config (the image claims another layer's content)")
