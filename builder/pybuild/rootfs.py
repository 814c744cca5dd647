"""A build stage's filesystem: extracted layers shared by digest, overlay mounts over them,
and path resolution that never leaves the rootfs.

Each layer is extracted once, in overlay form (whiteouts as 0/0 character devices, opaque
dirs as trusted.overlay.opaque=y), into ROOT/layers/<diff_id hex>; a stage's rootfs is then
an overlay whose lowerdirs are those directories. Nothing is copied per build or per RUN.
"""
import contextlib
import os
import shutil
import uuid

from ocispec.errors import OCIError

from . import mounts


class LayerCache:
    """Extracted layers under ROOT/layers, keyed by diff_id; shared by every build and by
    `pybuild unpack` (pybuild.unpack.extracted_layer makes them)."""

    def __init__(self, store):
        self.store = store

    def path(self, desc: dict, diff_id: str) -> str:
        from .unpack import extracted_layer
        return extracted_layer(self.store, desc, diff_id)

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


def mkdir_all(root: str, path: str, mode: int = 0o755) -> None:
    """mkdir -p of `path` (already resolved in the rootfs) under root, one directory fd at a
    time: no recursion (os.makedirs recurses once per component) and no host path longer
    than a component, so a deep WORKDIR works or fails with a plain error."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for comp in (p for p in path.split("/") if p not in ("", ".")):
            try:
                os.mkdir(comp, mode, dir_fd=fd)
            except FileExistsError:
                pass
            nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as e:
        raise OCIError(f"cannot create directory {path}: {e.strerror}", errno=e.errno) from None
    finally:
        os.close(fd)
