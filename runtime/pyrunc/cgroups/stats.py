"""Statistics shaped like runc's `events --stats` "data" object."""

from .. import oslite as os

from .files import read, read_int, read_keyed

_USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def hugepage_sizes() -> list:
    """Huge page sizes of this host in the spec's spelling ('2MB', '1GB')."""
    out = []
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return out
    for n in names:
        kb = int(n[len("hugepages-"):-len("kB")])
        for unit, size in (("GB", 1 << 20), ("MB", 1 << 10), ("KB", 1)):
            if kb >= size and kb % size == 0:
                out.append(f"{kb // size}{unit}")
                break
    return sorted(out, key=lambda s: (len(s), s))


def _ints(text: str) -> list:
    return [int(x) for x in text.split()]


def _blkio_entries(d: str, name: str) -> list:
    out = []
    try:
        text = read(d, name)
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, minor = parts[0].split(":")
            out.append({"major": int(major), "minor": int(minor), "op": parts[1],
                        "value": int(parts[2])})
    return out


def _mem_entry(d: str, prefix: str) -> dict:
    return {"limit": read_int(d, prefix + "limit_in_bytes"),
            "usage": read_int(d, prefix + "usage_in_bytes"),
            "max": read_int(d, prefix + "max_usage_in_bytes"),
            "failcnt": read_int(d, prefix + "failcnt")}


