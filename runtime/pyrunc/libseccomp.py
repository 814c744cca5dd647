"""The few libseccomp calls pyrunc needs, through ctypes, plus the seccomp(2) syscall.

Why not pyseccomp: importing it costs ~15 ms on every container start (ctypes.util.find_library
runs `ldconfig -p`), and it exposes neither seccomp_notify_fd nor arch name resolution. We only
use libseccomp to compile the filter to BPF (the same compiler runc and crun use) and load the
program ourselves with seccomp(2), as crun does: that gives us every filter flag this kernel
knows (WAIT_KILLABLE_RECV needs libseccomp 2.6 otherwise) and the NEW_LISTENER fd directly.
"""

from . import oslite as os

from ocispec.errors import OCIError

from . import ffi, linux

_lib = None

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
_NR_SECCOMP = {"x86_64": 317, "aarch64": 277, "riscv64": 277, "ppc64le": 358, "s390x": 348}
# Read once at import: linux.personality LINUX32 makes uname() say i686 afterwards.
_MACHINE = os.uname().machine
NR_SCMP_ERROR = -1


class ArgCmp(ffi.Structure):
    _fields_ = [("arg", ffi.c_uint), ("op", ffi.c_int),
                ("datum_a", ffi.c_uint64), ("datum_b", ffi.c_uint64)]


class _Version(ffi.Structure):
    _fields_ = [("major", ffi.c_uint), ("minor", ffi.c_uint), ("micro", ffi.c_uint)]


class _SockFprog(ffi.Structure):
    _fields_ = [("len", ffi.c_ushort), ("filter", ffi.c_void_p)]


def lib():
    """libseccomp, loaded on first use (never at import: most containers have no seccomp)."""
    global _lib
    if _lib is None:
        try:
            l = ffi.CDLL("libseccomp.so.2")
        except OSError as e:
            raise OCIError(f"linux.seccomp: libseccomp is not installed ({e})",
                           hint="install libseccomp2") from None
        vp, u32, c_int = ffi.c_void_p, ffi.c_uint32, ffi.c_int
        sigs = {
            "seccomp_init": ((u32,), vp), "seccomp_release": ((vp,), None),
            "seccomp_arch_add": ((vp, u32), c_int),
            "seccomp_arch_resolve_name": ((ffi.c_char_p,), u32),
            "seccomp_syscall_resolve_name": ((ffi.c_char_p,), c_int),
            "seccomp_syscall_resolve_name_arch": ((u32, ffi.c_char_p), c_int),
            "seccomp_rule_add_array": ((vp, u32, c_int, ffi.c_uint, ffi.POINTER(ArgCmp)), c_int),
            "seccomp_attr_set": ((vp, c_int, u32), c_int),
            "seccomp_export_bpf": ((vp, c_int), c_int),
            "seccomp_version": ((), ffi.POINTER(_Version)),
            "seccomp_arch_native": ((), u32),
        }
        for name, (args, res) in sigs.items():
            f = getattr(l, name)
            f.argtypes, f.restype = args, res
        _lib = l
    return _lib


def version() -> tuple[int, int, int]:
    v = lib().seccomp_version().contents
    return v.major, v.minor, v.micro


def native_arch() -> int:
    return lib().seccomp_arch_native()


def arch_value(name: str) -> int:
    """SCMP_ARCH_X86_64 -> its AUDIT_ARCH value, 0 when this libseccomp lacks it."""
    return lib().seccomp_arch_resolve_name(name.removeprefix("SCMP_ARCH_").lower().encode())


class Filter:
    """A libseccomp filter context, released on close()."""

    def __init__(self, default_action: int):
        self.ctx = lib().seccomp_init(default_action)
        if not self.ctx:
            raise OCIError("linux.seccomp.defaultAction: libseccomp refused it (seccomp_init failed)")

    def close(self) -> None:
        if self.ctx:
            lib().seccomp_release(self.ctx)
            self.ctx = None

    def add_arch(self, arch: int) -> int:
        return lib().seccomp_arch_add(self.ctx, arch)

    def add_rule(self, action: int, nr: int, conds: list[tuple[int, int, int, int]]) -> int:
        arr = (ArgCmp * len(conds))(*(ArgCmp(*c) for c in conds)) if conds else None
        return lib().seccomp_rule_add_array(self.ctx, action, nr, len(conds), arr)

    def export_bpf(self) -> bytes:
        fd = os.memfd_create("pyrunc-seccomp", os.MFD_CLOEXEC)
        try:
            r = lib().seccomp_export_bpf(self.ctx, fd)
            if r < 0:
                raise OCIError(f"linux.seccomp: compiling the filter: {os.strerror(-r)}", errno=-r)
            size = os.lseek(fd, 0, os.SEEK_CUR)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)


def resolve_syscall(name: str, arch: int | None = None) -> int:
    if arch is None:
        return lib().seccomp_syscall_resolve_name(name.encode())
    return lib().seccomp_syscall_resolve_name_arch(arch, name.encode())


def _seccomp(op: int, flags: int, arg) -> int:
    """seccomp(2); OSError on failure."""
    nr = _NR_SECCOMP.get(_MACHINE)
    if nr is None:
        raise OCIError(f"linux.seccomp: not supported on {_MACHINE}")
    return linux.syscall(nr, op, ffi.c_uint(flags), arg)


def load_bpf(prog: bytes, flags: int) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER); returns the notify fd with NEW_LISTENER, else 0.
    Raises OSError."""
    buf = ffi.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ffi.addressof(buf))
    return _seccomp(SECCOMP_SET_MODE_FILTER, flags, ffi.byref(fprog))


def action_available(action: int) -> bool:
    a = ffi.c_uint32(action)
    try:
        return _seccomp(SECCOMP_GET_ACTION_AVAIL, 0, ffi.byref(a)) == 0
    except OSError:
        return False


def flag_available(flag: int) -> bool:
    # A known flag gets past the flag check and fails on the NULL program with EFAULT.
    # WAIT_KILLABLE_RECV is only valid together with NEW_LISTENER.
    if flag == SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV:
        flag |= SECCOMP_FILTER_FLAG_NEW_LISTENER
    try:
        _seccomp(SECCOMP_SET_MODE_FILTER, flag, None)
    except OSError as e:
        return e.errno == 14
    return False
