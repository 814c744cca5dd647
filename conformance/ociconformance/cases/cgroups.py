"""Cgroup resources (config-linux.md "Control groups"), each with an absolute and a
relative cgroupsPath. The harness reads /proc/PID/cgroup of the container's init, finds the
hierarchy that holds each controller on this host (v1, v2 or hybrid) and reads the
controller's files there; devices are also checked from inside."""

import os

from .. import cgroupfs, host
from ..context import parse_kv
from ..registry import case
from ..runtime import read

SLEEP = ["/bin/sh", "-c", "while :; do sleep 1; done"]


def _weight_file(d: str, names) -> str | None:
    for n in names:
        if os.path.exists(os.path.join(d, n)):
            return n
    return None


def _run(ctx, relative: bool, controllers, resources: dict, checks, script=None,
         linux_extra=None):
    """Create a container with resources; checks(v2, dirs) -> [(controller, file, want)]
    where want is a string (exact, stripped) or a predicate."""
    for c in controllers:
        ctx.require(host.controller(c))
    b = ctx.bundle()
    b.config["linux"]["resources"].update(resources)
    b.config["linux"].update(linux_extra or {})
    path = f"{ctx.token}-cg" if relative else f"/{ctx.token}-cg"
    b.config["linux"]["cgroupsPath"] = path
    b.config["process"]["args"] = ["/bin/sh", "-c", script] if script else SLEEP
    cid = ctx.create(b)
    pid = ctx.rt.state(cid)["pid"]
    dirs = {}
    for c in controllers:
        shown, d = cgroupfs.cgroup_of(pid, c)
        if relative:
            ctx.check(shown.endswith("/" + path), f"{c} cgroup {shown!r} does not end with the "
                                                  f"relative cgroupsPath {path!r}")
        else:
            ctx.check(shown == path, f"{c} cgroup {shown!r}, expected cgroupsPath {path!r}")
        dirs[c] = d
    # v2 file names where the controllers are on cgroup2 (all of them on a hybrid host's
    # cgroup2-only controllers such as hugetlb).
    v2 = all(cgroupfs.hierarchy_for(c).version == 2 for c in controllers)
    for c, name, want in checks(v2, dirs):
        p = os.path.join(dirs[c], name)
        ctx.check(os.path.exists(p), f"{name} missing in the container's cgroup {dirs[c]}")
        got = read(p).strip()
        ok = want(got) if callable(want) else got == want
        ctx.check(ok, f"{name} is {got!r}, expected {getattr(want, 'text', repr(want))}")
    return cid


def _pred(text: str, fn):
    """A check on a cgroup file's content, with the words to say what was expected."""
    fn.text = text
    return fn


def _has(line: str):
    return _pred(f"a line {line!r}", lambda got: line in got.splitlines())


def blkio(ctx, relative):
    dev = host.block_device()
    ctx.require(None if dev else "no block device on this host")
    mm = f"{dev[0]}:{dev[1]}"
    ctrl = "io" if cgroupfs.mode() == "v2" else "blkio"
    # A weight only where the host's I/O scheduler offers one (BFQ or CFQ): elsewhere no
    # runtime can set it, runc included, and the throttles are still checked.
    weight = host.blkio_weight_file()
    res = {"blockIO": {
        "throttleReadBpsDevice": [{"major": dev[0], "minor": dev[1], "rate": 1048576}],
        "throttleWriteBpsDevice": [{"major": dev[0], "minor": dev[1], "rate": 2097152}],
        "throttleReadIOPSDevice": [{"major": dev[0], "minor": dev[1], "rate": 300}],
        "throttleWriteIOPSDevice": [{"major": dev[0], "minor": dev[1], "rate": 400}]}}
    if weight:
        res["blockIO"]["weight"] = 300

    def checks(v2, dirs):
        if v2:
            want = (f"{mm} ", "rbps=1048576", "wbps=2097152", "riops=300", "wiops=400")
            out = [("io", "io.max", _pred(f"{mm} with {' '.join(want[1:])}",
                                          lambda g: all(f in g for f in want)))]
            w = _weight_file(dirs["io"], ("io.bfq.weight", "io.weight"))
        else:
            out = [("blkio", "blkio.throttle.read_bps_device", _has(f"{mm} 1048576")),
                   ("blkio", "blkio.throttle.write_bps_device", _has(f"{mm} 2097152")),
                   ("blkio", "blkio.throttle.read_iops_device", _has(f"{mm} 300")),
                   ("blkio", "blkio.throttle.write_iops_device", _has(f"{mm} 400"))]
            w = _weight_file(dirs["blkio"], ("blkio.weight", "blkio.bfq.weight"))
        if weight and w and not v2:  # v2 weights are a conversion the spec leaves to the runtime
            out.append(("blkio", w, _pred("weight 300", lambda g: "300" in g.split())))
        return out
    _run(ctx, relative, [ctrl], res, checks)


