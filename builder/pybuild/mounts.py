"""mount(2)/umount2(2) for the builder's overlays, through libc (no mount(8) fork per step)."""
import ctypes
import errno
import os
import re

from ocispec.errors import OCIError

_libc = ctypes.CDLL(None, use_errno=True)  # the process's libc (find_library forks ldconfig)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MS_RDONLY = 1
MNT_DETACH = 2


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags,
                   data.encode() if data else None) != 0:
        e = ctypes.get_errno()
        raise OCIError(f"mount {fstype} on {target}: {os.strerror(e)}", errno=e)


def umount(target: str) -> None:
    if _libc.umount2(target.encode(), 0) != 0:
        e = ctypes.get_errno()
        if _libc.umount2(target.encode(), MNT_DETACH) != 0:
            raise OCIError(f"umount {target}: {os.strerror(e)}", errno=e)


def _opt_path(path: str) -> str:
    """A path as an overlay option value: ',' ends an option and ':' a lowerdir unless escaped."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def overlay(target: str, lowerdirs, upper: str | None = None, work: str | None = None,
            readonly: bool = False, volatile: bool = False) -> None:
    """Mount an overlay; lowerdirs top first. Without upper it is read-only.

    volatile: no syncs of the upper dir (its unmount then costs no sync of the whole
    filesystem under a busy disk), for an upper dir that is thrown away after a crash anyway
    (a RUN's, made into a layer blob that is written durably)."""
    # A layer twice in a chain (two steps that changed nothing give the same empty layer) is
    # the same directory twice, which overlayfs refuses (ELOOP). The upper copy shadows the
    # lower one entirely, so the lower one can go.
    lowers = list(dict.fromkeys(lowerdirs))
    opts = "lowerdir=" + ":".join(map(_opt_path, lowers))
    if upper:
        opts += f",upperdir={_opt_path(upper)},workdir={_opt_path(work)}"
    # index/metacopy off: the upper dir must hold plain files we can turn into a layer.
    # redirect_dir off: a renamed lower directory is copied up whole (layer.py refuses
    # redirect xattrs, which no image layer can express)
    opts += ",index=off,metacopy=off,redirect_dir=off" if upper else ""
    flags = MS_RDONLY if readonly else 0
    if upper and volatile:
        try:
            return mount("overlay", target, "overlay", flags, opts + ",volatile")
        except OCIError as e:
            if e.errno != errno.EINVAL:  # a kernel before 5.10 has no volatile: plain then
                raise
    mount("overlay", target, "overlay", flags, opts)


def umount_detach(target: str) -> None:
    """Detach a mount now (MNT_DETACH): the way to drop what a dead process left mounted."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        e = ctypes.get_errno()
        if e not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            raise OCIError(f"umount {target}: {os.strerror(e)}", errno=e)


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (\\040 for a space, ...) back to the path."""
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return [_unescape(line.split()[4]) for line in f]


def tmpfs_mount_points() -> set[str]:
    """Mount points of tmpfs filesystems."""
    out = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "tmpfs":
                out.add(_unescape(fields[4]))
    return out


def mounts_under(path: str, *, include_self: bool = False) -> list[str]:
    """Mount points strictly below `path` (and `path` itself with include_self)."""
    path = os.path.realpath(path)
    pre = path.rstrip("/") + "/"
    return [m for m in mount_points() if m.startswith(pre) or (include_self and m == path)]


def is_mountpoint(path: str) -> bool:
    return os.path.realpath(path) in mount_points()
