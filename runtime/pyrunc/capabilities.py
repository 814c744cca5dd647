"""process.capabilities: the five capability sets, applied the way runc does.

Order matters and follows runc's finalizeNamespace: the bounding set is dropped while we still
hold CAP_SETPCAP, the uid switch happens in between (with PR_SET_KEEPCAPS so permitted survives
it, see privileges.py), then capset sets effective/permitted/inheritable and ambient comes last,
since PR_CAP_AMBIENT_RAISE needs the cap in permitted and inheritable already.
"""

from . import oslite as os

from ocispec.errors import OCIError, SpecError
from ocispec.tables import CAPABILITIES, CAPABILITY_SETS

from . import ffi, linux

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_V3 = 0x20080522


class _Header(ffi.Structure):
    _fields_ = [("version", ffi.c_uint32), ("pid", ffi.c_int)]


class _Data(ffi.Structure):
    _fields_ = [("effective", ffi.c_uint32), ("permitted", ffi.c_uint32),
                ("inheritable", ffi.c_uint32)]


def prctl(option: int, arg2: int = 0, arg3: int = 0, what: str = "prctl") -> int:
    try:
        return linux.prctl(option, arg2, arg3)
    except OSError as e:
        raise OCIError(f"{what}: {os.strerror(e.errno)}", errno=e.errno) from None


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPABILITIES.values())


def parse(caps: dict | None, field: str = "process.capabilities") -> dict[str, int]:
    """The sets as bit masks, keyed by set name. No capabilities object means five empty sets:
    runc 1.1 runs such a process without any capability, even as root, and so do we.

    Unknown names, and known names the running kernel lacks, are left out: runtime-spec 1.1+
    asks runtimes to warn about them (see unknown()) rather than fail, and runc does so too.
    """
    if caps is None:
        caps = {}
    if not isinstance(caps, dict):
        raise SpecError(field, "must be an object")
    top = last_cap()
    masks = {}
    for s in CAPABILITY_SETS:
        names = caps.get(s) or []
        if not isinstance(names, list):
            raise SpecError(f"{field}.{s}", "must be an array of capability names")
        mask = 0
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise SpecError(f"{field}.{s}[{i}]", "must be a capability name")
            num = CAPABILITIES.get(name)
            if num is not None and num <= top:
                mask |= 1 << num
        masks[s] = mask
    # capset(2) refuses these with a bare EPERM; name the entry instead.
    for s, within in (("effective", "permitted"), ("inheritable", "bounding")):
        for i, name in enumerate(caps.get(s) or []):
            if name not in CAPABILITIES:
                continue
            bit = 1 << CAPABILITIES[name]
            if masks[s] & bit and not masks[within] & bit:
                raise SpecError(f"{field}.{s}[{i}]", f"{name} is not in {within}, and {s} "
                                f"capabilities must be a subset of {within} ones")
    return masks


def unknown(caps: dict | None) -> list[str]:
    """Names in any set that this kernel cannot grant: to be logged as a warning."""
    top = last_cap()
    out = []
    for s in CAPABILITY_SETS:
        for name in (caps or {}).get(s) or []:
            num = CAPABILITIES.get(name)
            if (num is None or num > top) and name not in out:
                out.append(name)
    return out


def drop_bounding(masks: dict[str, int]) -> None:
    keep = masks["bounding"]
    for cap in range(last_cap() + 1):
        if not keep & (1 << cap):
            prctl(PR_CAPBSET_DROP, cap, 0, f"process.capabilities.bounding: dropping {_name(cap)}")


def apply(masks: dict[str, int]) -> list[str]:
    """capset effective/permitted/inheritable, then raise ambient. Returns the ambient names
    that could not be raised because they are not in both permitted and inheritable: runc
    drops those (it ignores the prctl error), and so do we."""
    hdr = _Header(_CAP_V3, 0)
    data = (_Data * 2)()
    for i in range(2):
        data[i].effective = (masks["effective"] >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (masks["permitted"] >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (masks["inheritable"] >> (32 * i)) & 0xFFFFFFFF
    try:
        linux.capset(hdr, data)
    except OSError as e:
        raise OCIError(f"process.capabilities: capset: {os.strerror(e.errno)}", errno=e.errno) from None
    dropped = []
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, "process.capabilities.ambient: clearing")
    amb = masks["ambient"]
    for cap in range(last_cap() + 1):
        if amb & (1 << cap):
            try:
                linux.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
            except OSError:
                dropped.append(_name(cap))
    return dropped


_NAMES = {v: k for k, v in CAPABILITIES.items()}


def _name(cap: int) -> str:
    return _NAMES.get(cap, f"capability {cap}")
