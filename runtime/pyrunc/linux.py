"""The Linux system calls Python 3.11's os module lacks, through ctypes' C types (ffi).

This is the seam under the runtime: everything that mounts, unshares or pivots goes
through here, so it is the one place to look when a syscall misbehaves. Each wrapper
raises OSError with errno and the call's arguments, like the os module does.

It holds the one loaded libc (`libc`, ffi's) and the one errno check (`check`): the modules
with calls of their own (capabilities, seccomp, scheduling, the cgroup drivers) use these
two and `syscall`, never a library of their own.
"""

from . import oslite as os

from . import ffi

libc = ffi.libc
libc.syscall.restype = ffi.c_long  # fds and sizes; the default c_int would cut them
libc.prctl.argtypes = (ffi.c_int, ffi.c_ulong, ffi.c_ulong, ffi.c_ulong, ffi.c_ulong)

# x86_64 syscall numbers for calls glibc 2.36 has no wrapper for.
SYS_pivot_root = 155
SYS_keyctl = 250
SYS_open_tree = 428
SYS_move_mount = 429
SYS_clone3 = 435
SYS_openat2 = 437
SYS_mount_setattr = 442

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40


def check(ret: int, what: str | None = None, *names) -> int:
    """ret, or OSError(errno, "what: reason" or just the reason, *names) when it is < 0."""
    if ret < 0:
        err = ffi.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}" if what else os.strerror(err), *names[:1])
    return ret



def syscall(nr: int, *args) -> int:
    """syscall(2) for calls glibc has no wrapper for; OSError(errno, reason) on failure.
    Python ints among args go as C ints: wrap wider values in ffi's C types."""
    return check(libc.syscall(ffi.c_long(nr), *args))


def personality(persona: int) -> int:
    return check(libc.personality(ffi.c_ulong(persona)), "personality")


def capset(header, data) -> None:
    """capset(2) with a struct __user_cap_header_struct and two data structs (ffi)."""
    check(libc.capset(ffi.byref(header), data), "capset")


def _b(path) -> bytes | None:
    if path is None:
        return None
    return os.fsencode(path)


def mount(source, target, fstype, flags: int = 0, data: str | None = None) -> None:
    ret = libc.mount(_b(source), _b(target), _b(fstype), ffi.c_ulong(flags), _b(data))
    if ret < 0:
        err = ffi.get_errno()
        raise OSError(err, f"mount {source} on {target} ({fstype or 'bind/remount'}): {os.strerror(err)}")


def umount(target, flags: int = 0) -> None:
    check(libc.umount2(_b(target), ffi.c_int(flags)), f"umount {target}")


