"""process.rlimits: checked as a whole first, then set with setrlimit in the init."""

import resource

from ocispec.errors import OCIError, SpecError
from ocispec.tables import RLIMITS

_U64_MAX = (1 << 64) - 1
_CAP_SYS_RESOURCE = 24


def _limit(v) -> int:
    # The spec's values are uint64 with 2^64-1 meaning unlimited; Python wants RLIM_INFINITY.
    return resource.RLIM_INFINITY if v >= _U64_MAX or v == resource.RLIM_INFINITY else v


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
        soft_l, hard_l = _limit(soft), _limit(hard)
        cur_hard = resource.getrlimit(res)[1]
        above = cur_hard != resource.RLIM_INFINITY and (hard_l == resource.RLIM_INFINITY or hard_l > cur_hard)
        if above:
            if can_raise is None:
                can_raise = _has_sys_resource()
            if not can_raise:
                raise _too_high(path, names[res], hard, cur_hard)
        try:
            resource.setrlimit(res, (soft_l, hard_l))
        except (OSError, ValueError) as e:
            if above:
                raise _too_high(path, names[res], hard, cur_hard) from None
            raise OCIError(f"{path}: setting {names[res]} to soft {soft} hard {hard}: {e}",
                           errno=getattr(e, "errno", None)) from None


def _too_high(path, name, hard, cur_hard) -> OCIError:
    shown = "unlimited" if hard >= _U64_MAX else hard
    return OCIError(f"{path}: {name} hard limit {shown} is above the runtime's own ({cur_hard}) "
                    f"and raising it needs CAP_SYS_RESOURCE", errno=1)
