"""Idmapped mounts: mounts[].uidMappings/gidMappings and the `idmap`/`ridmap` options.

An idmapped mount shows a filesystem's owners through a user namespace's mapping without
touching the files (mount_setattr(2), MOUNT_ATTR_IDMAP). Mapping entries are written to
that namespace's uid_map/gid_map exactly as runc writes them, "containerID hostID size":
a file whose owner on disk is containerID+n appears through the mount as owned by
hostID+n (in the runtime's namespace; a container's user namespace then maps that again).

The mount is made as a detached tree (open_tree(OPEN_TREE_CLONE)); the caller attaches it
with attach() (move_mount(2)). Standard library only; ctypes only when a mount needs it.
"""

import os

from ocispec.errors import OCIError

# x86_64 syscall numbers (also the generic numbers on arm64 for these new calls).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x100000
CLONE_NEWUSER = 0x10000000


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
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    userns = userns_fd(uid_mappings, gid_mappings, where)
    try:
        flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
        tree = libc.syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(source),
                            ctypes.c_uint(flags))
        if tree < 0:
            err = ctypes.get_errno()
            raise OCIError(f"{where}: cannot clone the mount at {source}: {os.strerror(err)}",
                           errno=err)
        # struct mount_attr { u64 attr_set, attr_clr, propagation, userns_fd; }
        attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_IDMAP, 0, 0, userns)
        at = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
        if libc.syscall(SYS_MOUNT_SETATTR, tree, b"", ctypes.c_uint(at), ctypes.byref(attr),
                        ctypes.c_size_t(ctypes.sizeof(attr))) != 0:
            err = ctypes.get_errno()
            os.close(tree)
            hint = {22: "the filesystem of the source does not support idmapped mounts, or "
                        "the kernel is older than 5.12",
                    38: "the kernel has no mount_setattr (Linux 5.12 or later needed)",
                    1: "no permission to idmap this mount"}.get(err)
            raise OCIError(f"{where}: cannot idmap the mount of {source}: {os.strerror(err)}",
                           errno=err, hint=hint)
        return tree
    finally:
        os.close(userns)


def attach(tree_fd: int, target: str, where: str = "mounts") -> None:
    """move_mount(2) a detached tree (from make_idmapped_tree) onto target."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_MOVE_MOUNT, tree_fd, b"", AT_FDCWD, os.fsencode(target),
                    ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)) != 0:
        err = ctypes.get_errno()
        raise OCIError(f"{where}: cannot mount onto {target}: {os.strerror(err)}", errno=err)


def userns_fd(uid_mappings: list, gid_mappings: list, where: str = "mounts") -> int:
    """An fd of a fresh user namespace with these mappings and no process in it: a child
    unshares CLONE_NEWUSER, we write its maps and open /proc/CHILD/ns/user, it exits."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: nothing but syscalls until _exit
        try:
            os.close(ready_r)
            os.close(done_w)
            ok = libc.unshare(CLONE_NEWUSER) == 0
            os.write(ready_w, b"1" if ok else b"0")
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
