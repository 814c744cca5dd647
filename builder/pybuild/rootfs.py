"""A build stage's filesystem: extracted layers shared by digest, overlay mounts over them,
and path resolution that never leaves the rootfs.

Each layer is extracted once, in overlay form (whiteouts as 0/0 character devices, opaque
dirs as trusted.overlay.opaque=y), into ROOT/layers/<diff_id hex>; a stage's rootfs is then
an overlay whose lowerdirs are those directories. Nothing is copied per build or per RUN.
"""
import contextlib
import errno as _errno
import os
import shutil
import stat
import tarfile
import uuid

from ocispec import mediatypes as mt
from ocispec.errors import OCIError

from . import mounts

_WH = ".wh."
_OPQ = ".wh..wh..opq"


def open_layer_stream(fileobj, media_type: str):
    """A decompressing reader over a layer blob (compression from the media type)."""
    comp = mt.layer_compression(media_type)
    if comp == "gzip":
        from isal import igzip
        return igzip.IGzipFile(fileobj=fileobj, mode="rb")
    if comp == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(fileobj)
    return fileobj


def _safe_name(name: str) -> str | None:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _check_parents(dest: str, rel: str) -> None:
    """Every parent of rel under dest must be a real directory (no symlink redirection)."""
    cur = dest
    for comp in rel.split("/")[:-1]:
        cur = os.path.join(cur, comp)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise OCIError(f"layer entry {rel!r} goes through non-directory {comp!r}")


def extract_overlay_form(fileobj, media_type: str, dest: str) -> None:
    """Extract a layer into an empty dir, keeping whiteouts in overlayfs form."""
    stream = open_layer_stream(fileobj, media_type)
    links = []
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        for m in tf:
            rel = _safe_name(m.name)
            if rel is None:
                continue
            _check_parents(dest, rel)
            path = os.path.join(dest, rel)
            base = os.path.basename(rel)
            if base == _OPQ:
                os.setxattr(os.path.dirname(path) or dest, "trusted.overlay.opaque", b"y")
                continue
            if base.startswith(_WH):
                target = os.path.join(os.path.dirname(path), base[len(_WH):])
                _remove(target)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                continue
            if m.isdir():
                if not os.path.isdir(path) or os.path.islink(path):
                    _remove(path)
                    os.mkdir(path, 0o755)
                links.append((path, m))  # modes and times after the children are written
                continue
            _remove(path)
            if m.isreg():
                src = tf.extractfile(m)
                with open(path, "xb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            elif m.issym():
                os.symlink(m.linkname, path)
            elif m.islnk():
                lrel = _safe_name(m.linkname)
                if lrel is None:
                    raise OCIError(f"layer hard link {m.name!r} points outside the layer")
                target = os.path.join(dest, lrel)
                if os.path.islink(target) or not os.path.lexists(target):
                    raise OCIError(f"layer hard link {m.name!r} -> {m.linkname!r}: bad target")
                os.link(target, path)
                continue
            elif m.ischr() or m.isblk():
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                os.mknod(path, kind | m.mode, os.makedev(m.devmajor, m.devminor))
            elif m.isfifo():
                os.mkfifo(path, m.mode)
            else:
                continue
            _apply_meta(path, m)
    for path, m in reversed(links):
        _apply_meta(path, m)


def _apply_meta(path: str, m: tarfile.TarInfo) -> None:
    os.chown(path, m.uid, m.gid, follow_symlinks=False)
    for k, v in (m.pax_headers or {}).items():
        if k.startswith("SCHILY.xattr."):
            with contextlib.suppress(OSError):
                os.setxattr(path, k[len("SCHILY.xattr."):], v.encode("utf-8", "surrogateescape"),
                            follow_symlinks=False)
    if not m.issym():
        os.chmod(path, m.mode & 0o7777)
    os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class LayerCache:
    """Extracted layers under ROOT/layers, keyed by diff_id; shared by every build."""

    def __init__(self, store):
        self.store = store
        self.dir = os.path.join(store.root, "layers")
        os.makedirs(self.dir, exist_ok=True)

    def path(self, desc: dict, diff_id: str) -> str:
        final = os.path.join(self.dir, diff_id.split(":", 1)[1][:32])
        if os.path.isdir(final):
            return final
        tmp = os.path.join(self.dir, f".tmp-{uuid.uuid4().hex}")
        os.mkdir(tmp, 0o755)
        try:
            with self.store.open_blob(desc["digest"]) as f:
                extract_overlay_form(f, desc["mediaType"], tmp)
            try:
                os.rename(tmp, final)
            except OSError as e:  # another build extracted it first
                if e.errno not in (_errno.ENOTEMPTY, _errno.EEXIST):
                    raise
                rmtree_safe(tmp)
        except BaseException:
            rmtree_safe(tmp)
            raise
        return final

    def lowerdirs(self, layers) -> list[str]:
        """Extracted dirs for [(descriptor, diff_id)], top layer first (overlay order)."""
        return [self.path(d, i) for d, i in reversed(list(layers))]


def rmtree_safe(path: str) -> None:
    """rm -rf that refuses to cross into mounts (a stuck mount is left, never its content)."""
    if not os.path.lexists(path):
        return
    dev = os.lstat(path).st_dev

    def onerror(func, p, exc):
        raise exc[1]
    for dirpath, dirnames, filenames in os.walk(path, topdown=True):
        for d in list(dirnames):
            p = os.path.join(dirpath, d)
            if not os.path.islink(p) and os.lstat(p).st_dev != dev:
                raise OCIError(f"refusing to remove {path}: {p} is a mount point")
    shutil.rmtree(path)


@contextlib.contextmanager
def mounted_view(lowerdirs, scratch_dir: str):
    """A read-only overlay of lowerdirs at a temp dir (None when there are no layers)."""
    if not lowerdirs:
        yield None
        return
    target = os.path.join(scratch_dir, f"view-{uuid.uuid4().hex[:12]}")
    empty = target + ".empty"
    os.mkdir(target)
    os.mkdir(empty)
    try:
        mounts.overlay(target, list(lowerdirs) + [empty], readonly=True)
        try:
            yield target
        finally:
            mounts.umount(target)
    finally:
        os.rmdir(target)
        os.rmdir(empty)


def resolve_in_root(root: str, path: str, *, follow_last: bool = True) -> str:
    """The host path of `path` inside the rootfs `root`, following symlinks as the kernel
    would if `root` were `/` (absolute links and `..` stay inside)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    budget = 40
    while parts:
        comp = parts.pop(0)
        if comp == "..":
            if resolved:
                resolved.pop()
            continue
        cand = os.path.join(root, *resolved, comp)
        last = not parts
        if os.path.islink(cand) and (follow_last or not last):
            budget -= 1
            if budget < 0:
                raise OCIError(f"too many levels of symbolic links resolving {path}")
            link = os.readlink(cand)
            if link.startswith("/"):
                resolved = []
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(comp)
    return "/" + "/".join(resolved)
