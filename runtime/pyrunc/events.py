"""`pyrunc events ID [--stats] [--interval 5s]`: one JSON object per line, as runc prints:
{"type": "stats", "id": ID, "data": {...}} every interval (once with --stats), and
{"type": "oom", "id": ID} when the OOM killer strikes in the container's cgroup."""

import json
import re
import sys
import time

from ocispec.errors import OCIError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration for the forms runc users write: 5s, 100ms, 1m30s, 0.5s."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise OCIError(f"events: invalid --interval {text!r} (use e.g. 5s, 500ms)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def events(a, log) -> int:
    from .commands import _id
    from .container import _manager
    from .state import Container

    cid = _id(a, "events")
    interval = parse_duration(a.opts.get("interval") or "5s")
    if interval <= 0:
        raise OCIError("events: --interval must be greater than 0")
    c = Container.load(a.g["root"], cid, lock=False)
    if c.status() == "stopped":
        raise OCIError("container not running")
    m = _manager(c)
    if m is None:
        raise OCIError("events: the container has no cgroup")
    if a.opts.get("stats"):
        _emit({"type": "stats", "id": cid, "data": m.stats()})
        return 0
    ooms = m.oom_kills()
    next_stats = time.monotonic()
    while c.status() != "stopped":
        n = m.oom_kills()
        if n > ooms:
            _emit({"type": "oom", "id": cid})
            ooms = n
        if time.monotonic() >= next_stats:
            try:
                _emit({"type": "stats", "id": cid, "data": m.stats()})
            except OSError:
                break  # the cgroup went with the container
            next_stats += interval
        time.sleep(min(0.1, interval))
    return 0
