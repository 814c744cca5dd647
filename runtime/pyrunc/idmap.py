"""Idmapped mounts: mounts[].uidMappings/gidMappings and the `idmap`/`ridmap` options.

An idmapped mount shows a filesystem's owners through a user namespace's mapping without
touching the files (mount_setattr(2), MOUNT_ATTR_IDMAP). Mapping entries are written to
that namespace's uid_map/gid_map exactly as runc writes them, "containerID hostID size":
a file whose owner on disk is containerID+n appears through the mount as owned by
hostID+n (in the runtime's namespace; a container's user namespace then maps that again).

The mount is made as a detached tree (open_tree(OPEN_TREE_CLONE)); the caller attaches it
with attach() (move_mount(2)). The syscalls are pyrunc.linux's, imported only when used.

prepare() also clones the source of every other bind mount of a container with a user
namespace (runc's mountFds): the container's root is some unprivileged host uid, for which
a source below a directory only the host's root may search is out of reach.
"""

import errno
from . import oslite as os

from ocispec.errors import OCIError
from ocispec.tables import MOUNT_ATTR_IDMAP, MS_PRIVATE, MS_SLAVE

AT_FDCWD = -100


def plan(mount: dict, linux: dict | None) -> tuple | None:
    """(uid_mappings, gid_mappings, recursive) for an idmapped config.json mount, or None
    when the mount is not idmapped. As runc: the `idmap` / `ridmap` (recursive) options or
    mapping fields make a bind mount idmapped; without mapping fields the container's
    linux.uidMappings/gidMappings are used. The config is validated already
    (ocispec.runtime_config checks the pairs, bind-only and the fallback's presence)."""
    opts = mount.get("options") or ()
    uids, gids = mount.get("uidMappings"), mount.get("gidMappings")
    if not ("idmap" in opts or "ridmap" in opts or uids is not None):
        return None
    if uids is None:
        uids, gids = (linux or {}).get("uidMappings"), (linux or {}).get("gidMappings")
    return uids, gids, "ridmap" in opts


def wanted(cfg: dict) -> tuple[bool, bool]:
    """(any idmapped mount, clone every bind source) for a config: the second when the
    container gets a new mount namespace inside a user namespace and we are the host's
    root (runc's shouldSendMountSources; a mount namespace joined by path keeps its own
    view of the sources, so init binds those by path)."""
    mounts = cfg.get("mounts") or ()
    idm = any("uidMappings" in m or {"idmap", "ridmap"} & set(m.get("options") or ())
              for m in mounts)
    ns = {n.get("type"): n.get("path") for n in (cfg.get("linux") or {}).get("namespaces") or ()}
    binds = ("user" in ns and "mount" in ns and not ns["mount"] and os.geteuid() == 0
             and any(is_bind(m) for m in mounts))
    return idm, binds


def prepare(mounts: list | None, linux: dict | None, bundle: str,
            all_binds: bool = False) -> dict[int, int]:
    """Make the detached trees of mount sources in the runtime's namespaces: {mounts
    index: fd}: every idmapped mount's, and with all_binds every bind mount's.

    Call it in create's parent, before the container's user namespace exists, and let
    init attach() the fds. Mapping hostIDs are host ids (as runc): a tree made inside a
    container's user namespace would read them as the container's ids, and the kernel
    lets only a holder of CAP_SYS_ADMIN over the idmapping's namespace use it."""
    trees = {}
    # A clone of a shared mount joins its peer group: left so, what the container mounts
    # under it would appear on the host. A bind made in the container's own namespace is
    # a slave there (rslave root, or a user namespace's copy), or private when asked.
    prop = (linux or {}).get("rootfsPropagation")
    propagation = MS_PRIVATE if prop in ("private", "rprivate") else MS_SLAVE
    try:
        for i, m in enumerate(mounts or ()):
            p = plan(m, linux)
            if p is None and not (all_binds and is_bind(m)):
                continue
            src = m.get("source") or ""
            src = src if os.path.isabs(src) else os.path.join(bundle, src)
            opts = m.get("options") or ()
            if p is not None:
                recursive = p[2] or "rbind" in opts
                trees[i] = make_idmapped_tree(src, p[0], p[1], recursive, where=f"mounts[{i}]")
            else:
                trees[i] = clone_tree(src, "rbind" in opts, m.get("destination"))
            _set_propagation(trees[i], propagation, f"mounts[{i}]")
    except BaseException:
        for fd in trees.values():
            os.close(fd)
        raise
    return trees


