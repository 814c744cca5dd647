"""linux.resources checked before anything touches the kernel (pyrunc's validate step):
types, ranges and what this host's cgroups can do at all."""

from ocispec.errors import OCIError, SpecError

R = "linux.resources"
_INT = {
    "memory": ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness"),
    "cpu": ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "idle", "burst"),
    "pids": ("limit",),
    "blockIO": ("weight", "leafWeight"),
}
_BOOL = {"memory": ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate")}
_DEVLISTS = ("weightDevice", "throttleReadBpsDevice", "throttleWriteBpsDevice",
             "throttleReadIOPSDevice", "throttleWriteIOPSDevice")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_resources(resources, *, host: bool = True) -> None:
    """Raise SpecError naming the first bad field; host=True also refuses what this
    host's cgroups cannot do (a controller it lacks, huge page sizes it has not)."""
    if resources is None:
        return
    if not isinstance(resources, dict):
        raise SpecError(R, "must be an object")
    for section, keys in _INT.items():
        sec = resources.get(section)
        if sec is None:
            continue
        if not isinstance(sec, dict):
            raise SpecError(f"{R}.{section}", "must be an object")
        for k in keys:
            if sec.get(k) is not None and not _is_int(sec[k]):
                raise SpecError(f"{R}.{section}.{k}", f"{sec[k]!r} is not an integer")
        for k in _BOOL.get(section, ()):
            if sec.get(k) is not None and not isinstance(sec[k], bool):
                raise SpecError(f"{R}.{section}.{k}", f"{sec[k]!r} is not true or false")
    mem = resources.get("memory") or {}
    sw = mem.get("swappiness")
    if sw is not None and sw != -1 and not 0 <= sw <= 100:
        raise SpecError(f"{R}.memory.swappiness", f"{sw} is outside 0-100")
    if (mem.get("limit") or 0) > 0 and (mem.get("swap") or 0) > 0 and mem["swap"] < mem["limit"]:
        raise SpecError(f"{R}.memory.swap", f"{mem['swap']} is below memory.limit "
                        f"{mem['limit']} (swap counts memory plus swap)")
    cpu = resources.get("cpu") or {}
    for k in ("cpus", "mems"):
        if cpu.get(k) is not None and not isinstance(cpu[k], str):
            raise SpecError(f"{R}.cpu.{k}", f"{cpu[k]!r} is not a string like \"0-3,5\"")
    bio = resources.get("blockIO") or {}
    for key in _DEVLISTS:
        for i, dev in enumerate(bio.get(key) or ()):
            if not isinstance(dev, dict) or not _is_int(dev.get("major")) or \
                    not _is_int(dev.get("minor")):
                raise SpecError(f"{R}.blockIO.{key}[{i}]", "needs integer major and minor")
    for i, h in enumerate(resources.get("hugepageLimits") or ()):
        if not isinstance(h, dict) or not isinstance(h.get("pageSize"), str):
            raise SpecError(f"{R}.hugepageLimits[{i}].pageSize", "must be a string like 2MB")
        if not _is_int(h.get("limit")):
            raise SpecError(f"{R}.hugepageLimits[{i}].limit", "must be an integer")
    net = resources.get("network") or {}
    if net.get("classID") is not None and not _is_int(net["classID"]):
        raise SpecError(f"{R}.network.classID", f"{net['classID']!r} is not an integer")
    for i, p in enumerate(net.get("priorities") or ()):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or \
                not _is_int(p.get("priority")):
            raise SpecError(f"{R}.network.priorities[{i}]", "needs a name and an integer "
                            "priority")
    unified = resources.get("unified") or {}
    if not isinstance(unified, dict):
        raise SpecError(f"{R}.unified", "must be an object")
    for k, v in unified.items():
        if "/" in k or k.startswith(".") or not isinstance(v, str):
            raise SpecError(f"{R}.unified.{k}", "needs a cgroup file name and a string value")
    rules = resources.get("devices")
    if rules is not None:
        if not isinstance(rules, list):
            raise SpecError(f"{R}.devices", "must be a list")
        from .devices import check
        try:
            check(rules)
        except OCIError as e:
            field, _, reason = e.message.partition(": ")
            raise SpecError(field, reason) from None
    if host:
        _host(resources)


def _host(resources: dict) -> None:
    net = resources.get("network") or {}
    if not (resources.get("hugepageLimits") or resources.get("rdma") or resources.get("unified")
            or net.get("classID") is not None or net.get("priorities")):
        return  # nothing here that a host may lack: no mounts to read on every create
    from . import paths
    from .files import read
    from .stats import hugepage_sizes
    v1, v2 = paths.mounts()
    v2c = set()
    if v2:
        try:
            v2c = set(read(v2[0], "cgroup.controllers").split())
        except OSError:
            pass

    def need(field, v1name, v2name):
        if v1name not in v1 and v2name not in v2c:
            raise SpecError(field, f"the {v1name} controller is not available on this host")

    huge = resources.get("hugepageLimits")
    if huge:
        need(f"{R}.hugepageLimits", "hugetlb", "hugetlb")
        sizes = hugepage_sizes()
        for i, h in enumerate(huge):
            if h["pageSize"] not in sizes:
                raise SpecError(f"{R}.hugepageLimits[{i}].pageSize",
                                f"this host has no {h['pageSize']} huge pages "
                                f"(it has {', '.join(sizes) or 'none'})")
    if net.get("classID") is not None:
        need(f"{R}.network.classID", "net_cls", None)
    if net.get("priorities"):
        need(f"{R}.network.priorities", "net_prio", None)
    if resources.get("rdma"):
        need(f"{R}.rdma", "rdma", "rdma")
    if resources.get("unified") and not v2:
        raise SpecError(f"{R}.unified", "this host has no cgroup v2 hierarchy")
