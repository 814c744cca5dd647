"""Device rules on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the
container's cgroup (v2 has no devices controller).

The program mirrors v1's semantics as runc's does: an implicit "deny all", then the spec's
rules with the last matching one deciding; a rule matches when type, major and minor match
and the requested access is a subset of the rule's.
"""

from .. import oslite as os
import platform
import struct

from ocispec.errors import OCIError

from .. import ffi
from .. import linux
from .devices import F, check, with_defaults

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351,
            "riscv64": 280}.get(platform.machine())
BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH = 5, 8, 9
BPF_PROG_GET_FD_BY_ID, BPF_PROG_QUERY = 13, 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
DEV_TYPE = {"b": 1, "c": 2}          # BPF_DEVCG_DEV_*
DEV_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_*


def _insn(code, dst=0, src=0, off=0, imm=0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


# opcodes (linux/bpf_common.h + bpf.h)
LDXW = 0x61      # dst = *(u32 *)(src + off)
AND32_K = 0x54
RSH32_K = 0x74
MOV32_X = 0xbc
MOV64_K = 0xb7
JNE_K = 0x55
JNE_X = 0x5d
EXIT = 0x95
R0, R1, R2, R3, R4, R5 = range(6)


def program(rules: list) -> bytes:
    """Compile spec device rules (already checked) into BPF instructions."""
    # struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
    out = [_insn(LDXW, R2, R1, 0), _insn(AND32_K, R2, imm=0xFFFF),   # R2 = type
           _insn(LDXW, R3, R1, 0), _insn(RSH32_K, R3, imm=16),        # R3 = access
           _insn(LDXW, R4, R1, 4),                                    # R4 = major
           _insn(LDXW, R5, R1, 8)]                                    # R5 = minor
    for allow, text in reversed(rules):
        typ, majmin, access = text.split()
        major, minor = majmin.split(":")
        tests = []  # (code, reg, imm or reg) jumps to the next block when a test fails
        if typ != "a":
            tests.append([(JNE_K, R2, DEV_TYPE[typ])])
        if major != "*":
            tests.append([(JNE_K, R4, int(major))])
        if minor != "*":
            tests.append([(JNE_K, R5, int(minor))])
        bits = sum(DEV_ACCESS[c] for c in set(access))
        if bits != 7:
            tests.append([(MOV32_X, R1, R3), (AND32_K, R1, bits), (JNE_X, R1, R3)])
        flat = [i for t in tests for i in t]
        block = []
        for n, (code, reg, arg) in enumerate(flat):
            left = len(flat) - n - 1 + 2  # instructions after this one in the block
            if code == JNE_K:
                block.append(_insn(code, reg, off=left, imm=arg))
            elif code == JNE_X:
                block.append(_insn(code, reg, arg, off=left))
            elif code == MOV32_X:
                block.append(_insn(code, reg, arg))
            else:
                block.append(_insn(code, reg, imm=arg))
        block += [_insn(MOV64_K, R0, imm=int(allow)), _insn(EXIT)]
        out += block
        if not flat:
            # matches every access: earlier rules can never decide, and the verifier
            # refuses unreachable instructions
            return b"".join(out)
    out += [_insn(MOV64_K, R0, imm=0), _insn(EXIT)]
    return b"".join(out)


def _bpf(cmd: int, attr: bytes) -> int:
    if _SYS_BPF is None:
        raise OCIError(f"{F}: no bpf(2) syscall number for {platform.machine()}")
    buf = ffi.create_string_buffer(attr, len(attr))
    r = linux.syscall(_SYS_BPF, cmd, buf, len(attr))  # OSError(errno, reason) on failure
    return r, buf.raw


def load(insns: bytes) -> int:
    code = ffi.create_string_buffer(insns, len(insns))
    lic = ffi.create_string_buffer(b"Apache")
    log = ffi.create_string_buffer(65536)
    for level in (0, 1):  # ask for the verifier's log only when it refuses
        attr = struct.pack("<IIQQIIQII16s", BPF_PROG_TYPE_CGROUP_DEVICE, len(insns) // 8,
                           ffi.addressof(code), ffi.addressof(lic),
                           level, len(log) if level else 0,
                           ffi.addressof(log) if level else 0, 0, 0, b"pyrunc_dev")
        try:
            return _bpf(BPF_PROG_LOAD, attr)[0]
        except OSError as e:
            if level:
                detail = log.value.decode(errors="replace").strip().splitlines()[-1:] or [""]
                raise OCIError(f"{F}: the kernel refused the device program: "
                               f"{e.strerror.lower()} {detail[0]}", errno=e.errno) from None


def attached(cgroup_fd: int) -> list:
    """Ids of the device programs attached to a cgroup."""
    ids = (ffi.c_uint32 * 64)()
    attr = struct.pack("<IIIIQI", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                       ffi.addressof(ids), 64)
    _, raw = _bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("<I", raw, 24)[0]
    return list(ids[:count])


def set_v2(d: str, rules: list) -> None:
    """Attach a program for `rules` to the cgroup at d, replacing the one we put there."""
    checked = check(with_defaults(rules))
    prog = load(program(checked))
    cg = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        old = attached(cg)
        _bpf(BPF_PROG_ATTACH, struct.pack("<IIIII", cg, prog, BPF_CGROUP_DEVICE,
                                          BPF_F_ALLOW_MULTI, 0))
        # Programs all must allow an access: drop the previous set so an update can widen.
        for pid in old:
            fd = _bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<III", pid, 0, 0))[0]
            try:
                _bpf(BPF_PROG_DETACH, struct.pack("<IIIII", cg, fd, BPF_CGROUP_DEVICE, 0, 0))
            finally:
                os.close(fd)
    except OSError as e:
        raise OCIError(f"{F}: cannot attach the device program to {d}: "
                       f"{e.strerror.lower()}", errno=e.errno) from None
    finally:
        os.close(cg)
        os.close(prog)
