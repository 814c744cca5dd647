"""The container's view of its cgroups: a mount of type "cgroup" in config.json.

Like runc on v1/hybrid hosts: a tmpfs at the destination, then per hierarchy either a bind
of the container's own cgroup directory or (with a cgroup namespace) a fresh mount of that
hierarchy, the cgroup2 one at <dest>/unified, and symlinks for co-mounted controllers
(cpu -> cpu,cpuacct). On a pure v2 host the cgroup2 tree goes at the destination itself.
"""

from .. import oslite as os

from ocispec.errors import OCIError
from ocispec.tables import (MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY,
                            MS_REC, MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_UNBINDABLE)

from .. import linux
from . import paths

_DEFAULT = MS_NOSUID | MS_NODEV | MS_NOEXEC
_NOT_KEPT = MS_RDONLY | MS_BIND | MS_REC | MS_REMOUNT | MS_PRIVATE | MS_SHARED | MS_SLAVE | \
    MS_UNBINDABLE


def _mount(source, target, fstype, flags, data=None) -> None:
    try:
        linux.mount(source, target, fstype, flags, data)
    except OSError as e:
        raise OCIError(f"mounts: cgroup at {target}: cannot mount {fstype or 'bind'} "
                       f"{source}: {os.strerror(e.errno).lower()}", errno=e.errno) from None


def _bind(source: str, target: str, flags: int, ro: bool) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    if ro or flags:
        # bind ignores most flags: apply them with a remount of the bind
        _mount(None, target, None, MS_BIND | MS_REMOUNT | flags | (MS_RDONLY if ro else 0))


def mount_cgroups(m, dest: str, flags: int, cgroupns: bool) -> None:
    if m is None:
        raise OCIError(f"mounts: cgroup at {dest}: the container has no cgroup to show")
    ro = bool(flags & MS_RDONLY)
    keep = (flags & ~_NOT_KEPT) | _DEFAULT
    if m.layout == "v2":
        if cgroupns:
            _mount("cgroup2", dest, "cgroup2", keep | (MS_RDONLY if ro else 0))
        else:
            _bind(m.v2, dest, keep, ro)
        return
    _mount("tmpfs", dest, "tmpfs", keep, "mode=755")
    v1, v2 = paths.mounts()
    done = set()
    for ctrl, (mountpoint, _, opts) in v1.items():
        if mountpoint in done or ctrl not in m.v1:
            continue
        done.add(mountpoint)
        name = os.path.basename(mountpoint)  # 'cpu,cpuacct', 'memory', 'systemd'
        target = os.path.join(dest, name)
        os.mkdir(target, 0o755)
        if cgroupns:
            _mount("cgroup" if not opts.startswith("name=") else name, target, "cgroup",
                   keep | (MS_RDONLY if ro else 0), opts)
        else:
            _bind(m.v1[ctrl], target, keep, ro)
        for sub in opts.split(","):
            if sub != name and not sub.startswith("name="):
                try:
                    os.symlink(name, os.path.join(dest, sub))
                except FileExistsError:
                    pass
    if m.v2 and v2:
        target = os.path.join(dest, os.path.basename(v2[0]) or "unified")
        os.mkdir(target, 0o755)
        if cgroupns:
            _mount("cgroup2", target, "cgroup2", keep | (MS_RDONLY if ro else 0))
        else:
            _bind(m.v2, target, keep, ro)
    if ro:
        _mount(None, dest, None, MS_BIND | MS_REMOUNT | keep | MS_RDONLY)