def unshare(flags: int) -> None:
    check(libc.unshare(ffi.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    check(libc.setns(ffi.c_int(fd), ffi.c_int(nstype)), "setns")


def pivot_root(new_root, put_old) -> None:
    ret = libc.syscall(ffi.c_long(SYS_pivot_root), _b(new_root), _b(put_old))
    check(ret, "pivot_root")


AT_FDCWD = -100
RENAME_EXCHANGE = 2


def rename_exchange(a, b) -> None:
    """Swap two existing paths atomically (renameat2 RENAME_EXCHANGE)."""
    check(libc.renameat2(AT_FDCWD, _b(a), AT_FDCWD, _b(b), RENAME_EXCHANGE), "renameat2")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return check(
        libc.prctl(ffi.c_int(option), ffi.c_ulong(arg2), ffi.c_ulong(arg3),
                    ffi.c_ulong(arg4), ffi.c_ulong(arg5)),
        "prctl",
    )


def sethostname(name: str) -> None:
    b = name.encode()
    check(libc.sethostname(b, ffi.c_size_t(len(b))), "sethostname")


def setdomainname(name: str) -> None:
    b = name.encode()
    check(libc.setdomainname(b, ffi.c_size_t(len(b))), "setdomainname")


class _OpenHow(ffi.Structure):
    _fields_ = [("flags", ffi.c_uint64), ("mode", ffi.c_uint64), ("resolve", ffi.c_uint64)]


def openat2(dirfd: int, path, flags: int, mode: int = 0, resolve: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    ret = libc.syscall(ffi.c_long(SYS_openat2), ffi.c_int(dirfd), _b(path),
                        ffi.byref(how), ffi.c_size_t(ffi.sizeof(how)))
    if ret < 0:
        err = ffi.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(path))
    return ret


def open_tree(dirfd: int, path, flags: int) -> int:
    ret = libc.syscall(ffi.c_long(SYS_open_tree), ffi.c_int(dirfd), _b(path),
                        ffi.c_uint(flags))
    return check(ret, f"open_tree {path}")


def move_mount(from_dirfd: int, from_path, to_dirfd: int, to_path, flags: int) -> None:
    ret = libc.syscall(ffi.c_long(SYS_move_mount), ffi.c_int(from_dirfd), _b(from_path),
                        ffi.c_int(to_dirfd), _b(to_path), ffi.c_uint(flags))
    check(ret, f"move_mount to {to_path}")


def bind_fd(src_fd: int, dst_fd: int) -> None:
    """Bind the file open at src_fd onto the one open at dst_fd (O_PATH fds are enough).

    Only fds, no path: nothing can be swapped in between a check of either file and the
    mount (CVE-2025-31133, CVE-2025-52565), and no /proc/self/fd path is looked up."""
    tree = libc.syscall(ffi.c_long(SYS_open_tree), ffi.c_int(src_fd), b"",
                         ffi.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH))
    check(tree, "open_tree")
    try:
        ret = libc.syscall(ffi.c_long(SYS_move_mount), ffi.c_int(tree), b"", ffi.c_int(dst_fd),
                            b"", ffi.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))
        check(ret, "move_mount")
    finally:
        os.close(tree)


def fstatfs_type(fd: int) -> int:
    """f_type of fstatfs(2) (the filesystem's magic number), which os.fstatvfs lacks."""
    buf = ffi.create_string_buffer(128)  # struct statfs is 120 bytes; f_type comes first
    check(libc.fstatfs(ffi.c_int(fd), buf), "fstatfs")
    return int.from_bytes(buf.raw[:8], "little")


class _MountAttr(ffi.Structure):
    _fields_ = [("attr_set", ffi.c_uint64), ("attr_clr", ffi.c_uint64),
                ("propagation", ffi.c_uint64), ("userns_fd", ffi.c_uint64)]


