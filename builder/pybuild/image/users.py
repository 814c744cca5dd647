"""User and group names resolved against an image's /etc/passwd and /etc/group."""
import os

from ocispec import users
from ocispec.errors import OCIError

from ..rootfs import resolve_in_root


def _read(root: str | None, path: str) -> list[list[str]]:
    if root is None:
        return []
    return users.read_db(os.path.join(root, resolve_in_root(root, path).lstrip("/")))


def _uid(root, name: str, what: str) -> tuple[int, int | None]:
    if name.isdigit():
        uid = int(name)
        for ent in _read(root, "/etc/passwd"):
            if len(ent) > 3 and ent[2] == name:
                return uid, int(ent[3])
        return uid, None
    for ent in _read(root, "/etc/passwd"):
        if len(ent) > 3 and ent[0] == name:
            return int(ent[2]), int(ent[3])
    raise OCIError(f"{what}: unknown user {name!r}: not in the image's /etc/passwd")


def _gid(root, name: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    for ent in _read(root, "/etc/group"):
        if len(ent) > 2 and ent[0] == name:
            return int(ent[2])
    raise OCIError(f"{what}: unknown group {name!r}: not in the image's /etc/group")


def resolve_chown(root: str | None, spec: str, what: str) -> tuple[int, int]:
    """`user[:group]` (names or numbers) -> (uid, gid); a lone user takes its own gid."""
    user, _, group = spec.partition(":")
    uid, pgid = _uid(root, user, what)
    if group:
        return uid, _gid(root, group, what)
    if pgid is None:
        pgid = uid if user.isdigit() else 0
    return uid, pgid


def resolve_user(root: str | None, spec: str, what: str) -> tuple[int, int, list[int]]:
    """USER for a RUN: (uid, gid, supplementary gids from /etc/group)."""
    if not spec:
        return 0, 0, []
    user, _, group = spec.partition(":")
    uid, pgid = _uid(root, user, what)
    gid = _gid(root, group, what) if group else (pgid if pgid is not None else 0)
    extra = []
    if not group:
        uname = user
        if user.isdigit():
            for ent in _read(root, "/etc/passwd"):
                if len(ent) > 2 and ent[2] == user:
                    uname = ent[0]
                    break
        for ent in _read(root, "/etc/group"):
            if len(ent) > 3 and uname in ent[3].split(",") and ent[2].isdigit():
                g = int(ent[2])
                if g != gid and g not in extra:
                    extra.append(g)
    return uid, gid, extra