def clone_tree(source: str, recursive: bool, dest=None) -> int:
    """A detached clone of the mount at source (a bind mount not yet attached), opened as
    the runtime: its path is looked up with the host root's rights."""
    from . import linux

    rec = linux.AT_RECURSIVE if recursive else 0
    try:
        return linux.open_tree(AT_FDCWD, source, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | rec)
    except OSError as e:
        raise OCIError(f"mount source {source} for {dest}: {os.strerror(e.errno)}",
                       errno=e.errno) from None


def _set_propagation(tree: int, propagation: int, where: str) -> None:
    from . import linux

    try:
        linux.mount_setattr(tree, "", linux.AT_EMPTY_PATH | linux.AT_RECURSIVE, propagation=propagation)
    except OSError as e:
        os.close(tree)
        raise OCIError(f"{where}: cannot set the propagation of the source's clone: "
                       f"{os.strerror(e.errno)}", errno=e.errno) from None


def is_bind(m: dict) -> bool:
    """A bind mount, as runc's specconv decides: type bind, or a bind/rbind option."""
    return m.get("type") == "bind" or any(o in ("bind", "rbind") for o in m.get("options") or ())


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


def attach(tree_fd: int, target, where: str = "mounts") -> None:
    """move_mount(2) a detached tree (from make_idmapped_tree) onto target: an fd (O_PATH
    is enough) or a path. move_mount does not follow a final symlink, so a /proc/self/fd/N
    path is taken as that fd."""
    from . import linux

    if isinstance(target, str) and target.startswith("/proc/self/fd/") \
            and target[14:].isdigit():
        target = int(target[14:])
    try:
        if isinstance(target, int):
            linux.move_mount(tree_fd, "", target, "",
                             linux.MOVE_MOUNT_F_EMPTY_PATH | linux.MOVE_MOUNT_T_EMPTY_PATH)
        else:
            linux.move_mount(tree_fd, "", AT_FDCWD, target, linux.MOVE_MOUNT_F_EMPTY_PATH)
    except OSError as e:
        raise OCIError(f"{where}: cannot mount onto {target}: {os.strerror(e.errno)}",
                       errno=e.errno) from None


def userns_fd(uid_mappings: list, gid_mappings: list, where: str = "mounts") -> int:
    """An fd of a fresh user namespace with these mappings and no process in it: a child
    unshares CLONE_NEWUSER, we write its maps and open /proc/CHILD/ns/user, it exits.

    CHILD is the child's pid as the /proc we see knows it: inside a new pid namespace
    whose /proc is still the host's (a container's init before pivot_root), getpid()
    would name another process, so the child reads its number from /proc/self. Both go
    through pyrunc.procfs's verified /proc, so the maps land in procfs."""
    from . import linux, procfs

    proc = procfs.root()
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: nothing but syscalls until _exit
        try:
            os.close(ready_r)
            os.close(done_w)
            try:
                linux.unshare(linux.CLONE_NEWUSER)
                os.write(ready_w, os.readlink("self", dir_fd=proc).encode())
            except OSError as e:
                os.write(ready_w, f"error {e.errno}".encode())
            os.close(ready_w)
            os.read(done_r, 1)  # until the parent has opened our namespace
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        answer = os.read(ready_r, 64).decode()
        if not answer.isdigit():
            err = int(answer.split()[1]) if answer.startswith("error ") else 0
            raise OCIError(f"{where}: cannot create a user namespace for the idmapped mount"
                           + (f": {os.strerror(err)}" if err else ""), errno=err or None)
        for name, maps in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
            text = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)
            try:
                procfs.write(f"{answer}/{name}", text)
            except OSError as e:
                key = "uidMappings" if name == "uid_map" else "gidMappings"
                raise OCIError(f"{where}.{key}: the kernel refused the mapping "
                               f"{text.strip()!r}: {e.strerror}", errno=e.errno) from None
        # ns/user is a magic link (into nsfs): followed from the verified pid directory
        piddir = procfs.open(answer, os.O_PATH | os.O_DIRECTORY)
        try:
            return os.open("ns/user", os.O_RDONLY | os.O_CLOEXEC, dir_fd=piddir)
        finally:
            os.close(piddir)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)