def collect(m) -> dict:
    s = {"cpu": {"usage": {"total": 0, "percpu": [], "percpu_kernel": [], "percpu_user": [],
                           "kernel": 0, "user": 0},
                 "throttling": {"periods": 0, "throttledPeriods": 0, "throttledTime": 0}},
         "cpuset": {},
         "memory": {"cache": 0, "usage": {"limit": 0, "usage": 0, "max": 0, "failcnt": 0},
                    "swap": {"limit": 0, "usage": 0, "max": 0, "failcnt": 0},
                    "kernel": {"limit": 0, "usage": 0, "max": 0, "failcnt": 0},
                    "kernelTCP": {"limit": 0, "usage": 0, "max": 0, "failcnt": 0},
                    "raw": {}},
         "pids": {"current": 0, "limit": 0},
         "blkio": {"ioServiceBytesRecursive": [], "ioServicedRecursive": []},
         "hugetlb": {},
         "intel_rdt": {},
         "network_interfaces": None}
    v1, v2 = m.v1, m.v2
    v2c = set()
    if v2:
        try:
            v2c = set(read(v2, "cgroup.controllers").split())
        except OSError:
            pass
    cpu, usage = s["cpu"], s["cpu"]["usage"]
    if "cpuacct" in v1:
        d = v1["cpuacct"]
        usage["total"] = read_int(d, "cpuacct.usage")
        for key, name in (("percpu", "cpuacct.usage_percpu"),
                          ("percpu_kernel", "cpuacct.usage_percpu_sys"),
                          ("percpu_user", "cpuacct.usage_percpu_user")):
            try:
                usage[key] = _ints(read(d, name))
            except OSError:
                pass
        st = read_keyed(d, "cpuacct.stat")
        usage["user"] = st.get("user", 0) * 1_000_000_000 // _USER_HZ
        usage["kernel"] = st.get("system", 0) * 1_000_000_000 // _USER_HZ
    elif v2:
        st = read_keyed(v2, "cpu.stat")
        usage["total"] = st.get("usage_usec", 0) * 1000
        usage["user"] = st.get("user_usec", 0) * 1000
        usage["kernel"] = st.get("system_usec", 0) * 1000
    d = v1.get("cpu") or (v2 if "cpu" in v2c else None)
    if d:
        st = read_keyed(d, "cpu.stat")
        cpu["throttling"] = {"periods": st.get("nr_periods", 0),
                             "throttledPeriods": st.get("nr_throttled", 0),
                             "throttledTime": st.get("throttled_time",
                                                     st.get("throttled_usec", 0) * 1000)}
    d = v1.get("cpuset") or (v2 if "cpuset" in v2c else None)
    if d:
        s["cpuset"] = _cpuset(d, v1=("cpuset" in v1))
    mem = s["memory"]
    if "memory" in v1:
        d = v1["memory"]
        raw = read_keyed(d, "memory.stat")
        mem["raw"] = raw
        mem["cache"] = raw.get("total_cache", raw.get("cache", 0))
        mem["usage"] = _mem_entry(d, "memory.")
        mem["swap"] = _mem_entry(d, "memory.memsw.")
        mem["kernel"] = _mem_entry(d, "memory.kmem.")
        mem["kernelTCP"] = _mem_entry(d, "memory.kmem.tcp.")
    elif "memory" in v2c:
        raw = read_keyed(v2, "memory.stat")
        mem["raw"] = raw
        mem["cache"] = raw.get("file", 0)
        mem["usage"] = {"limit": read_int(v2, "memory.max"),
                        "usage": read_int(v2, "memory.current"),
                        "max": read_int(v2, "memory.peak"),
                        "failcnt": read_keyed(v2, "memory.events").get("max", 0)}
        mem["swap"] = {"limit": read_int(v2, "memory.swap.max"),
                       "usage": read_int(v2, "memory.swap.current"), "max": 0,
                       "failcnt": read_keyed(v2, "memory.swap.events").get("max", 0)}
    d = v1.get("pids") or (v2 if "pids" in v2c else None)
    if d:
        s["pids"] = {"current": read_int(d, "pids.current"), "limit": read_int(d, "pids.max")}
    if "blkio" in v1:
        d = v1["blkio"]
        for key, names in (("ioServiceBytesRecursive",
                            ("blkio.io_service_bytes_recursive",
                             "blkio.bfq.io_service_bytes_recursive",
                             "blkio.throttle.io_service_bytes_recursive")),
                           ("ioServicedRecursive",
                            ("blkio.io_serviced_recursive", "blkio.bfq.io_serviced_recursive",
                             "blkio.throttle.io_serviced_recursive"))):
            for name in names:
                if os.path.exists(f"{d}/{name}"):
                    s["blkio"][key] = _blkio_entries(d, name)
                    break
    elif "io" in v2c:
        _io_stat_v2(v2, s["blkio"])
    sizes = None
    if "hugetlb" in v1:
        sizes = hugepage_sizes()
        for size in sizes:
            d = v1["hugetlb"]
            s["hugetlb"][size] = {"usage": read_int(d, f"hugetlb.{size}.usage_in_bytes"),
                                  "max": read_int(d, f"hugetlb.{size}.max_usage_in_bytes"),
                                  "failcnt": read_int(d, f"hugetlb.{size}.failcnt")}
    elif "hugetlb" in v2c:
        for size in hugepage_sizes():
            s["hugetlb"][size] = {"usage": read_int(v2, f"hugetlb.{size}.current"),
                                  "max": read_int(v2, f"hugetlb.{size}.max"),
                                  "failcnt": read_keyed(v2, f"hugetlb.{size}.events")
                                  .get("max", 0)}
    return s


def _ranges(text: str) -> list:
    """'0-2,5' -> [0, 1, 2, 5]"""
    out = []
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _cpuset(d: str, v1: bool) -> dict:
    out = {}
    for key, name in (("cpus", "effective_cpus"), ("mems", "effective_mems")):
        try:
            out[key] = _ranges(read(d, "cpuset." + name))
        except (OSError, ValueError):
            pass
    if v1:
        for key in ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
                    "memory_spread_page", "memory_spread_slab", "memory_pressure",
                    "sched_load_balance", "sched_relax_domain_level"):
            out[key] = read_int(d, "cpuset." + key)
    return out


def _io_stat_v2(d: str, out: dict) -> None:
    try:
        text = read(d, "io.stat")
    except OSError:
        return
    for line in text.splitlines():
        dev, *kvs = line.split()
        major, minor = (int(x) for x in dev.split(":"))
        kv = dict(x.split("=", 1) for x in kvs)
        for op, key, name in (("Read", "ioServiceBytesRecursive", "rbytes"),
                              ("Write", "ioServiceBytesRecursive", "wbytes"),
                              ("Read", "ioServicedRecursive", "rios"),
                              ("Write", "ioServicedRecursive", "wios")):
            out[key].append({"major": major, "minor": minor, "op": op,
                             "value": int(kv.get(name, 0))})
