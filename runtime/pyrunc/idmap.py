"""Idmapped mounts: mounts[].uidMappings/gidMappings and the `idmap`/`ridmap` options.

An idmapped mount shows a filesystem's owners through a user namespace's mapping without
touching the files (mount_setattr(2), MOUNT_ATTR_IDMAP). Mapping entries are written to
that namespace's uid_map/gid_map exactly as runc writes them, "containerID hostID size":
a file whose owner on disk is containerID+n appears through the mount as owned by
hostID+n (in the runtime's namespace; a container's user namespace then maps that again).

The mount is made as a detached tree (open_tree(OPEN_TREE_CLONE)); the caller attaches it
with attach() (move_mount(2)). The syscalls are pyrunc.linux's, imported only when used.
"""

import errno
import os

from ocispec.errors import OCIError
from ocispec.tables import MOUNT_ATTR_IDMAP

AT_FDCWD = -100


def plan(mount: dict, linux: dict | None, where: str = "mounts") -> tuple | None:
    """(uid_mappings, gid_mappings, recursive) for an idmapped config.json mount, or None
    when the mount is not idmapped. As runc: the `idmap` / `ridmap` (recursive) options or
    mapping fields make a bind mount idmapped; without mapping fields the container's
    linux.uidMappings/gidMappings are used."""
    opts = mount.get("options") or ()
    uids, gids = mount.get("uidMappings"), mount.get("gidMappings")
    if not ("idmap" in opts or "ridmap" in opts or uids is not None or gids is not None):
        return None
    if (uids is None) != (gids is None):
        raise OCIError(f"config.json: {where}: uidMappings and gidMappings must be given "
                       "together")
    kind = mount.get("type")
    if kind not in (None, "", "bind", "none") and "bind" not in opts and "rbind" not in opts:
        raise OCIError(f"config.json: {where}: idmapped mounts must be bind mounts, "
                       f"not type {kind!r}")
    if uids is None:
        uids = (linux or {}).get("uidMappings")
        gids = (linux or {}).get("gidMappings")
        if not uids or not gids:
            raise OCIError(f"config.json: {where}: idmap without uidMappings/gidMappings "
                           "needs linux.uidMappings and linux.gidMappings (a user namespace)")
    for key, maps in (("uidMappings", uids), ("gidMappings", gids)):
        _check_mappings(maps, f"config.json: {where}.{key}")
    return uids, gids, "ridmap" in opts


def _check_mappings(maps, where: str) -> None:
    if not isinstance(maps, list) or not maps:
        raise OCIError(f"{where}: must be a non-empty array")
    for i, m in enumerate(maps):
        if not isinstance(m, dict):
            raise OCIError(f"{where}[{i}]: must be an object")
        for key in ("containerID", "hostID", "size"):
            v = m.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
                raise OCIError(f"{where}[{i}].{key}: must be a uint32, got {v!r}")
        if m["size"] == 0:
            raise OCIError(f"{where}[{i}].size: must be greater than zero")


def make_idmapped_tree(source: str, uid_mappings: list, gid_mappings: list,
                       recursive: bool, where: str = "mounts") -> int:
    """A detached clone of the mount tree at source, idmapped with the given mappings
    (recursive: submounts too). Returns its fd (O_CLOEXEC); attach() it or close it."""
    from . import linux

    userns = userns_fd(uid_mappings, gid_mappings, where)
    try:
        rec = linux.AT_RECURSIVE if recursive else 0
        try:
            tree = linux.open_tree(AT_FDCWD, source,
                                   linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | rec)
        except OSError as e:
            raise OCIError(f"{where}: cannot clone the mount at {source}: "
                           f"{os.strerror(e.errno)}", errno=e.errno) from None
        try:
            linux.mount_setattr(tree, "", linux.AT_EMPTY_PATH | rec,
                                attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns)
        except OSError as e:
            os.close(tree)
            hint = {errno.EINVAL: "the filesystem of the source does not support idmapped "
                                  "mounts, or the kernel is older than 5.12",
                    errno.ENOSYS: "the kernel has no mount_setattr (Linux 5.12 or later needed)",
                    errno.EPERM: "no permission to idmap this mount"}.get(e.errno)
            raise OCIError(f"{where}: cannot idmap the mount of {source}: "
                           f"{os.strerror(e.errno)}", errno=e.errno, hint=hint) from None
        return tree
    finally:
        os.close(userns)


def attach(tree_fd: int, target: str, where: str = "mounts") -> None:
    """move_mount(2) a detached tree (from make_idmapped_tree) onto target."""
    from . import linux

    try:
        linux.move_mount(tree_fd, "", AT_FDCWD, target, linux.MOVE_MOUNT_F_EMPTY_PATH)
    except OSError as e:
        raise OCIError(f"{where}: cannot mount onto {target}: {os.strerror(e.errno)}",
                       errno=e.errno) from None


def userns_fd(uid_mappings: list, gid_mappings: list, where: str = "mounts") -> int:
    """An fd of a fresh user namespace with these mappings and no process in it: a child
    unshares CLONE_NEWUSER, we write its maps and open /proc/CHILD/ns/user, it exits."""
    from . import linux

    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: nothing but syscalls until _exit
        try:
            os.close(ready_r)
            os.close(done_w)
            try:
                linux.unshare(linux.CLONE_NEWUSER)
                os.write(ready_w, b"1")
            except OSError:
                os.write(ready_w, b"0")
            os.read(done_r, 1)  # until the parent has opened our namespace
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OCIError(f"{where}: cannot create a user namespace for the idmapped mount")
        for name, maps in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
            text = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text)
            except OSError as e:
                key = "uidMappings" if name == "uid_map" else "gidMappings"
                raise OCIError(f"{where}.{key}: the kernel refused the mapping "
                               f"{text.strip()!r}: {e.strerror}", errno=e.errno) from None
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)
