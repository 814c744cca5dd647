"""cgroup v1: one hierarchy per controller (or per group of co-mounted controllers)."""

import errno as _errno

from ocispec.errors import OCIError

from .files import exists, read, read_int, write

F = "linux.resources"


def _num(res: dict, key: str, field: str):
    v = res.get(key)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
        raise OCIError(f"{field}.{key}: {v!r} is not an integer")
    return v


def _size(res: dict, key: str, field: str):
    """A memory figure; 0 means "not set", as in runc (whose config zero-values it)."""
    return _num(res, key, field) or None


def set_memory(d: str, mem: dict) -> None:
    f = F + ".memory"
    limit, swap = _size(mem, "limit", f), _size(mem, "swap", f)
    # An unlimited memory with no swap given means unlimited swap too (runc's rule).
    if limit == -1 and swap is None:
        swap = -1
    memsw = "memory.memsw.limit_in_bytes"
    if swap is not None and not exists(d, memsw):
        raise OCIError(f"{f}.swap: this kernel has no swap accounting ({memsw})")
    if limit is not None and swap is not None:
        # memsw must stay >= limit at every step: raise memsw first when growing.
        if swap == -1 or read_int(d, "memory.limit_in_bytes") < swap:
            write(d, memsw, swap, f + ".swap")
            _set_limit(d, limit, f)
        else:
            _set_limit(d, limit, f)
            write(d, memsw, swap, f + ".swap")
    elif limit is not None:
        _set_limit(d, limit, f)
    elif swap is not None:
        write(d, memsw, swap, f + ".swap")
    for key, name in (("kernel", "memory.kmem.limit_in_bytes"),
                      ("kernelTCP", "memory.kmem.tcp.limit_in_bytes")):
        v = _size(mem, key, f)
        if v is None:
            continue
        if not exists(d, name):
            raise OCIError(f"{f}.{key}: this kernel has no {name}")
        write(d, name, v, f"{f}.{key}")
        # Kernels since 5.16 accept and ignore kmem limits: say so rather than pretend.
        if v > 0 and read_int(d, name) != _page_round(v):
            raise OCIError(f"{f}.{key}: this kernel ignores {name} (kernel memory limits are "
                           "deprecated)")
    v = _size(mem, "reservation", f)
    if v is not None:
        write(d, "memory.soft_limit_in_bytes", v, f + ".reservation")
    v = _num(mem, "swappiness", f)
    if v is not None and v != -1:
        if not 0 <= v <= 100:
            raise OCIError(f"{f}.swappiness: {v} is outside 0-100")
        write(d, "memory.swappiness", v, f + ".swappiness")
    if mem.get("disableOOMKiller"):
        write(d, "memory.oom_control", 1, f + ".disableOOMKiller")
    if mem.get("useHierarchy") is not None:
        write(d, "memory.use_hierarchy", int(bool(mem["useHierarchy"])), f + ".useHierarchy")


def _page_round(v: int) -> int:
    return v // 4096 * 4096


def _set_limit(d: str, limit: int, f: str) -> None:
    try:
        write(d, "memory.limit_in_bytes", limit, f + ".limit")
    except OCIError as e:
        if e.errno == _errno.EBUSY:
            usage = read_int(d, "memory.usage_in_bytes")
            raise OCIError(f"{f}.limit: cannot set {limit}: device or resource busy "
                           f"(the cgroup already uses {usage} bytes)", errno=e.errno) from None
        raise


def set_cpu(d: str, cpu: dict, parents: tuple = ()) -> None:
    f = F + ".cpu"
    shares = _num(cpu, "shares", f)
    if shares:
        write(d, "cpu.shares", shares, f + ".shares")
        got = read_int(d, "cpu.shares")
        if got != shares:  # the kernel clamps instead of refusing
            bound = "maximum" if shares > got else "minimum"
            raise OCIError(f"{f}.shares: cannot set {shares}: the {bound} allowed is {got}")
    period, quota = _num(cpu, "period", f), _num(cpu, "quota", f)
    pending = None
    if period:
        try:
            write(d, "cpu.cfs_period_us", period, f + ".period")
        except OCIError as e:
            # A shorter period can break the parent's quota until the quota changes too.
            if e.errno != _errno.EINVAL or not quota:
                raise
            pending = period
    if quota:
        write(d, "cpu.cfs_quota_us", quota, f + ".quota")
        if pending:
            write(d, "cpu.cfs_period_us", pending, f + ".period")
    v = _num(cpu, "burst", f)
    if v is not None:
        write(d, "cpu.cfs_burst_us", v, f + ".burst")
    v = _num(cpu, "idle", f)
    if v is not None:
        write(d, "cpu.idle", v, f + ".idle")
    set_realtime(d, cpu, parents)