def mount_setattr(dirfd: int, path, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
    ret = libc.syscall(ffi.c_long(SYS_mount_setattr), ffi.c_int(dirfd), _b(path),
                        ffi.c_uint(flags), ffi.byref(attr), ffi.c_size_t(ffi.sizeof(attr)))
    check(ret, f"mount_setattr {path}")


KEYCTL_SETPERM = 5
KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring(name: str) -> int:
    serial = libc.syscall(ffi.c_long(SYS_keyctl), ffi.c_int(KEYCTL_JOIN_SESSION_KEYRING),
                           name.encode())
    return check(serial, "keyctl join session keyring")


def keyring_setperm(serial: int, perm: int) -> None:
    check(libc.syscall(ffi.c_long(SYS_keyctl), ffi.c_int(KEYCTL_SETPERM), ffi.c_int(serial),
                         ffi.c_uint32(perm)), "keyctl setperm")


def set_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17


class _CloneArgs(ffi.Structure):
    _fields_ = [(n, ffi.c_uint64) for n in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def clone(flags: int = 0, cgroup_fd: int = -1) -> int:
    """os.fork() through clone3(2): the child born in the new namespaces `flags` asks for
    (CLONE_NEW*: with CLONE_NEWPID it is pid 1 of its own) and, given cgroup_fd, in that
    cgroup2 directory (CLONE_INTO_CGROUP, Linux 5.7): no cgroup.procs write, so none of the
    RCU grace period (7-11 ms here) the kernel's global threadgroup lock costs a write of
    another process. Returns 0 in the child and its pid in the parent, like os.fork;
    OSError where the kernel refuses (ENOSYS, or E2BIG/EINVAL before 5.7, EACCES/ENOENT
    from a user or cgroup namespace): then nothing was forked. Only for a single-threaded
    caller."""
    if cgroup_fd >= 0:
        flags |= CLONE_INTO_CGROUP
    args = _CloneArgs(flags=flags, exit_signal=_SIGCHLD, cgroup=max(cgroup_fd, 0))
    # Like a fork from C: the child continues from here with a copy of this process.
    pid = check(libc.syscall(ffi.c_long(SYS_clone3), ffi.byref(args),
                             ffi.c_size_t(ffi.sizeof(args))), "clone3")
    if pid == 0:
        # What os.fork does in the child: the interpreter's thread, lock and signal state
        # made the child's own, and os.register_at_fork's child hooks run.
        ffi.pythonapi.PyOS_AfterFork_Child()
    return pid


def has_clone3() -> bool:
    """Whether clone3(2) can be called here: where it exists it answers a too-small argument
    with EINVAL; ENOSYS (or EPERM) where the kernel or a seccomp filter (docker's) lacks it."""
    ret = libc.syscall(ffi.c_long(SYS_clone3), None, ffi.c_size_t(0))
    return ret < 0 and ffi.get_errno() == 22  # EINVAL


def fork_maybe_into_cgroup(cgroup_fd: int, flags: int = 0) -> tuple[int, bool]:
    """(os.fork()'s result, whether the child was born in cgroup_fd's cgroup2 directory):
    clone() into it with `flags`, or where there is no fd (-1) or the kernel refuses the
    cgroup, outside it (a plain fork when no flags ask for clone3); then the caller's parent
    must put the child there. cgroup_fd is closed."""
    try:
        if cgroup_fd >= 0:
            try:
                return clone(flags, cgroup_fd), True
            except OSError:
                pass
        return (clone(flags) if flags else os.fork()), False
    finally:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)


def set_dumpable(on: bool) -> None:
    prctl(PR_SET_DUMPABLE, 1 if on else 0)


MFD_CLOEXEC = 0x1
MFD_ALLOW_SEALING = 0x2
MFD_EXEC = 0x10           # Linux 6.3: executable even where vm.memfd_noexec asks otherwise
F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_EXEC = 0x1, 0x2, 0x4, 0x8, 0x20


def sealed_memfd(name: str, data: bytes, exec_: bool = False) -> int:
    """A close-on-exec memfd holding data, sealed so that nobody (the container included)
    can change it, its size or (exec_) its mode. Returns the fd."""
    flags = MFD_CLOEXEC | MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create(name, flags | (MFD_EXEC if exec_ else 0))
    except OSError as e:
        if e.errno != 22:  # EINVAL: a kernel before 6.3 knows no MFD_EXEC
            raise
        fd = os.memfd_create(name, flags)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(5, f"memfd {name}: short write")
        seals = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
        if libc.fcntl(ffi.c_int(fd), ffi.c_int(F_ADD_SEALS),
                       ffi.c_int(seals | F_SEAL_EXEC)) < 0:
            # F_SEAL_EXEC is Linux 6.3's: older kernels refuse the whole call with EINVAL
            check(libc.fcntl(ffi.c_int(fd), ffi.c_int(F_ADD_SEALS), ffi.c_int(seals)),
                   f"memfd {name}: seal")
    except BaseException:
        os.close(fd)
        raise
    return fd


def close_fds_except(keep) -> None:
    """Close every fd not in `keep` (CVE-2024-21626: no host fd may reach the container)."""
    keep = sorted(set(keep))
    # Bound the range by the highest open fd: when a seccomp filter refuses close_range(2),
    # os.closerange falls back to one close() per number, and up to 2^31 that never ends.
    try:
        top = max(map(int, os.listdir("/proc/self/fd"))) + 1
    except (OSError, ValueError):
        top = 1 << 20
    lo = 0
    for fd in keep + [max(top, keep[-1] + 1 if keep else 0)]:
        if fd > lo:
            os.closerange(lo, fd)
        lo = fd + 1
