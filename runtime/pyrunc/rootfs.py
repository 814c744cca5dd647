"""The container's filesystem view: rootfs, config mounts, /dev, pivot_root, masking.

Every path inside the rootfs is resolved with openat2(RESOLVE_IN_ROOT), so symlinks and
`..` in the rootfs (or planted there by a previous container) resolve inside it and can
never point a mount at a host path (CVE-2021-30465 class). Mounts then target the
resolved file through /proc/self/fd/N, not the path string.

What the mounts may cover is checked on the resolved file, as runc does: nothing inside
/proc but the files lxcfs emulates (a bind there would catch the runtime's procfs writes,
CVE-2019-16884), only procfs on /proc itself, and proc and sysfs only on plain
directories (CVE-2023-28642). Masking binds /dev/null from an fd verified to be the null
device (CVE-2025-31133).
"""

import errno
from . import oslite as os
import _stat as stat  # the C module: the stat module is Python on top of it

from ocispec.errors import OCIError
from ocispec.tables import (
    EXTRA_MOUNT_OPTIONS, MOUNT_FLAGS, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE,
    MS_RDONLY, MS_REC, MS_REMOUNT, MS_SLAVE, PROPAGATION, RECURSIVE_MOUNT_ATTRS,
)

from . import idmap, linux, procfs
from .idmap import is_bind

_RESOLVE = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS

# runc's checkProcMount: the only destinations inside /proc a mount may have (files that
# lxcfs and the like emulate).
VALID_PROC_MOUNTS = frozenset((
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/sys/kernel/ns_last_pid",
    "/proc/sys/crypto/fips_enabled",
))

DEFAULT_DEVICES = (
    # name, major, minor
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7),
    ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
)
DEV_SYMLINKS = (
    ("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"), ("pts/ptmx", "ptmx"),
)


def fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class Root:
    """A directory fd that paths are resolved beneath."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def open(self, path: str, flags: int = os.O_PATH, resolve: int = 0) -> int:
        rel = os.path.normpath("/" + path).lstrip("/") or "."
        return linux.openat2(self.fd, rel, flags, 0, _RESOLVE | resolve)

    def mkdir_all(self, path: str, mode: int = 0o755, _depth: int = 0) -> int:
        """Resolve path in the root, creating missing directories; return an O_PATH fd.

        A dangling symlink on the way is followed the way the kernel will follow it once
        the root is /: its target is created inside the root, never outside.
        """
        try:
            return self.open(path, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            pass
        if _depth > 40:
            raise OSError(40, "too many levels of symbolic links", path)
        parent, name = os.path.split(os.path.normpath("/" + path))
        pfd = self.mkdir_all(parent, mode, _depth + 1)
        dfd = _dirfd(pfd)
        link = None
        try:
            os.mkdir(name, mode, dir_fd=dfd)
        except FileExistsError:
            try:
                link = os.readlink(name, dir_fd=dfd)
            except OSError:
                pass
        finally:
            os.close(dfd)
            os.close(pfd)
        if link is not None:
            os.close(self.mkdir_all(os.path.join(parent, link), mode, _depth + 1))
        return self.open(path, os.O_PATH | os.O_DIRECTORY)

    def mkfile(self, path: str, mode: int = 0o644) -> int:
        """Resolve path in the root, creating it as an empty file if missing."""
        try:
            return self.open(path, os.O_PATH)
        except FileNotFoundError:
            pass
        parent, name = os.path.split(os.path.normpath("/" + path))
        pfd = self.mkdir_all(parent)
        try:
            dfd = _dirfd(pfd)
            try:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd))
            finally:
                os.close(dfd)
        except FileExistsError:
            pass
        finally:
            os.close(pfd)
        return self.open(path, os.O_PATH)


def _dirfd(opath_fd: int) -> int:
    """A real directory fd from an O_PATH one (mkdirat needs search permission on it)."""
    return os.open(fdpath(opath_fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def parse_options(options) -> tuple[int, int, list[int], int, int, list[str], set[str]]:
    """mounts[].options -> (flags, cleared, propagation, attr_set, attr_clr, data, extra)."""
    flags = cleared = attr_set = attr_clr = 0
    props: list[int] = []
    data: list[str] = []
    extra: set[str] = set()
    for opt in options or ():
        if opt in MOUNT_FLAGS:
            clear, f = MOUNT_FLAGS[opt]
            if clear:
                flags &= ~f
                cleared |= f
            else:
                flags |= f
        elif opt in PROPAGATION:
            props.append(PROPAGATION[opt])
        elif opt in RECURSIVE_MOUNT_ATTRS:
            clear, a = RECURSIVE_MOUNT_ATTRS[opt]
            if clear:
                attr_clr |= a
            else:
                attr_set |= a
        elif opt in EXTRA_MOUNT_OPTIONS:
            extra.add(opt)
        else:
            data.append(opt)
    return flags, cleared, props, attr_set, attr_clr, data, extra


_ST_TO_MS = ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
             (os.ST_NOEXEC, MS_NOEXEC))
_LOCKED = MS_NOSUID | MS_NODEV | MS_NOEXEC


def _current_flags(path: str) -> int:
    f = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if f & st)


def _remount(path: str, flags: int, in_userns: bool) -> None:
    # In a user namespace the kernel refuses to clear the nosuid/nodev/noexec that the
    # source mount had, so keep them.
    if in_userns:
        flags |= _current_flags(path) & _LOCKED
    linux.mount(None, path, None, flags | MS_BIND | MS_REMOUNT)


class Setup:
    """Builds the container's mount tree in init's (new) mount namespace."""

    def __init__(self, cfg: dict, rootfs: str, bundle: str, in_userns: bool, cgroup_state: dict | None,
                 mount_trees: dict | None = None, own_mntns: bool = True):
        self.cfg = cfg
        self.lcfg = cfg.get("linux") or {}
        self.rootfs = rootfs
        self.bundle = bundle
        self.in_userns = in_userns
        self.cgroup_state = cgroup_state
        # {mounts index: fd of a detached tree of the source}, made by create's parent
        # (mount_sources): idmapped ones, whose mappings name host ids that only the host's
        # user namespace may use, and, in a user namespace, every bind source, which the
        # container's root may not be allowed to reach (runc's mountFds).
        self.mount_trees = mount_trees or {}
        # Without a mount namespace of its own the container shares its caller's (the
        # runtime-spec's "inherited"): runc then mounts there, chroots instead of
        # pivot_root and skips finalizeRootfs (no read-only remounts, root.readonly unused).
        self.own_mntns = own_mntns
        self.ro_later: list[tuple[str, int]] = []
        self.root: Root | None = None

    def prepare(self) -> None:
        """Everything before pivot_root."""
        if self.own_mntns:
            prop = self.lcfg.get("rootfsPropagation")
            linux.mount(None, "/", None, PROPAGATION[prop] if prop else MS_SLAVE | MS_REC)
            self._parent_mount_private()
            linux.mount(self.rootfs, self.rootfs, None, MS_BIND | MS_REC)
        # else: runc would still make "/" rslave and the rootfs's parent mount private, in
        # the caller's namespace: that changes the propagation of the whole host's mounts,
        # so pyrunc leaves them alone and mounts straight onto the rootfs.
        self.root = Root(self.rootfs)
        mounts = self.cfg.get("mounts") or []
        for i, m in enumerate(mounts):
            try:
                self._mount(m, self.mount_trees.get(i), f"mounts[{i}] ({m.get('destination')})")
            except OCIError:
                raise
            except OSError as e:
                raise OCIError(f"mounts[{i}] ({m.get('destination')}): {e.strerror or e}") from None
        if not any(os.path.normpath(m.get("destination", "")) == "/dev" and is_bind(m) for m in mounts):
            self._devices(default=True)
        self._devices(default=False)
        cwd = (self.cfg.get("process") or {}).get("cwd")
        if cwd:
            os.close(self.root.mkdir_all(cwd))

    def _parent_mount_private(self) -> None:
        # pivot_root needs the new root's parent mount not to be shared.
        best = "/"
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split(" ", 5)[4]
                if (self.rootfs == mp or self.rootfs.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                    best = mp
        linux.mount(None, best, None, MS_PRIVATE)

    def _mount(self, m: dict, tree: int | None = None, where: str = "mounts") -> None:
        dest = m["destination"]
        mtype = m.get("type") or ""
        src = m.get("source") or ""
        flags, _, props, attr_set, attr_clr, data, extra = parse_options(m.get("options"))
        bind = mtype == "bind" or flags & MS_BIND
        if mtype == "cgroup":
            os.close(self._checked(self.root.mkdir_all(dest), m, where, src))
            self._cgroup_mount(dest, flags)
            return
        if bind:
            if not os.path.isabs(src):
                src = os.path.join(self.bundle, src)
            try:
                # the tree, when there is one: its path may go through a directory only
                # the host's root may search
                st = os.fstat(tree) if tree is not None else os.stat(src)
            except OSError as e:
                raise OCIError(f"mount source {src} for {dest}: {e.strerror}") from None
            fd = self.root.mkdir_all(dest) if stat.S_ISDIR(st.st_mode) else self.root.mkfile(dest)
            self._checked(fd, m, where, src)
            try:
                if tree is not None:
                    idmap.attach(tree, fd, where)
                    os.close(tree)
                else:
                    linux.mount(src, fdpath(fd), None, MS_BIND | (flags & MS_REC))
            finally:
                os.close(fd)
            fd = self.root.open(dest)  # the new mount's root, not the covered dentry
            try:
                if flags & ~(MS_BIND | MS_REC):
                    _remount(fdpath(fd), flags & ~MS_REC, self.in_userns)
                self._after(fd, props, attr_set, attr_clr, extra, m)
            finally:
                os.close(fd)
            return
        if flags & MS_RDONLY and (mtype == "tmpfs" or os.path.normpath(dest) == "/dev"):
            # As runc's mountPropagate: /dev gets pts, shm and the device nodes mounted and
            # made on it, a tmpfs its copy-up; finalize() makes them read-only afterwards.
            flags &= ~MS_RDONLY
            self.ro_later.append((dest, flags))
        fd = self._plain_dir(dest, mtype, where) if mtype in ("proc", "sysfs") else self.root.mkdir_all(dest)
        self._checked(fd, m, where, src)
        under = -1
        if "tmpcopyup" in extra:
            # The directory the tmpfs will cover, to copy its contents up afterwards.
            under = os.open(fdpath(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                linux.mount(src or mtype, fdpath(fd), mtype, flags, ",".join(data) or None)
            except OSError as e:
                if mtype == "sysfs" and e.errno == 1:
                    # In a user namespace without its own network namespace, sysfs cannot be
                    # mounted: bind the host's read-only instead, as runc does.
                    linux.mount("/sys", fdpath(fd), None, MS_BIND | MS_REC)
                    _remount(fdpath(fd), MS_RDONLY | flags, True)
                else:
                    raise
        finally:
            os.close(fd)
        if props or attr_set or attr_clr or under >= 0:
            fd = self.root.open(dest, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if under >= 0:
                    _copy_tree(under, fd)
                self._after(fd, props, attr_set, attr_clr, extra, m)
            finally:
                os.close(fd)
                if under >= 0:
                    os.close(under)

    def _plain_dir(self, dest: str, mtype: str, where: str) -> int:
        """An O_PATH fd of dest, a directory reached without any symlink (made if missing):
        a rootfs whose /proc or /sys is a symlink would put the filesystem elsewhere, and
        with it what the runtime and its LSM profiles expect there (CVE-2023-28642)."""
        for attempt in (0, 1):
            try:
                return self.root.open(dest, os.O_PATH | os.O_DIRECTORY, linux.RESOLVE_NO_SYMLINKS)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise OCIError(f"{where}: {dest} is a symlink in the rootfs (or its path goes "
                                   f"through one); {mtype} must be mounted on an ordinary directory: "
                                   "make it a directory in the rootfs") from None
                if e.errno == errno.ENOTDIR:
                    raise OCIError(f"{where}: {dest} in the rootfs is not a directory; {mtype} must "
                                   "be mounted on an ordinary directory") from None
                if e.errno != errno.ENOENT or attempt:
                    raise
            os.close(self.root.mkdir_all(dest))
        raise AssertionError("unreachable")

    def _checked(self, fd: int, m: dict, where: str, src: str) -> int:
        """fd, once the file it resolved to may be mounted on (runc's checkProcMount); closed
        and an OCIError otherwise."""
        try:
            self._check_proc(fd, m, where, src)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_proc(self, fd: int, m: dict, where: str, src: str) -> None:
        full = procfs.fd_path(fd)
        # both are canonical (a /proc fd link and the realpath'd rootfs): the rest is the relpath
        prefix = self.rootfs.rstrip("/") + "/"
        rel = full[len(prefix):] if full.startswith(prefix) else None
        on_proc = linux.fstatfs_type(fd) == procfs.PROC_SUPER_MAGIC
        if rel == "proc":
            if m.get("type") == "proc":
                return
            if is_bind(m):
                try:
                    sfd = os.open(src, os.O_PATH | os.O_CLOEXEC)
                except OSError as e:
                    raise OCIError(f"{where}: mount source {src}: {e.strerror}") from None
                try:
                    if linux.fstatfs_type(sfd) == procfs.PROC_SUPER_MAGIC:
                        return
                finally:
                    os.close(sfd)
            raise OCIError(f"{where}: /proc cannot be mounted because it is not of type proc "
                           "(use type proc, or bind a procfs)")
        inside = rel is not None and rel.startswith("proc/")
        if not (inside or on_proc) or (inside and "/" + rel in VALID_PROC_MOUNTS):
            return
        shown = "/" + rel if rel else full
        raise OCIError(f"{where}: {shown} cannot be mounted because it is inside /proc "
                       f"(the destination resolves there; only {', '.join(sorted(VALID_PROC_MOUNTS))} "
                       "may be)")

    def _after(self, fd, props, attr_set, attr_clr, extra, m) -> None:
        for p in props:
            linux.mount(None, fdpath(fd), None, p)
        if attr_set or attr_clr:
            linux.mount_setattr(fd, "", linux.AT_EMPTY_PATH | linux.AT_RECURSIVE, attr_set, attr_clr)

    def _cgroup_mount(self, dest: str, flags: int) -> None:
        fd = self.root.mkdir_all(dest)
        try:
            from . import cgroups
        except ImportError:  # cgroup drivers not present: a read-only view of the host's
            try:
                linux.mount("/sys/fs/cgroup", fdpath(fd), None, MS_BIND | MS_REC)
            finally:
                os.close(fd)
            fd = self.root.open(dest)
            try:
                _remount(fdpath(fd), MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, True)
            finally:
                os.close(fd)
            return
        try:
            path = os.readlink(fdpath(fd))
        finally:
            os.close(fd)
        m = cgroups.Manager.from_state(self.cgroup_state) if self.cgroup_state else None
        cgroupns = any(n.get("type") == "cgroup" for n in self.lcfg.get("namespaces") or [])
        cgroups.mount(m, path, flags, cgroupns)

    def _devices(self, default: bool) -> None:
        devfd = None
        if default:
            entries = [{"path": f"/dev/{n}", "type": "c", "major": ma, "minor": mi, "fileMode": 0o666,
                        "uid": 0, "gid": 0} for n, ma, mi in DEFAULT_DEVICES]
        else:
            entries = self.lcfg.get("devices") or []
        old = os.umask(0)
        try:
            for i, d in enumerate(entries):
                self._device(d, i if not default else None)
            if default:
                devfd = self.root.mkdir_all("/dev")
                dfd = _dirfd(devfd)
                try:
                    for target, name in DEV_SYMLINKS:
                        try:
                            os.symlink(target, name, dir_fd=dfd)
                        except FileExistsError:
                            pass
                    if os.path.exists("/proc/kcore"):
                        try:
                            os.symlink("/proc/kcore", "core", dir_fd=dfd)
                        except FileExistsError:
                            pass
                finally:
                    os.close(dfd)
        finally:
            os.umask(old)
            if devfd is not None:
                os.close(devfd)

    def _device(self, d: dict, index) -> None:
        path = os.path.normpath("/" + d["path"])
        parent, name = os.path.split(path)
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d["type"]]
        mode = d.get("fileMode", 0o666) & 0o7777
        where = f"linux.devices[{index}]" if index is not None else f"device {path}"
        if self.in_userns and kind != stat.S_IFIFO:
            # mknod is refused in a user namespace: bind the host's node instead.
            host = path if os.path.exists(path) else None
            if host is None:
                raise OCIError(f"{where}: cannot create {path} in a user namespace and the host has none to bind")
            fd = self.root.mkfile(path)
            try:
                linux.mount(host, fdpath(fd), None, MS_BIND)
            finally:
                os.close(fd)
            return
        pfd = self.root.mkdir_all(parent)
        dfd = _dirfd(pfd)
        try:
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                raise OCIError(f"{where}: {path} is a directory in the rootfs") from None
            dev = os.makedev(d.get("major", 0), d.get("minor", 0)) if kind != stat.S_IFIFO else 0
            try:
                os.mknod(name, kind | mode, dev, dir_fd=dfd)
            except OSError as e:
                raise OCIError(f"{where}: mknod {path}: {e.strerror}") from None
            os.chown(name, d.get("uid", 0) or 0, d.get("gid", 0) or 0, dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(dfd)
            os.close(pfd)

    def pivot(self, no_pivot: bool) -> None:
        if self.root is not None:
            self.root.close()
            self.root = None
        if not self.own_mntns:
            # runc's chroot(): the caller's mounts stay. (runc's --no-pivot would move the
            # rootfs over the caller's "/" and unmount its /proc and /sys: not here.)
            os.chdir(self.rootfs)
            os.chroot(".")
            os.chdir("/")
            return
        if no_pivot:
            self._hide_full_proc_sys()
            os.chdir(self.rootfs)
            linux.mount(self.rootfs, "/", None, 0x2000)  # MS_MOVE
            os.chroot(".")
            os.chdir("/")
            return
        old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        new = os.open(self.rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(new)
            # pivot_root(".", ".") stacks the old root on top of the new one; then detach it
            # without needing a directory for it in the rootfs.
            linux.pivot_root(".", ".")
            os.fchdir(old)
            linux.mount(None, ".", None, MS_SLAVE | MS_REC)
            linux.umount(".", linux.MNT_DETACH)
        finally:
            os.close(old)
            os.close(new)
        os.chdir("/")
        prop = self.lcfg.get("rootfsPropagation")
        if prop:
            # Now "/" is the container's root mount: give it the asked propagation (doing
            # this before pivot_root would change the host's root mount).
            linux.mount(None, "/", None, PROPAGATION[prop])

    def _hide_full_proc_sys(self) -> None:
        """--no-pivot: take the host's procfs and sysfs mounts away from our namespace.

        chroot leaves them in the container's mount namespace, and the kernel lets a
        nested user namespace mount a fresh procfs or sysfs whenever a fully visible one
        is there: one without the masks. runc's msMoveRoot does the same (unmount, or
        cover with a tmpfs where a user namespace locks them)."""
        prefix = self.rootfs.rstrip("/") + "/"
        for line in procfs.read("self/mountinfo").splitlines():
            f = line.split()
            sep = f.index("-")
            mp = _unescape(f[4])
            if f[3] != "/" or f[sep + 1] not in ("proc", "sysfs") or mp == self.rootfs or mp.startswith(prefix):
                continue
            try:
                # slave first: the unmount must not propagate to the host
                linux.mount(None, mp, None, MS_SLAVE | MS_REC)
            except FileNotFoundError:
                continue  # under one already taken away
            try:
                linux.umount(mp, linux.MNT_DETACH)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EPERM):
                    raise
                linux.mount("tmpfs", mp, "tmpfs", MS_RDONLY, "size=0")

    def finalize(self) -> None:
        """After pivot_root: the read-only tmpfs and /dev mounts, masked and read-only
        paths, read-only root."""
        if not self.own_mntns:
            return  # runc skips finalizeRootfs; masked/read-only paths were refused
        root = Root("/")
        null = -1
        try:
            for dest, flags in self.ro_later:
                self._remount_ro(root, dest, flags)
            for p in self.lcfg.get("readonlyPaths") or []:
                self._readonly(root, p)
            masked = self.lcfg.get("maskedPaths") or []
            if masked:
                null = _open_null(root)
            for p in masked:
                self._mask(root, p, null)
        finally:
            root.close()
            if null >= 0:
                os.close(null)
        if (self.cfg.get("root") or {}).get("readonly"):
            _remount("/", MS_RDONLY | (_current_flags("/") & _LOCKED), self.in_userns)

    def _remount_ro(self, root: Root, dest: str, flags: int) -> None:
        # runc's remountReadonly: MS_REMOUNT|MS_BIND changes only the mount's flags, which a
        # user namespace may do as long as the locked ones stay (_remount keeps them).
        try:
            fd = root.open(dest)
        except OSError as e:
            raise OCIError(f"mounts ({dest}): cannot make it read-only: {e.strerror}") from None
        try:
            _remount(fdpath(fd), (flags & ~(MS_REC | MS_BIND | MS_REMOUNT)) | MS_RDONLY, self.in_userns)
        except OSError as e:
            raise OCIError(f"mounts ({dest}): cannot make it read-only: {e.strerror}") from None
        finally:
            os.close(fd)

    def _mask(self, root: Root, path: str, null: int) -> None:
        try:
            fd = root.open(path)
        except FileNotFoundError:
            return
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                linux.mount("tmpfs", fdpath(fd), "tmpfs", MS_RDONLY, None)
            else:
                try:
                    linux.bind_fd(null, fd)
                except OSError as e:
                    raise OCIError(f"linux.maskedPaths: {path}: cannot bind the container's /dev/null "
                                   f"onto it: {os.strerror(e.errno)} (was /dev/null replaced meanwhile?)") from None
        except OSError as e:
            raise OCIError(f"linux.maskedPaths: {path}: {e.strerror}") from None
        finally:
            os.close(fd)

    def _readonly(self, root: Root, path: str) -> None:
        try:
            fd = root.open(path)
        except FileNotFoundError:
            return
        try:
            linux.mount(fdpath(fd), fdpath(fd), None, MS_BIND | MS_REC)
        except OSError as e:
            os.close(fd)
            raise OCIError(f"linux.readonlyPaths: {path}: {e.strerror}") from None
        os.close(fd)
        fd = root.open(path)
        try:
            _remount(fdpath(fd), MS_RDONLY | MS_REC, True)
        except OSError as e:
            raise OCIError(f"linux.readonlyPaths: {path}: {e.strerror}") from None
        finally:
            os.close(fd)


def _open_null(root: Root) -> int:
    """An O_PATH fd of the container's /dev/null, verified to be the null device (char 1:3):
    masking binds from this fd, so a /dev/null swapped for a file (by a co-tenant of a
    shared /dev, say) cannot become what a masked path shows (CVE-2025-31133)."""
    try:
        fd = root.open("/dev/null")
    except OSError as e:
        raise OCIError(f"linux.maskedPaths: cannot open the container's /dev/null to mask with: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        kind = "character device %d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)) \
            if stat.S_ISCHR(st.st_mode) else _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
        raise OCIError(f"linux.maskedPaths: the container's /dev/null is a {kind}, not the null "
                       "device (char 1:3); refusing to mask with it")
    return fd


_KINDS = {stat.S_IFREG: "regular file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink",
          stat.S_IFBLK: "block device", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes come as octal escapes."""
    if "\\" not in field:
        return field
    out, i, b = bytearray(), 0, os.fsencode(field)
    while i < len(b):
        if b[i] == 0x5C and i + 3 < len(b) and b[i + 1:i + 4].isdigit():
            out.append(int(b[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(b[i])
            i += 1
    return os.fsdecode(bytes(out))


def _copy_tree(src: int, dst: int) -> None:
    """Copy a directory's contents (fds, never following links) with owners and modes."""
    for e in os.scandir(src):
        st = e.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(e.name, 0o700, dir_fd=dst)
            s2 = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            d2 = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
            try:
                _copy_tree(s2, d2)
            finally:
                os.close(s2)
                os.close(d2)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(e.name, dir_fd=src), e.name, dir_fd=dst)
        elif stat.S_ISREG(st.st_mode):
            fi = os.open(e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            fo = os.open(e.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dst)
            try:
                while os.sendfile(fo, fi, None, 1 << 20):
                    pass
            finally:
                os.close(fi)
                os.close(fo)
        else:
            os.mknod(e.name, st.st_mode, st.st_rdev, dir_fd=dst)
        os.chown(e.name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(e.name, stat.S_IMODE(st.st_mode), dir_fd=dst)
    st = os.fstat(src)
    os.fchown(dst, st.st_uid, st.st_gid)
    os.fchmod(dst, stat.S_IMODE(st.st_mode))
