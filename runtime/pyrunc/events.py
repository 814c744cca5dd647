"""`pyrunc events`: stats and OOM events of a container, as runc prints them."""

import time

from ocispec import fastjson as json
from ocispec.errors import OCIError

from .state import Container


def _interval(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for u in ("ms", "s", "m", "h"):
        if text.endswith(u) and text[: -len(u)].replace(".", "", 1).isdigit():
            return float(text[: -len(u)]) * units[u]
    raise OCIError(f"--interval {text!r}: use a duration such as 5s or 500ms")


def events(a, log) -> int:
    import gc

    from .cgroups import Manager

    gc.enable()  # a stream that lasts: cycles are collected again (__main__ turned it off)

    if not a.args:
        raise OCIError('"events" requires a container id')
    cid = a.args[0]
    interval = _interval(a.opts["interval"])
    c = Container.load(a.g["root"], cid, lock=False)
    if c.status() == "stopped":
        raise OCIError("container not running")
    if not c.data.get("cgroup"):
        raise OCIError("events: the container has no cgroup")
    m = Manager.from_state(c.data["cgroup"])

    def emit(kind: str, data=None) -> None:
        ev = {"type": kind, "id": cid}
        if data is not None:
            ev["data"] = data
        print(json.dumps(ev), flush=True)

    if a.opts["stats"]:
        emit("stats", m.stats())
        return 0
    ooms = m.oom_kills()
    next_stats = time.monotonic()
    while c.init_alive():
        now = time.monotonic()
        if now >= next_stats:
            emit("stats", m.stats())
            next_stats = now + interval
        n = m.oom_kills()
        if n > ooms:
            emit("oom")
            ooms = n
        time.sleep(min(0.2, interval))
    return 0
