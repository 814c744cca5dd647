"""The -ENOSYS preamble runc puts in front of a seccomp filter.

A profile written for an older kernel does not list newer syscalls, so with an ERRNO default
they fail with EPERM, and libc (clone3 -> clone, statx -> fstatat, ...) only falls back on
ENOSYS. Like runc, syscalls numbered above the highest one the profile names, per arch, get
ENOSYS; everything else goes on to the libseccomp program unchanged.
"""

import struct

# classic BPF opcodes
_LD_W_ABS = 0x20
_JA = 0x05
_JEQ = 0x15
_JGT = 0x25
_JSET = 0x45
_RET = 0x06
_OFF_NR, _OFF_ARCH = 0, 4
_AUDIT_X86_64 = 0xC000003E
_SCMP_X32 = 0x4000003E  # libseccomp's token: the kernel reports x32 as x86_64 + this bit
_X32_BIT = 0x40000000
_RET_ERRNO_ENOSYS = 0x00050000 | 38


def stub(max_nr: dict[int, int]) -> bytes:
    """max_nr: libseccomp arch token -> highest syscall number the profile names on it."""
    # kernel arch -> {"x64"/"x32"/"any": max}
    per = {}
    for arch, nr in max_nr.items():
        if arch == _SCMP_X32:
            per.setdefault(_AUDIT_X86_64, {})["x32"] = nr
        elif arch == _AUDIT_X86_64:
            per.setdefault(_AUDIT_X86_64, {})["x64"] = nr
        else:
            per.setdefault(arch, {})["any"] = nr
    if not per:
        return b""
    # instructions as [code, jt, jf, k] with labels resolved below
    prog, labels = [], {}
    prog.append([_LD_W_ABS, 0, 0, _OFF_ARCH])
    for arch in per:
        prog.append([_JEQ, ("sec", arch), 0, arch])
    prog.append([_JA, 0, 0, "filter"])
    for arch, m in per.items():
        labels[("sec", arch)] = len(prog)
        prog.append([_LD_W_ABS, 0, 0, _OFF_NR])
        if arch == _AUDIT_X86_64:
            # x32 calls carry bit 30; a mode the profile has no max for goes to the filter
            prog.append([_JSET, ("x32", arch) if "x32" in m else "filter",
                         ("x64", arch) if "x64" in m else "filter", _X32_BIT])
            for mode in ("x64", "x32"):
                if mode in m:
                    labels[(mode, arch)] = len(prog)
                    prog.append([_JGT, "enosys", "filter", m[mode]])
        else:
            prog.append([_JGT, "enosys", "filter", m["any"]])
    labels["enosys"] = len(prog)
    prog.append([_RET, 0, 0, _RET_ERRNO_ENOSYS])
    labels["filter"] = len(prog)
    out = []
    for i, (code, jt, jf, k) in enumerate(prog):
        rel = lambda x: x if isinstance(x, int) else labels[x] - (i + 1)  # noqa: E731
        jt, jf = rel(jt), rel(jf)
        if code == _JA:
            k = rel(k)
        assert 0 <= jt <= 255 and 0 <= jf <= 255
        out.append(struct.pack("=HBBI", code, jt, jf, k))
    return b"".join(out)
