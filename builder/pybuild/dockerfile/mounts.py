"""`RUN --mount=...` values -> ast.Mount, with BuildKit's rules (commands_runmount.go).

The value is CSV (`type=cache,target=/c,"id=a,b"`). Field values may hold `$VAR`: at parse
time such fields are kept raw (in `options`, typed field left alone) and checks that
depend on them are skipped; `parse_mount(value, expand)` with the stage's expander
(what `Scope.apply` does for RUN) gives the final, fully checked mount.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable

from . import ast

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
CACHE_SHARING = ("shared", "private", "locked")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")


class MountError(ValueError):
    """A bad --mount value; the caller adds the position."""


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def parse_size(s: str) -> int:
    """docker's RAMInBytes: "64m", "1.5GiB", "100" (binary multipliers)."""
    m = _SIZE_RE.match(s)
    if not m:
        raise ValueError(s)
    mult = 1024 ** ("kmgtp".index(m.group(2).lower()) + 1) if m.group(2) else 1
    return int(float(m.group(1)) * mult)


def _bool(key: str, v: str) -> bool:
    low = v.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise MountError(f"{key}={_q(v)}: expected true or false")


def parse_mount(value: str, expand: Callable[[str], str] | None = None) -> ast.Mount:
    """One --mount value. expand: the stage's word expander, or None at parse time."""
    try:
        fields = next(csv.reader([value], skipinitialspace=False), [])
    except csv.Error as e:
        raise MountError(f"invalid CSV {_q(value)}: {e}") from None
    m = ast.Mount()
    ro_auto = True
    sharing_set = False
    deferred = False
    for fld in fields:
        key, eq, v = fld.partition("=")
        key = key.strip().lower()
        m.options[key] = v
        if not eq:
            if key in ("readonly", "ro"):
                m.readonly, ro_auto = True, False
            elif key in ("readwrite", "rw"):
                m.readonly, ro_auto = False, False
            elif key == "required":
                if m.type not in ("secret", "ssh"):
                    raise MountError(f"unexpected key 'required' for mount type {_q(m.type)}")
                m.required = True
            else:
                raise MountError(f"invalid field {_q(fld)}: expected a key=value pair")
            continue
        if "$" in v:
            if expand is None:
                # Decided once the stage's variables are known.
                deferred = True
                if key in ("from", "source", "src", "target", "dst", "destination", "id", "env"):
                    _set_plain(m, key, v)
                continue
            v = expand(v)
        if key == "type":
            t = v.lower()
            if t not in MOUNT_TYPES:
                raise MountError(f"unsupported mount type {_q(v)}: expected one of "
                                 + ", ".join(MOUNT_TYPES))
            m.type = t
        elif key in ("readonly", "ro"):
            m.readonly, ro_auto = _bool(key, v), False
        elif key in ("readwrite", "rw"):
            m.readonly, ro_auto = not _bool(key, v), False
        elif key == "required":
            if m.type not in ("secret", "ssh"):
                raise MountError(f"unexpected key 'required' for mount type {_q(m.type)}")
            m.required = _bool(key, v)
        elif key == "size":
            if m.type != "tmpfs":
                raise MountError(f"unexpected key 'size' for mount type {_q(m.type)}")
            try:
                m.size = parse_size(v)
            except ValueError:
                raise MountError(f"invalid size {_q(v)}: expected e.g. 64m") from None
        elif key == "sharing":
            if m.type != "cache":
                raise MountError(f"invalid cache sharing set for {m.type} mount")
            if v.lower() not in CACHE_SHARING:
                raise MountError(f"unsupported sharing value {_q(v)}: expected one of "
                                 + ", ".join(CACHE_SHARING))
            m.sharing, sharing_set = v.lower(), True
        elif key in ("mode", "uid", "gid"):
            try:
                num = int(v, 8 if key == "mode" else 10)
                if num < 0:
                    raise ValueError
            except ValueError:
                raise MountError(f"invalid {key} {_q(v)}") from None
            setattr(m, key, num)
        elif key in ("from", "source", "src", "target", "dst", "destination", "id", "env"):
            _set_plain(m, key, v)
        else:
            raise MountError(f"unexpected key {_q(key)} in {_q(fld)}")
    if deferred:
        return m
    if m.type not in ("secret", "ssh", "cache"):
        for key in ("mode", "uid", "gid"):
            if getattr(m, key) is not None:
                raise MountError(f"{key} not allowed for {_q(m.type)} type mounts")
    if ro_auto:
        m.readonly = m.type not in ("cache", "tmpfs")
    if sharing_set and m.type != "cache":
        raise MountError(f"invalid cache sharing set for {m.type} mount")
    if m.type == "secret":
        if m.from_ is not None:
            raise MountError("secret mount should not have a from")
        if not (m.source or m.target or m.id):
            raise MountError("invalid secret mount: one of source, target, id required")
        if m.source and m.id:
            raise MountError("secret mount: both source and id can't be set")
        if not m.id:
            m.id = (m.source or m.target).rstrip("/").rsplit("/", 1)[-1]
        if not m.target and not m.env:
            m.target = "/run/secrets/" + m.id
    elif m.type == "ssh":
        m.id = m.id or "default"
        m.target = m.target or "/run/buildkit/ssh_agent.0"
    else:
        # no target: BuildKit mounts at the working directory (joined at dispatch)
        if m.type == "cache" and not m.id:
            m.id = m.target or "."  # path.Clean of the target as written
    return m


def _set_plain(m: ast.Mount, key: str, v: str) -> None:
    if key == "from":
        m.from_ = v
    elif key in ("source", "src"):
        m.source = v
    elif key in ("target", "dst", "destination"):
        m.target = v
    elif key == "id":
        m.id = v
    else:
        m.env = v
