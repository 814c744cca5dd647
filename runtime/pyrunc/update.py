"""`pyrunc update ID`: change a live container's cgroup limits, as `runc update` does.

Either --resources FILE|- (a linux.resources JSON object) or the per-field flags, like runc.
Device rules are left alone (runc's update does not touch them either: rewriting v1 device
rules would deny every device for a moment under a running container).
"""

import json
import sys

from ocispec.errors import OCIError

_FLAGS = ("memory", "memory-reservation", "memory-swap", "kernel-memory", "kernel-memory-tcp",
          "cpu-shares", "cpu-quota", "cpu-period", "cpu-rt-runtime", "cpu-rt-period",
          "cpuset-cpus", "cpuset-mems", "pids-limit", "blkio-weight")


def _read_resources(path: str) -> dict:
    try:
        text = sys.stdin.read() if path == "-" else open(path).read()
    except OSError as e:
        raise OCIError(f"update: --resources {path}: {e.strerror}") from None
    try:
        res = json.loads(text)
    except ValueError as e:
        raise OCIError(f"update: --resources {path}: invalid JSON: {e}") from None
    if not isinstance(res, dict):
        raise OCIError(f"update: --resources {path}: must be a linux.resources object")
    return res


def _merge(old: dict, new: dict) -> dict:
    out = dict(old)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def update(a, log) -> int:
    from .cgroups import resources_from_update_flags
    from .commands import _id
    from .container import _manager
    from .state import Container

    cid = _id(a, "update")
    if a.opts.get("l3-cache-schema") or a.opts.get("mem-bw-schema"):
        raise OCIError("update: Intel RDT (--l3-cache-schema, --mem-bw-schema) is not supported")
    if a.opts.get("resources"):
        res = _read_resources(a.opts["resources"])
    else:
        res = resources_from_update_flags(**{k: a.opts.get(k) for k in _FLAGS})
    res.pop("devices", None)
    c = Container.load(a.g["root"], cid)
    try:
        if c.status() == "stopped":
            raise OCIError("container not running")
        m = _manager(c)
        if m is None:
            raise OCIError("update: the container has no cgroup")
        m.set(res)
        # keep the config in the state current, as runc does, for later readers
        cfg = c.data.get("config") or {}
        linux = cfg.setdefault("linux", {})
        linux["resources"] = _merge(linux.get("resources") or {}, res)
        c.save()
    finally:
        c.unlock()
    return 0
