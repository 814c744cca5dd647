"""process.rlimits: checked as a whole first, then set with prlimit(2) in the init.

prlimit through the one libc (pyrunc.linux), not the `resource` module: that is a shared
library of its own to load (~1 ms) on every container start.
"""


from ocispec.errors import OCIError, SpecError
from ocispec.tables import RLIMITS

from . import ffi, linux

_U64_MAX = (1 << 64) - 1
RLIM_INFINITY = _U64_MAX  # rlim_t is unsigned long on Linux: 2^64-1 is unlimited, as in the spec
_CAP_SYS_RESOURCE = 24


class _Rlimit(ffi.Structure):
    _fields_ = [("cur", ffi.c_uint64), ("max", ffi.c_uint64)]


def getrlimit(res: int) -> tuple[int, int]:
    old = _Rlimit()
    linux.check(linux.libc.prlimit(0, res, None, ffi.byref(old)), "getrlimit")
    return old.cur, old.max


def setrlimit(res: int, limits: tuple[int, int]) -> None:
    new = _Rlimit(*limits)
    linux.check(linux.libc.prlimit(0, res, ffi.byref(new), None), "setrlimit")


def parse(rlimits, field: str = "process.rlimits") -> list[tuple[str, int, int, int]]:
    """[(field path, resource number, soft, hard)], or SpecError naming the bad entry."""
    if rlimits is None:
        return []
    if not isinstance(rlimits, list):
        raise SpecError(field, "must be an array")
    out, seen = [], {}
    for i, r in enumerate(rlimits):
        path = f"{field}[{i}]"
        if not isinstance(r, dict):
            raise SpecError(path, "must be an object with type, soft and hard")
        t = r.get("type")
        if t not in RLIMITS:
            raise SpecError(f"{path}.type", f"unknown rlimit {t!r}")
        if t in seen:
            raise SpecError(f"{path}.type", f"{t} is already set by {field}[{seen[t]}]")
        seen[t] = i
        vals = []
        for k in ("soft", "hard"):
            v = r.get(k)
            if type(v) is not int or not 0 <= v <= _U64_MAX:
                raise SpecError(f"{path}.{k}", f"must be an integer from 0 to 2^64-1, not {v!r}")
            vals.append(v)
        soft, hard = vals
        if soft > hard:
            raise SpecError(path, f"{t} soft limit {soft} is above its hard limit {hard}")
        out.append((path, RLIMITS[t], soft, hard))
    return out


def _has_sys_resource() -> bool:
    from . import procfs

    for line in procfs.read("self/status").splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    return False


def apply(parsed: list[tuple[str, int, int, int]]) -> None:
    names = {v: k for k, v in RLIMITS.items()}
    can_raise = None
    for path, res, soft, hard in parsed:
        cur_hard = getrlimit(res)[1]
        above = cur_hard != RLIM_INFINITY and (hard == RLIM_INFINITY or hard > cur_hard)
        if above:
            if can_raise is None:
                can_raise = _has_sys_resource()
            if not can_raise:
                raise _too_high(path, names[res], hard, cur_hard)
        try:
            setrlimit(res, (soft, hard))
        except OSError as e:
            if above:
                raise _too_high(path, names[res], hard, cur_hard) from None
            raise OCIError(f"{path}: setting {names[res]} to soft {soft} hard {hard}: {e}",
                           errno=getattr(e, "errno", None)) from None


def _too_high(path, name, hard, cur_hard) -> OCIError:
    shown = "unlimited" if hard >= _U64_MAX else hard
    return OCIError(f"{path}: {name} hard limit {shown} is above the runtime's own ({cur_hard}) "
                    f"and raising it needs CAP_SYS_RESOURCE", errno=1)
