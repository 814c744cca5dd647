"""What privileges.prepare + finalize cost on a container start (docker-like process: 14 caps,
one rlimit, oomScoreAdj, a non-root user with groups, noNewPrivileges), measured in a forked
child per sample. Usage: python bench/privileges_apply.py [N]   (as root)"""

import os
import statistics
import sys
import time

CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
PROCESS = {"capabilities": {k: CAPS for k in ("bounding", "effective", "permitted")},
           "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}], "oomScoreAdj": 100,
           "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}, "noNewPrivileges": True}


def sample():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        t0 = time.perf_counter()
        from pyrunc import privileges
        t1 = time.perf_counter()
        privileges.prepare(PROCESS, {})
        t2 = time.perf_counter()
        privileges.finalize(PROCESS)
        t3 = time.perf_counter()
        os.write(w, f"{t1-t0} {t2-t1} {t3-t2}".encode())
        os._exit(0)
    os.close(w)
    out = [float(x) for x in os.read(r, 100).split()]
    os.close(r)
    os.waitpid(pid, 0)
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    import ctypes  # noqa: F401 - the runtime has it loaded already (linux.py)
    rows = [sample() for _ in range(n)]
    for name, col in zip(("import pyrunc.privileges", "prepare", "finalize"), zip(*rows)):
        print(f"  {name:26s} median {statistics.median(col)*1e3:6.2f} ms")


if __name__ == "__main__":
    main()
