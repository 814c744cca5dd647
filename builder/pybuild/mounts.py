"""mount(2)/umount2(2) for the builder's overlays, through libc (no mount(8) fork per step)."""
import ctypes
import os

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
            readonly: bool = False) -> None:
    """Mount an overlay; lowerdirs top first. Without upper it is read-only."""
    # A layer twice in a chain (two steps that changed nothing give the same empty layer) is
    # the same directory twice, which overlayfs refuses (ELOOP). The upper copy shadows the
    # lower one entirely, so the lower one can go.
    lowers = list(dict.fromkeys(lowerdirs))
    opts = "lowerdir=" + ":".join(map(_opt_path, lowers))
    if upper:
        opts += f",upperdir={_opt_path(upper)},workdir={_opt_path(work)}"
    # index/metacopy off: the upper dir must hold plain files we can turn into a layer.
    opts += ",index=off,metacopy=off" if upper else ""
    mount("overlay", target, "overlay", MS_RDONLY if readonly else 0, opts)
