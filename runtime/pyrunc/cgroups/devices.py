"""linux.resources.devices: allow/deny rules, applied in order after denying everything."""

from ocispec.errors import OCIError

from .files import write

F = "linux.resources.devices"


def rule_text(rule: dict, i: int) -> str:
    """A spec rule as the v1 controller's 'TYPE MAJOR:MINOR ACCESS' line."""
    typ = rule.get("type") or "a"
    if typ not in ("a", "c", "b"):
        raise OCIError(f"{F}[{i}].type: {typ!r} is not one of a, c, b")
    access = rule.get("access") or "rwm"
    if not access or set(access) - set("rwm"):
        raise OCIError(f"{F}[{i}].access: {access!r} is not a combination of r, w, m")
    parts = []
    for key in ("major", "minor"):
        v = rule.get(key)
        if v is None or v == -1:
            parts.append("*")
        elif isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            parts.append(str(v))
        else:
            raise OCIError(f"{F}[{i}].{key}: {v!r} is not a device number")
    if "allow" not in rule or not isinstance(rule["allow"], bool):
        raise OCIError(f"{F}[{i}].allow: must be true or false")
    return f"{typ} {parts[0]}:{parts[1]} {access}"


def check(rules: list) -> list:
    """Validate every rule before touching the kernel: [(allow, text)]."""
    return [(bool(r.get("allow")), rule_text(r, i)) for i, r in enumerate(rules)]


def set_v1(d: str, rules: list) -> None:
    checked = check(rules)
    write(d, "devices.deny", "a", F)
    for i, (allow, text) in enumerate(checked):
        write(d, "devices.allow" if allow else "devices.deny", text, f"{F}[{i}]")
