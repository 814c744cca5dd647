"""Opening procfs files so that what the runtime writes lands in procfs.

A container can plant symlinks, bind mounts or a whole fake /proc where the runtime
expects procfs; a write by path then lands in a file of the container's choosing
(CVE-2019-16884, CVE-2025-52881: oomScoreAdj or a sysctl written into a bind-mounted
file). So every procfs access of the runtime goes through open():

- the root is an fd of /proc opened once per process, before anything the container
  controls is mounted (init opens it before the config mounts), and verified to be the
  root of a procfs (PROC_SUPER_MAGIC, inode 1);
- paths under it are resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): no symlink followed ("self" and
  "thread-self" are read here, they are plain procfs symlinks) and no mount crossed,
  so nothing mounted over a procfs file can stand in for it.

/proc/sys follows the opener's namespaces, not the mount's, so the host's procfs opened
by init serves the container's sysctls as its own /proc would.
"""

import errno
from . import oslite as os

from . import linux

PROC_SUPER_MAGIC = 0x9FA0
PROC_ROOT_INO = 1
_RESOLVE = (linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_MAGICLINKS
            | linux.RESOLVE_NO_XDEV)

# (fd, (st_dev, st_ino)) of the verified /proc. A forked child inherits it (so a process
# that pins it before joining a container keeps the host's); the identity tells an fd that
# close_fds_except closed, or whose number was reused, from the one verified.
_root: tuple[int, tuple[int, int]] | None = None


def root() -> int:
    """The verified /proc fd, opened on first use. Call it before anything the container
    controls is mounted where /proc is looked up (init does, before the config mounts)."""
    global _root
    if _root is not None:
        try:
            st = os.fstat(_root[0])
            if (st.st_dev, st.st_ino) == _root[1]:
                return _root[0]
        except OSError:
            pass
    fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if linux.fstatfs_type(fd) != PROC_SUPER_MAGIC or st.st_ino != PROC_ROOT_INO:
            raise OSError(errno.EXDEV, "/proc is not the root of a procfs (something is mounted "
                          "there instead, or it is a symlink to another directory)", "/proc")
    except BaseException:
        os.close(fd)
        raise
    _root = (fd, (st.st_dev, st.st_ino))
    return fd


def _resolve(path: str) -> str:
    first, sep, rest = path.partition("/")
    if first in ("self", "thread-self"):
        # "1234" or "1234/task/1235" as this procfs numbers us
        first = os.readlink(first, dir_fd=root())
    return first + sep + rest


def open(path: str, flags: int = os.O_RDONLY) -> int:
    """Open /proc/PATH (PATH like "self/oom_score_adj", "sys/net/ipv4/ip_forward",
    "1234/uid_map") of the verified procfs; raises OSError naming /proc/PATH, with a
    reason a user can act on when something stands in the way."""
    full = "/proc/" + path
    try:
        fd = linux.openat2(root(), _resolve(path), flags | os.O_CLOEXEC, 0, _RESOLVE)
    except OSError as e:
        reason = {errno.EXDEV: f"{full}: something is mounted over it, refusing to use it",
                  errno.ELOOP: f"{full}: a symlink in procfs, refusing to follow it"}.get(e.errno)
        raise OSError(e.errno, reason or e.strerror, full) from None
    if linux.fstatfs_type(fd) != PROC_SUPER_MAGIC:  # RESOLVE_NO_XDEV makes this a belt
        os.close(fd)
        raise OSError(errno.EXDEV, f"{full}: not a procfs file, refusing to use it", full)
    return fd


def write(path: str, data: str) -> None:
    """Write data to /proc/PATH in one write(2) (procfs files take one value per write)."""
    fd = open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def read(path: str) -> str:
    fd = open(path)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def fd_path(fd: int) -> str:
    """What the kernel says fd is (readlink of /proc/self/fd/FD, through the verified root)."""
    return os.readlink(f"{_resolve('self')}/fd/{fd}", dir_fd=root())
