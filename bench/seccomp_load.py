"""What seccomp.load costs on a container start, for a docker-default-sized profile.

Each sample forks a child that does exactly what the init does: import pyrunc.seccomp (cold,
in a fresh child of a parent that has not imported it), parse + compile + load the profile.
Usage: python bench/seccomp_load.py [N]   (needs root or no_new_privs)
"""

import ctypes
import json  # noqa: F401 - the runtime has it loaded already (config.json)
import os
import statistics
import sys
import time


def native_names(limit=300):
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    libc = ctypes.CDLL(None)
    libc.free.argtypes = (ctypes.c_void_p,)
    names = []
    for nr in range(500):
        p = lib.seccomp_syscall_resolve_num_arch(0, nr)
        if p:
            names.append(ctypes.string_at(p).decode())
            libc.free(p)
    return [n for n in names if n not in ("personality", "clone", "socket")][:limit]


def docker_like():
    # the shape of moby's default profile: one big allow list with default ERRNO, a few
    # argument rules, three arches.
    return {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": native_names(), "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"} for v in (0, 8, 0x20000, 0x20008, 0xffffffff)]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
        ],
    }


def sample(profile, nnp, cache_dir=None):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        t0 = time.perf_counter()
        from pyrunc import seccomp  # noqa: first import in this child
        t1 = time.perf_counter()
        if nnp:
            ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)
        p = seccomp.Profile(profile)
        t2 = time.perf_counter()
        prog = seccomp.compile(profile, cache_dir) if cache_dir else p.compile()
        t3 = time.perf_counter()
        from pyrunc import libseccomp
        libseccomp.load_bpf(prog, 0)
        t4 = time.perf_counter()
        os.write(w, f"{t1-t0} {t2-t1} {t3-t2} {t4-t3} {len(prog)//8}".encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 200).decode().split()
    os.close(r)
    os.waitpid(pid, 0)
    return [float(x) for x in out[:4]], int(out[4])


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    prof = docker_like()
    report(prof, [sample(prof, nnp=True) for _ in range(n)], n, "no cache")
    import tempfile
    with tempfile.TemporaryDirectory(prefix="security-bench-") as d:
        sample(prof, True, d)
        report(prof, [sample(prof, True, d) for _ in range(n)], n, "seccomp.compile(cache_dir) hit")


def report(prof, rows, n, what):
    insns = rows[0][1]
    cols = list(zip(*(r[0] for r in rows)))
    names = ["import pyrunc.seccomp", "parse/validate", "compile (libseccomp -> BPF)", "seccomp(2) load"]
    total = [sum(r[0]) for r in rows]
    print(f"{what}: profile of {len(prof['syscalls'][0]['names']) + 3} syscalls, 3 arches, {insns} BPF instructions; n={n}")
    for name, c in zip(names, cols):
        print(f"  {name:30s} median {statistics.median(c)*1e3:7.2f} ms")
    print(f"  {'total':30s} median {statistics.median(total)*1e3:7.2f} ms  (min {min(total)*1e3:.2f}, max {max(total)*1e3:.2f})")


if __name__ == "__main__":
    main()