def cpus(ctx, relative):
    res = {"cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}}

    def checks(v2, dirs):
        if v2:
            return [("cpu", "cpu.max", "50000 100000"), ("cpuset", "cpuset.cpus", "0"),
                    ("cpuset", "cpuset.mems", "0")]
        return [("cpu", "cpu.shares", "512"), ("cpu", "cpu.cfs_quota_us", "50000"),
                ("cpu", "cpu.cfs_period_us", "100000"), ("cpuset", "cpuset.cpus", "0"),
                ("cpuset", "cpuset.mems", "0")]
    _run(ctx, relative, ["cpu", "cpuset"], res, checks)


def memory(ctx, relative):
    limit, reservation, swap = 50 << 20, 30 << 20, 100 << 20
    mode = cgroupfs.mode()
    # Swap accounting is a host option: test memory.swap only where the host has it.
    swap_file = "memory.swap.max" if mode == "v2" else "memory.memsw.limit_in_bytes"
    has_swap = cgroupfs.has_file("memory", swap_file)
    mem = {"limit": limit, "reservation": reservation}
    if has_swap:
        mem["swap"] = swap
    if mode == "v1":
        mem["swappiness"] = 30

    def checks(v2, dirs):
        if v2:
            out = [("memory", "memory.max", str(limit)), ("memory", "memory.low", str(reservation))]
            if has_swap:
                out.append(("memory", "memory.swap.max", str(swap - limit)))
            return out
        out = [("memory", "memory.limit_in_bytes", str(limit)),
               ("memory", "memory.soft_limit_in_bytes", str(reservation)),
               ("memory", "memory.swappiness", "30")]
        if has_swap:
            out.append(("memory", "memory.memsw.limit_in_bytes", str(swap)))
        return out
    _run(ctx, relative, ["memory"], {"memory": mem}, checks)


def pids(ctx, relative):
    _run(ctx, relative, ["pids"], {"pids": {"limit": 77}},
         lambda v2, dirs: [("pids", "pids.max", "77")])


def network(ctx, relative):
    res = {"network": {"classID": 1048577, "priorities": [{"name": "lo", "priority": 7}]}}
    _run(ctx, relative, ["net_cls", "net_prio"], res,
         lambda v2, dirs: [("net_cls", "net_cls.classid", "1048577"),
                           ("net_prio", "net_prio.ifpriomap", _has("lo 7"))])


def hugetlb(ctx, relative):
    ctx.require(host.controller("hugetlb"))
    sizes = host.hugepage_sizes()
    ctx.require(None if sizes else "no huge page sizes in /sys/kernel/mm/hugepages")
    size = "2MB" if "2MB" in sizes else sizes[0]
    limit = 4 << 20 if size == "2MB" else 0

    def checks(v2, dirs):
        return [("hugetlb", f"hugetlb.{size}.max" if v2 else f"hugetlb.{size}.limit_in_bytes",
                 str(limit))]
    _run(ctx, relative, ["hugetlb"], {"hugepageLimits": [{"pageSize": size, "limit": limit}]},
         checks)


def devices(ctx, relative):
    """Only b 7:0 read is allowed beyond the defaults; checked from inside on any host,
    and in devices.list on v1."""
    b_devices = [{"path": "/dev/occ-loop0", "type": "b", "major": 7, "minor": 0,
                  "fileMode": 0o600},
                 {"path": "/dev/occ-loop1", "type": "b", "major": 7, "minor": 1,
                  "fileMode": 0o600}]
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"}]
    script = ("sleep 0.2; cat /dev/occ-loop0 > /dev/null; echo read0=$?;"
              " echo x 2>/dev/null > /dev/occ-loop0; echo write0=$?;"
              " cat /dev/occ-loop1 2>/dev/null > /dev/null; echo read1=$?;"
              " echo x > /dev/null; echo null=$?; echo done=1")
    ctrl = "devices" if cgroupfs.mode() == "v1" else "pids"  # v2: devices is eBPF
    ctx.require(host.controller(ctrl))
    def checks(v2, dirs):
        if v2:
            return []
        return [("devices", "devices.list", _has("b 7:0 r")),
                ("devices", "devices.list",
                 _pred("no rule for b 7:1 and no a *:* rwm",
                       lambda g: "a *:* rwm" not in g and "b 7:1" not in g))]
    cid = _run(ctx, relative, [ctrl], {"devices": rules}, checks, script=script,
               linux_extra={"devices": b_devices})
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "stopped")
    kv = parse_kv(ctx.output(cid))
    ctx.check(kv.get("done") == "1", f"inside: {ctx.output(cid)!r}")
    ctx.check(kv.get("read0") == "0", "reading the allowed b 7:0 failed")
    ctx.check(kv.get("write0") != "0", "writing b 7:0 (allowed: r only) succeeded")
    ctx.check(kv.get("read1") != "0", "reading the not-allowed b 7:1 succeeded")
    ctx.check(kv.get("null") == "0", "the default /dev/null is not writable")


AREAS = {"blkio": blkio, "cpus": cpus, "devices": devices, "hugetlb": hugetlb,
         "memory": memory, "network": network, "pids": pids}


def _register(area, func):
    doc = {
        "blkio": "blockIO weight and read/write bps and iops throttles for a host disk",
        "cpus": "cpu shares, quota, period (cpu.max on v2) and cpuset cpus/mems",
        "devices": "the device allow-list: only b 7:0 read beyond the defaults",
        "hugetlb": "hugepageLimits for the host's huge page size",
        "memory": "memory limit, reservation, swap (where the host accounts swap), "
                  "swappiness (v1)",
        "network": "net_cls classID and net_prio ifpriomap",
        "pids": "pids.max",
    }[area]
    for relative in (False, True):
        name = f"linux_cgroups_{'relative_' if relative else ''}{area}"

        def run(ctx, relative=relative):
            func(ctx, relative)
        run.__doc__ = (f"{doc}, in the cgroup named by a{' relative' if relative else 'n absolute'}"
                       " cgroupsPath, read back from the controller files.")
        case(name)(run)


for _area, _func in AREAS.items():
    _register(_area, _func)
