"""process.scheduler (sched_setattr) and process.ioPriority (ioprio_set).

Neither call has a libc wrapper (glibc 2.36), so both go through syscall(2).
"""

from . import oslite as os

from ocispec.errors import OCIError, SpecError
from ocispec.tables import IOPRIO_CLASSES, SCHED_FLAGS, SCHED_POLICIES

from . import ffi, linux

# (sched_setattr, ioprio_set) by machine.
_NR = {"x86_64": (314, 251), "aarch64": (274, 30), "riscv64": (274, 30),
       "ppc64le": (355, 273), "s390x": (345, 282)}
# Read once at import: linux.personality LINUX32 makes uname() say i686 afterwards.
_MACHINE = os.uname().machine
IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_SHIFT = 13


class _SchedAttr(ffi.Structure):
    _fields_ = [("size", ffi.c_uint32), ("sched_policy", ffi.c_uint32),
                ("sched_flags", ffi.c_uint64), ("sched_nice", ffi.c_int32),
                ("sched_priority", ffi.c_uint32), ("sched_runtime", ffi.c_uint64),
                ("sched_deadline", ffi.c_uint64), ("sched_period", ffi.c_uint64)]


def _nr(i: int, field: str) -> int:
    nrs = _NR.get(_MACHINE)
    if nrs is None:
        raise OCIError(f"{field}: not supported on {_MACHINE}")
    return nrs[i]


def _uint(v, path, bits=64):
    if type(v) is not int or not 0 <= v < (1 << bits):
        raise SpecError(path, f"must be an integer from 0 to 2^{bits}-1, not {v!r}")
    return v


def parse_scheduler(sched, field="process.scheduler") -> _SchedAttr | None:
    if sched is None:
        return None
    if not isinstance(sched, dict):
        raise SpecError(field, "must be an object")
    policy = sched.get("policy")
    if policy not in SCHED_POLICIES:
        raise SpecError(f"{field}.policy", f"unknown policy {policy!r}")
    attr = _SchedAttr(ffi.sizeof(_SchedAttr), SCHED_POLICIES[policy])
    nice = sched.get("nice", 0)
    if type(nice) is not int or not -20 <= nice <= 19:
        raise SpecError(f"{field}.nice", f"must be an integer from -20 to 19, not {nice!r}")
    attr.sched_nice = nice
    prio = sched.get("priority", 0)
    if type(prio) is not int or prio < 0:
        raise SpecError(f"{field}.priority", f"must be a non-negative integer, not {prio!r}")
    if prio and policy not in ("SCHED_FIFO", "SCHED_RR"):
        raise SpecError(f"{field}.priority", f"must be 0 for {policy} (only SCHED_FIFO and SCHED_RR have priorities)")
    attr.sched_priority = prio
    flags = sched.get("flags") or []
    if not isinstance(flags, list):
        raise SpecError(f"{field}.flags", "must be an array")
    for i, f in enumerate(flags):
        if f not in SCHED_FLAGS:
            raise SpecError(f"{field}.flags[{i}]", f"unknown flag {f!r}")
        attr.sched_flags |= SCHED_FLAGS[f]
    for k in ("runtime", "deadline", "period"):
        if k in sched:
            if policy != "SCHED_DEADLINE":
                raise SpecError(f"{field}.{k}", f"is only valid with SCHED_DEADLINE, not {policy}")
            setattr(attr, f"sched_{k}", _uint(sched[k], f"{field}.{k}"))
    return attr


def set_scheduler(attr: _SchedAttr, field="process.scheduler") -> None:
    try:
        linux.syscall(_nr(0, field), 0, ffi.byref(attr), 0)
    except OSError as e:
        raise OCIError(f"{field}: sched_setattr: {e.strerror}", errno=e.errno) from None


def parse_ioprio(io, field="process.ioPriority") -> int | None:
    if io is None:
        return None
    if not isinstance(io, dict):
        raise SpecError(field, "must be an object")
    cls = io.get("class")
    if cls not in IOPRIO_CLASSES:
        raise SpecError(f"{field}.class", f"unknown class {cls!r}")
    prio = io.get("priority", 0)
    if type(prio) is not int or not 0 <= prio <= 7:
        raise SpecError(f"{field}.priority", f"must be an integer from 0 to 7, not {prio!r}")
    return IOPRIO_CLASSES[cls] << IOPRIO_CLASS_SHIFT | prio


def set_ioprio(value: int, field="process.ioPriority") -> None:
    try:
        linux.syscall(_nr(1, field), IOPRIO_WHO_PROCESS, 0, value)
    except OSError as e:
        raise OCIError(f"{field}: ioprio_set: {e.strerror}", errno=e.errno) from None
