"""What pyrunc's cgroup work costs on a container start and delete, on this host's layout:
the import of pyrunc.cgroups, Manager.for_container + create + add, set (memory, pids, cpu,
deny-all devices plus runc's defaults) and destroy, each sample in a forked child of a
process that has not imported pyrunc, so imports and the mount table parse count every time.
Usage: python bench/cgroups_ops.py [N]   (as root; cgroups named bench-cg-PID-I, removed)"""

import os
import statistics
import subprocess
import sys
import time

RESOURCES = {"memory": {"limit": 256 << 20, "reservation": 128 << 20},
             "pids": {"limit": 100}, "cpu": {"shares": 512, "quota": 50000, "period": 100000},
             "devices": [{"allow": False, "access": "rwm"}]}


def sample(i: int, target: int):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        t0 = time.perf_counter()
        from pyrunc.cgroups import Manager
        t1 = time.perf_counter()
        m = Manager.for_container(f"bench-cg-{os.getpid()}-{i}", None)
        m.create()
        m.add(target)
        ta = time.perf_counter()
        m.set(RESOURCES)
        t2 = time.perf_counter()
        home = Manager.from_state(m.to_state())  # as `delete` rebuilds it
        park = Manager.for_container(f"bench-cg-{os.getpid()}-{i}-park", None)
        park.create()
        park.add(target)  # move the task out so the cgroup can go
        t3 = time.perf_counter()
        home.destroy()
        t4 = time.perf_counter()
        park.add(target)
        os.write(w, f"{t1-t0} {ta-t1} {t2-ta} {t4-t3} {park.to_state()!r}".encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        *times, park = f.read().split(" ", 4)
    os.waitpid(pid, 0)
    return [float(t) for t in times], eval(park)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    sleeper = subprocess.Popen(["sleep", "600"])
    parks = []
    try:
        rows = []
        for i in range(n):
            times, park = sample(i, sleeper.pid)
            rows.append(times)
            parks.append(park)
    finally:
        sleeper.kill()
        sleeper.wait()
        from pyrunc.cgroups import Manager
        for p in parks:
            Manager.from_state(p).destroy()
    for k, name in enumerate(("import pyrunc.cgroups", "for_container+create+add",
                              "set(memory, pids, cpu, devices)", "destroy")):
        vals = sorted(r[k] * 1000 for r in rows)
        print(f"{name:42s} median {statistics.median(vals):6.2f} ms  "
              f"min {vals[0]:6.2f} ms  (n={n})")


if __name__ == "__main__":
    main()
