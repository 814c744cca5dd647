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
    checked = check(with_defaults(rules))
    write(d, "devices.deny", "a", F)
    for i, (allow, text) in enumerate(checked):
        write(d, "devices.allow" if allow else "devices.deny", text, f"{F}[{i}]")


def with_defaults(rules: list) -> list:
    """The rules runc applies: the config's, then its default allowed devices (mknod of
    anything, /dev/null, zero, full, tty, random, urandom, ptmx, pts, tun), so a config that
    denies everything still leaves a container the nodes every runtime creates. A config
    that already ends with them (pybuild's RUN, which spells them out) gets them once."""
    from ocispec.tables import ALLOWED_DEVICES

    n = len(ALLOWED_DEVICES)
    if len(rules) >= n and [_norm(r) for r in rules[-n:]] == [_norm(r) for r in ALLOWED_DEVICES]:
        return list(rules)
    return list(rules) + [dict(r) for r in ALLOWED_DEVICES]


def _norm(r: dict) -> tuple:
    major, minor = r.get("major"), r.get("minor")
    return (r.get("allow"), r.get("type") or "a", -1 if major is None else major,
            -1 if minor is None else minor, r.get("access") or "rwm")


def create_resources(linux: dict) -> dict:
    """linux.resources as runc (1.1) applies it at create. linux.devices nodes get no rule
    of their own: like runc, access to them is what resources.devices (plus runc's
    defaults, added by Manager.set) allows, so a config can create a node it may not open."""
    for i, dev in enumerate(linux.get("devices") or ()):
        if dev.get("type") not in ("c", "b", "u", "p"):
            raise OCIError(f"linux.devices[{i}].type: {dev.get('type')!r} is not one of "
                           "c, b, u, p")
    return dict(linux.get("resources") or {})
