"""User and group names resolved against an image's /etc/passwd and /etc/group."""
import os

from ocispec import users
from ocispec.errors import OCIError

from ..rootfs import resolve_in_root


def _read(root: str | None, path: str) -> list[list[str]]:
    if root is None:
        return []
    return users.read_db(os.path.join(root, resolve_in_root(root, path).lstrip("/")))


def _uid(root, name: str, what: str) -> tuple[int, int | None, str | None]:
    """(uid, primary gid or None, user name or None) of a user name or number."""
    if name.isdigit():
        for ent in _read(root, "/etc/passwd"):
            if len(ent) > 3 and ent[2] == name:
                return int(name), _num(ent[3]), ent[0]
        return int(name), None, None
    for ent in _read(root, "/etc/passwd"):
        if len(ent) > 3 and ent[0] == name:
            return int(ent[2]), _num(ent[3]), name
    raise OCIError(f"{what}unable to find user {name}: no matching entries in the image's "
                   "/etc/passwd")


def _num(s: str) -> int | None:
    return int(s) if s.isdigit() else None


def _gid(root, name: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    for ent in _read(root, "/etc/group"):
        if len(ent) > 2 and ent[0] == name:
            return int(ent[2])
    raise OCIError(f"{what}unable to find group {name}: no matching entries in the image's "
                   "/etc/group")


def _what(what: str) -> str:
    return f"{what}: " if what else ""


def resolve_chown(root: str | None, spec: str, what: str) -> tuple[int, int]:
    """`user[:group]` (names or numbers) -> (uid, gid); a lone user takes its own gid."""
    user, _, group = spec.partition(":")
    uid, pgid, _ = _uid(root, user, _what(what))
    if group:
        return uid, _gid(root, group, _what(what))
    if pgid is None:
        pgid = uid if user.isdigit() else 0
    return uid, pgid


def resolve_user(root: str | None, spec: str, what: str = "") -> tuple[int, int, list[int]]:
    """The process user of an image's `User` (a RUN's USER, a container's config): (uid,
    gid, supplementary gids), as BuildKit's executor (oci.GetUser) and runc resolve it.

    "" means root ("0"), looked up like any user, so root gets the groups /etc/group lists
    it in (and 0:0 when the image has no such files); `uid:gid` in numbers is taken as
    it is; otherwise names are looked up in the image's /etc/passwd and /etc/group, and
    without a group the user gets its primary group plus every group that lists it."""
    default = not spec
    user, _, group = (spec or "0").partition(":")
    if user.isdigit() and group.isdigit():
        return int(user), int(group), []
    try:
        uid, pgid, uname = _uid(root, user, _what(what))
        gid = _gid(root, group, _what(what)) if group else (pgid if pgid is not None else 0)
    except OCIError:
        if default:
            return 0, 0, []
        raise
    extra: list[int] = []
    if not group and uname is not None:
        for ent in _read(root, "/etc/group"):
            if len(ent) > 3 and uname in ent[3].split(",") and ent[2].isdigit():
                g = int(ent[2])
                if g != gid and g not in extra:
                    extra.append(g)
    return uid, gid, sorted(extra)
