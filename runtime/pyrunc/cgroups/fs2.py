"""cgroup v2: one unified hierarchy; controllers are enabled in each parent's
cgroup.subtree_control before a child can use them."""

import errno as _errno
from .. import oslite as os

from ocispec.errors import OCIError

from . import fs1
from .files import exists, read, read_int, write

F = "linux.resources"


def enable(mount: str, leaf: str, controllers, field: str) -> None:
    """Enable `controllers` (None: all each level has) from the hierarchy root down to
    leaf's parent; only the ones not on yet, since a write can fail on a busy cgroup."""
    parent = os.path.dirname(leaf)
    chain = []
    while True:
        chain.append(parent)
        if parent == mount or len(parent) <= len(mount):
            break
        parent = os.path.dirname(parent)
    for d in reversed(chain):
        on = set(read(d, "cgroup.subtree_control").split())
        want = controllers if controllers is not None else read(d, "cgroup.controllers").split()
        for c in want:
            if c not in on:
                write(d, "cgroup.subtree_control", "+" + c, field)


def available(mount: str) -> set:
    """Controllers the hierarchy has (its root's cgroup.controllers): any of them can be
    enabled down to the container's cgroup."""
    try:
        return set(read(mount, "cgroup.controllers").split())
    except OSError:
        return set()


def swap_max(swap, limit):
    """v1's memory+swap figure to v2's swap-only memory.swap.max (runc's conversion)."""
    if limit == -1 and swap is None:
        return -1
    if swap in (None, -1, 0):
        return swap
    if not limit:
        raise OCIError(f"{F}.memory.swap: a swap limit needs a memory limit")
    if limit < 0:
        raise OCIError(f"{F}.memory.limit: invalid value {limit}")
    if swap < limit:
        raise OCIError(f"{F}.memory.swap: {swap} is below memory.limit {limit} (swap counts "
                       "memory plus swap)")
    return swap - limit


def _max(v) -> str:
    return "max" if v == -1 else str(v)


def set_memory(d: str, mem: dict) -> None:
    f = F + ".memory"
    limit = fs1._size(mem, "limit", f)
    swap = swap_max(fs1._size(mem, "swap", f), limit)
    for key in ("kernel", "kernelTCP"):
        if mem.get(key):
            raise OCIError(f"{f}.{key}: cgroup v2 has no kernel memory limit")
    if mem.get("disableOOMKiller"):
        raise OCIError(f"{f}.disableOOMKiller: cgroup v2 cannot disable the OOM killer")
    if mem.get("swappiness") not in (None, -1):
        raise OCIError(f"{f}.swappiness: cgroup v2 has no per-cgroup swappiness")
    if swap is not None:
        if not exists(d, "memory.swap.max"):
            raise OCIError(f"{f}.swap: this kernel has no swap accounting (memory.swap.max)")
        write(d, "memory.swap.max", _max(swap), f + ".swap")
    if limit is not None:
        if mem.get("checkBeforeUpdate") and limit > 0 and \
                read_int(d, "memory.current") > limit:
            raise OCIError(f"{f}.limit: cannot set {limit}: below the cgroup's current usage "
                           f"of {read_int(d, 'memory.current')} bytes (checkBeforeUpdate)")
        try:
            write(d, "memory.max", _max(limit), f + ".limit")
        except OCIError as e:
            if e.errno == _errno.EBUSY:
                raise OCIError(f"{f}.limit: cannot set {limit}: device or resource busy (the "
                               f"cgroup already uses {read_int(d, 'memory.current')} bytes)",
                               errno=e.errno) from None
            raise
    v = fs1._size(mem, "reservation", f)
    if v is not None:
        write(d, "memory.low", _max(v), f + ".reservation")


def shares_to_weight(shares: int) -> int:
    """cpu.shares 2..262144 onto cpu.weight 1..10000 (runc's linear map)."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio weight 10..1000 onto io.weight 1..10000."""
    return 1 + (weight - 10) * 9999 // 990


def set_cpu(d: str, cpu: dict) -> None:
    f = F + ".cpu"
    if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
        raise OCIError(f"{f}.realtimeRuntime: cgroup v2 has no realtime group scheduling")
    shares = fs1._num(cpu, "shares", f)
    if shares:
        if not 2 <= shares <= 262144:
            raise OCIError(f"{f}.shares: {shares} is outside 2-262144")
        write(d, "cpu.weight", shares_to_weight(shares), f + ".shares")
    quota, period = fs1._num(cpu, "quota", f), fs1._num(cpu, "period", f)
    if quota or period:
        q = "max" if not quota or quota < 0 else str(quota)
        p = str(period) if period else read(d, "cpu.max").split()[1]
        write(d, "cpu.max", f"{q} {p}", f + (".quota" if quota else ".period"))
    v = fs1._num(cpu, "burst", f)
    if v is not None:
        write(d, "cpu.max.burst", v, f + ".burst")
    v = fs1._num(cpu, "idle", f)
    if v is not None:
        write(d, "cpu.idle", v, f + ".idle")


def set_pids(d: str, pids: dict) -> None:
    fs1.set_pids(d, pids)


def set_io(d: str, bio: dict) -> None:
    f = F + ".blockIO"
    if bio.get("leafWeight"):
        raise OCIError(f"{f}.leafWeight: cgroup v2 has no leaf weight")
    bfq = exists(d, "io.bfq.weight")
    v = fs1._num(bio, "weight", f)
    if v:
        if bfq:  # BFQ takes the v1 scale
            write(d, "io.bfq.weight", v, f + ".weight")
        else:
            write(d, "io.weight", f"default {blkio_to_io_weight(v)}", f + ".weight")
    for i, dev in enumerate(bio.get("weightDevice") or ()):
        field = f"{f}.weightDevice[{i}]"
        if dev.get("leafWeight"):
            raise OCIError(f"{field}.leafWeight: cgroup v2 has no leaf weight")
        if dev.get("weight") is not None:
            mm = fs1._majmin(dev, field)
            if bfq:
                write(d, "io.bfq.weight", f"{mm} {dev['weight']}", field + ".weight")
            else:
                write(d, "io.weight", f"{mm} {blkio_to_io_weight(dev['weight'])}",
                      field + ".weight")
    for key, kw in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                    ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for i, dev in enumerate(bio.get(key) or ()):
            field = f"{f}.{key}[{i}]"
            rate = dev.get("rate", 0)
            write(d, "io.max", f"{fs1._majmin(dev, field)} {kw}={rate or 'max'}", field)


def set_hugetlb(d: str, limits: list) -> None:
    fs1.set_hugetlb(d, limits, suffix="max")


def set_cpuset(d: str, cpu: dict) -> None:
    fs1.set_cpuset(d, cpu)


def set_unified(d: str, unified: dict, mount: str) -> None:
    for key, value in unified.items():
        field = f"{F}.unified.{key}"
        if "/" in key or key.startswith("."):
            raise OCIError(f"{field}: not a cgroup file name")
        if not exists(d, key):
            # A controller's files appear once the parent enables it: do that if we can.
            ctrl = key.split(".", 1)[0]
            have = available(mount)
            if ctrl in have:
                enable(mount, d, (ctrl,), field)
            if not exists(d, key):
                raise OCIError(f"{field}: this host's cgroup v2 has no {key} file "
                               f"(controllers here: {' '.join(sorted(have)) or 'none'})")
        write(d, key, value, field)