def set_realtime(d: str, cpu: dict, parents: tuple = ()) -> None:
    """rt_period then rt_runtime. A child's RT share must fit in its parent's, and a new
    cgroup has none: `parents` (the ones create() made, top first) get just enough."""
    f = F + ".cpu"
    period, runtime = _num(cpu, "realtimePeriod", f), _num(cpu, "realtimeRuntime", f)
    if period:
        write(d, "cpu.rt_period_us", period, f + ".realtimePeriod")
    if runtime:
        if runtime > 0 and parents:
            mine = period or read_int(d, "cpu.rt_period_us")
            for p in parents:
                need = -(-runtime * read_int(p, "cpu.rt_period_us") // mine)
                if read_int(p, "cpu.rt_runtime_us") < need:
                    write(p, "cpu.rt_runtime_us", need, f + ".realtimeRuntime")
        write(d, "cpu.rt_runtime_us", runtime, f + ".realtimeRuntime")


def set_pids(d: str, pids: dict) -> None:
    f = F + ".pids.limit"
    v = pids.get("limit")
    if v is None:
        return
    if not isinstance(v, int) or isinstance(v, bool):
        raise OCIError(f"{f}: {v!r} is not an integer")
    if v != 0:  # runc: 0 leaves the limit alone, negative means no limit
        write(d, "pids.max", v if v > 0 else "max", f)


def set_blkio(d: str, bio: dict) -> None:
    f = F + ".blockIO"
    # CFQ's blkio.weight is gone from current kernels; BFQ's sits beside it.
    weight_file = "blkio.weight" if exists(d, "blkio.weight") else "blkio.bfq.weight"
    v = _num(bio, "weight", f)
    if v:
        write(d, weight_file, v, f + ".weight")
    v = _num(bio, "leafWeight", f)
    if v:
        write(d, "blkio.leaf_weight", v, f + ".leafWeight")
    for i, dev in enumerate(bio.get("weightDevice") or ()):
        field = f"{f}.weightDevice[{i}]"
        majmin = _majmin(dev, field)
        if dev.get("weight") is not None:
            write(d, weight_file + "_device", f"{majmin} {dev['weight']}", field + ".weight")
        if dev.get("leafWeight") is not None:
            write(d, "blkio.leaf_weight_device", f"{majmin} {dev['leafWeight']}",
                  field + ".leafWeight")
    for key, name in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                      ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                      ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                      ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
        for i, dev in enumerate(bio.get(key) or ()):
            field = f"{f}.{key}[{i}]"
            write(d, name, f"{_majmin(dev, field)} {dev.get('rate', 0)}", field)


def _majmin(dev: dict, field: str) -> str:
    try:
        return f"{int(dev['major'])}:{int(dev['minor'])}"
    except (KeyError, TypeError, ValueError):
        raise OCIError(f"{field}: needs integer major and minor") from None


def set_hugetlb(d: str, limits: list, suffix: str = "limit_in_bytes") -> None:
    for i, h in enumerate(limits):
        field = f"{F}.hugepageLimits[{i}]"
        size = h.get("pageSize")
        name = f"hugetlb.{size}.{suffix}"
        if not isinstance(size, str) or not exists(d, name):
            raise OCIError(f"{field}.pageSize: this host has no {size} huge pages "
                           f"(no {name})")
        write(d, name, h.get("limit", 0), field + ".limit")


def set_net_cls(d: str, class_id: int) -> None:
    write(d, "net_cls.classid", class_id, F + ".network.classID")


def set_net_prio(d: str, prios: list) -> None:
    for i, p in enumerate(prios):
        write(d, "net_prio.ifpriomap", f"{p.get('name')} {p.get('priority', 0)}",
              f"{F}.network.priorities[{i}]")


def set_rdma(d: str, rdma: dict) -> None:
    for dev, lim in rdma.items():
        field = f"{F}.rdma.{dev}"
        parts = [f"{k}={lim[key]}" for key, k in (("hcaHandles", "hca_handle"),
                                                  ("hcaObjects", "hca_object"))
                 if (lim or {}).get(key) is not None]
        if parts:
            write(d, "rdma.max", f"{dev} {' '.join(parts)}", field)


def set_cpuset(d: str, cpu: dict) -> None:
    f = F + ".cpu"
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        v = cpu.get(key)
        if v:
            try:
                write(d, name, v, f"{f}.{key}")
            except OCIError as e:
                if e.errno in (_errno.EINVAL, _errno.ERANGE):
                    if key == "cpus":
                        from .paths import online_cpus
                        hint = f"online CPUs are {online_cpus()}"
                    else:
                        hint = "memory nodes are " + read(
                            d.rsplit("/", 1)[0], "cpuset.effective_mems").strip()
                    raise OCIError(e.message, errno=e.errno, hint=hint) from None
                raise


FREEZER_STATE = "freezer.state"
