"""`pyrunc update`: new resource limits for a running container."""

import json
import sys

from ocispec.errors import OCIError

from .state import Container

# runc update flag -> keyword of cgroups.resources_from_update_flags
_FLAG_KEYS = ("memory", "memory-reservation", "memory-swap", "kernel-memory", "kernel-memory-tcp",
              "cpu-share", "cpu-quota", "cpu-period", "cpu-rt-runtime", "cpu-rt-period",
              "cpuset-cpus", "cpuset-mems", "pids-limit", "blkio-weight")

_KW = {"cpu-share": "cpu_shares"}


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def update(a, log) -> int:
    from . import cgroups

    if not a.args:
        raise OCIError('"update" requires a container id')
    for unsupported in ("l3-cache-schema", "mem-bw-schema"):
        if a.opts[unsupported] is not None:
            raise OCIError(f"--{unsupported}: Intel RDT is not supported on this host")
    if a.opts["resources"]:
        src = a.opts["resources"]
        try:
            raw = sys.stdin.read() if src == "-" else open(src).read()
            res = json.loads(raw)
        except OSError as e:
            raise OCIError(f"--resources {src}: {e.strerror}") from None
        except ValueError as e:
            raise OCIError(f"--resources {src}: invalid JSON: {e}") from None
        if not isinstance(res, dict):
            raise OCIError(f"--resources {src}: must be a JSON object (linux.resources)")
    else:
        flags = {_KW.get(k, k.replace("-", "_")): a.opts[k] for k in _FLAG_KEYS
                 if a.opts[k] is not None}
        res = cgroups.resources_from_update_flags(**flags)
    # Like runc's update, leave device rules alone: v1 rules are rewritten as "deny all, then
    # allow...", which would cut a running container off its devices for a moment.
    res.pop("devices", None)
    cgroups.validate_resources(res)
    c = Container.load(a.g["root"], a.args[0])
    try:
        if c.status() == "stopped":
            raise OCIError("container not running")
        if not c.data.get("cgroup"):
            raise OCIError("cannot update: the container has no cgroup")
        cgroups.Manager.from_state(c.data["cgroup"]).set(res)
        cfg = c.data.setdefault("config", {})
        lx = cfg.setdefault("linux", {})
        lx["resources"] = _merge(lx.get("resources") or {}, res)
        c.save()
    finally:
        c.unlock()
    return 0
