"""Where a process's cgroup files are, on cgroup v1, v2 and hybrid hosts.

The harness never assumes a layout: it reads /proc/PID/cgroup of the container's init and
maps each line onto the mounted hierarchy that holds it. On a hybrid host (v1 controllers
plus a cgroup2 mount beside them) runtimes manage resources through the v1 hierarchies,
so a controller counts as available where the host's cgroup mode puts it.
"""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: str
    root: str                   # the hierarchy path mounted there (usually "/")
    version: int                # 1 or 2
    controllers: frozenset      # v1: from the mount options; v2: cgroup.controllers


def hierarchies() -> list[Hierarchy]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            fstype = rfields[0]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            mp, root = fields[4], fields[3]
            if fstype == "cgroup2":
                try:
                    with open(os.path.join(mp, "cgroup.controllers")) as c:
                        ctrl = frozenset(c.read().split())
                except OSError:
                    ctrl = frozenset()
                found.append(Hierarchy(mp, root, 2, ctrl))
            else:
                opts = rfields[2].split(",")
                ctrl = frozenset(o for o in opts if o not in ("rw", "ro") and "=" not in o
                                 and o not in ("relatime", "noexec", "nosuid", "nodev",
                                               "clone_children", "xattr", "noprefix"))
                named = frozenset(o for o in opts if o.startswith("name="))
                found.append(Hierarchy(mp, root, 1, ctrl | named))
    return found


def mode() -> str:
    """"v2" on a unified host, "v1" on legacy and hybrid hosts."""
    for h in hierarchies():
        if h.mountpoint == "/sys/fs/cgroup":
            return "v2" if h.version == 2 else "v1"
    return "v1" if any(h.version == 1 for h in hierarchies()) else "v2"


def hierarchy_for(controller: str) -> Hierarchy | None:
    """The hierarchy a runtime manages `controller` through on this host, if any.

    On a hybrid host a controller that only the cgroup2 mount has (hugetlb, here) is still
    the host's: a runtime that handles the hybrid layout uses it there."""
    want = 2 if mode() == "v2" else 1
    for h in hierarchies():
        if h.version == want and controller in h.controllers:
            return h
    for h in hierarchies():
        if h.version == 2 and controller in h.controllers:
            return h
    return None


def missing(controller: str) -> str | None:
    """None when the controller is usable, else the host feature that is missing."""
    if hierarchy_for(controller):
        return None
    if mode() == "v1":
        elsewhere = any(controller in h.controllers for h in hierarchies() if h.version == 2)
        extra = (" (this hybrid host has it only on the cgroup2 mount, which runtimes do "
                 "not use for resources in v1 mode)") if elsewhere else ""
        return f"no {controller} controller on the host's cgroup v1 hierarchies{extra}"
    return f"no {controller} controller in the host's cgroup v2 hierarchy"


def cgroup_of(pid: int, controller: str) -> tuple[str, str]:
    """(cgroup path as /proc/PID/cgroup shows it, host directory) of pid for controller."""
    h = hierarchy_for(controller)
    if h is None:
        raise LookupError(missing(controller))
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if h.version == 2 and ctrls == "" or (
                    h.version == 1 and controller in ctrls.split(",")):
                rel = os.path.relpath(path, h.root) if h.root != "/" else path.lstrip("/")
                return path, os.path.normpath(os.path.join(h.mountpoint, rel))
    raise LookupError(f"/proc/{pid}/cgroup has no line for {controller}")


def cgroup_dirs(pid: int) -> dict[str, str]:
    """Every hierarchy's directory of pid: {line key: host dir}."""
    dirs = {}
    by_ctrl = {}
    for h in hierarchies():
        key = "" if h.version == 2 else ",".join(sorted(h.controllers))
        by_ctrl.setdefault(key, h)
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            key = ",".join(sorted(ctrls.split(","))) if ctrls else ""
            h = by_ctrl.get(key)
            if h:
                rel = os.path.relpath(path, h.root) if h.root != "/" else path.lstrip("/")
                dirs[ctrls or "unified"] = os.path.normpath(os.path.join(h.mountpoint, rel))
    return dirs


def has_file(controller: str, name: str) -> bool:
    """Whether the host's cgroups of this controller offer a file (the root cgroup lacks
    some that every child has, so look at our own cgroup and its children too)."""
    h = hierarchy_for(controller)
    if h is None:
        return False
    try:
        _, own = cgroup_of(os.getpid(), controller)
    except LookupError:
        own = h.mountpoint
    for d in (own, h.mountpoint):
        if os.path.exists(os.path.join(d, name)):
            return True
        try:
            for e in os.scandir(d):
                if e.is_dir() and os.path.exists(os.path.join(e.path, name)):
                    return True
        except OSError:
            pass
    return False


def find_named(token: str, max_depth: int = 8) -> list[str]:
    """Cgroup directories, in any hierarchy, whose name contains token."""
    found = []

    def walk(d: str, depth: int):
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if token in e.name:
                    found.append(e.path)
                if depth < max_depth:
                    walk(e.path, depth + 1)

    for h in hierarchies():
        walk(h.mountpoint, 0)
    return found


def procs(d: str) -> list[int]:
    try:
        with open(os.path.join(d, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []
