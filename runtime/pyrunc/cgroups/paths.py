"""Where the cgroup hierarchies are mounted and where a container's cgroup goes in each.

The mount table is read once per process: pyrunc runs on every container start and a
busy host's mountinfo is long.
"""

from .. import pathlite

from ocispec.errors import OCIError
from ocispec.tables import CGROUP_V1_CONTROLLERS

UNIFIED = ""  # key of the cgroup2 hierarchy in path maps, as runc's cgroup_paths has it

_mounts = None
_own = None


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape")


def mounts(mountinfo: str = "/proc/self/mountinfo"):
    """Return (v1, v2): v1 maps each v1 controller (and name=X) to (mountpoint, root,
    options of its hierarchy); v2 is (mountpoint, root) of the cgroup2 mount or None."""
    global _mounts
    if _mounts is not None and mountinfo == "/proc/self/mountinfo":
        return _mounts
    v1, v2 = {}, None
    with open(mountinfo) as f:
        for line in f:
            if " - cgroup" not in line:
                continue
            pre, _, post = line.partition(" - ")
            fstype, _, superopts = post.split(" ", 2)
            fields = pre.split(" ")
            root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
            if fstype == "cgroup2":
                if v2 is None:
                    v2 = (mountpoint, root)
            elif fstype == "cgroup":
                opts = [o for o in superopts.strip().split(",")
                        if o in CGROUP_V1_CONTROLLERS or o.startswith("name=")]
                for o in opts:
                    v1.setdefault(o, (mountpoint, root, ",".join(opts)))
    result = (v1, v2)
    if mountinfo == "/proc/self/mountinfo":
        _mounts = result
    return result


def own_cgroups(pid: str = "self") -> dict:
    """The cgroup of a process in each hierarchy: controller (or UNIFIED) -> path."""
    global _own
    if pid == "self" and _own is not None:
        return _own
    own = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if not ctrls:
                own[UNIFIED] = path
            for c in ctrls.split(","):
                if c:
                    own[c] = path
    if pid == "self":
        _own = own
    return own


def layout() -> str:
    """'v1', 'v2' (unified) or 'hybrid' (v1 controllers plus a cgroup2 mount)."""
    v1, v2 = mounts()
    if v1:
        return "hybrid" if v2 else "v1"
    if v2:
        return "v2"
    raise OCIError("cgroups: no cgroup filesystem is mounted (see /proc/self/mountinfo)")


def clean(path: str) -> str:
    """runc's CleanPath: no '..' can climb above the start, relative stays relative."""
    if not path:
        return ""
    cleaned = pathlite.normpath("/" + path)
    return cleaned if path.startswith("/") else cleaned.lstrip("/")


def _under_mount(mountpoint: str, root: str, cgpath: str) -> str:
    # A hierarchy mounted from a subdirectory (root != "/") shows cgroup paths below it.
    if root != "/" and (cgpath == root or cgpath.startswith(root + "/")):
        cgpath = cgpath[len(root):]
    return mountpoint + "/" + cgpath.lstrip("/") if cgpath.strip("/") else mountpoint


def resolve(inner: str, v2_parent: bool = False, base: dict | None = None
            ) -> tuple[dict, str | None]:
    """Directories of the cgroup `inner` in each hierarchy: ({controller: dir}, unified dir).

    Absolute: that path under each hierarchy's mountpoint. Relative: below the calling
    process's own cgroup in each hierarchy (runc's rule for cgroupfs). On a pure v2 host
    (v2_parent) relative means below the parent of our cgroup, as runc's fs2 does: our
    own cgroup has tasks, so it cannot enable controllers for a child. `base` gives other
    starting cgroups per controller (systemd paths start at pid 1's)."""
    v1, v2 = mounts()
    rel = not inner.startswith("/") or base is not None
    own = base if base is not None else (own_cgroups() if rel else {})
    dirs = {}
    for ctrl, (mountpoint, root, _) in v1.items():
        base = _under_mount(mountpoint, root, own.get(ctrl, "/")) if rel else mountpoint
        dirs[ctrl] = pathlite.join(base, inner.lstrip("/")) if inner.strip("/") else base
    unified = None
    if v2 is not None:
        mountpoint, root = v2
        mine = own.get(UNIFIED, "/") if rel else "/"
        if v2_parent:
            mine = pathlite.dirname(mine)
        base = _under_mount(mountpoint, root, mine) if rel else mountpoint
        unified = pathlite.join(base, inner.lstrip("/")) if inner.strip("/") else base
    return dirs, unified


def expand_slice(slice_: str) -> str:
    """systemd's slice to path rule: 'a-b-c.slice' -> '/a.slice/a-b.slice/a-b-c.slice'."""
    if not slice_.endswith(".slice") or "/" in slice_:
        raise OCIError(f"linux.cgroupsPath: invalid systemd slice name {slice_!r}")
    name = slice_[: -len(".slice")]
    if name == "-":
        return "/"
    if not name or name.startswith("-") or name.endswith("-") or "--" in name:
        raise OCIError(f"linux.cgroupsPath: invalid systemd slice name {slice_!r}")
    path, prefix = "", ""
    for part in name.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def systemd_path(container_id: str, cgroups_path: str | None) -> str | None:
    """The cgroupfs path runc's systemd driver gives 'slice:prefix:name' (with no cgroupsPath:
    'system.slice:runc:ID'). Returns None for a plain path, which is then used as is: this
    host has no systemd to ask, so only the path is honoured, not the unit."""
    if not cgroups_path:
        slice_, prefix, name = "system.slice", "runc", container_id
    else:
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            return None
        slice_, prefix, name = parts
        slice_ = slice_ or "system.slice"
    if "/" in name or "/" in prefix:
        raise OCIError(f"linux.cgroupsPath: {cgroups_path!r}: a systemd unit name has no '/'")
    if name.endswith(".slice"):
        unit = name
    else:
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return pathlite.join(expand_slice(slice_), unit)


def systemd_base() -> dict:
    """Where runc's systemd driver puts slices on v1: below pid 1's cgroup in each
    hierarchy, minus a trailing init.scope; on the cgroup2 tree, at its root."""
    base = {}
    for ctrl, path in own_cgroups("1").items():
        path = pathlite.normpath(path)
        if path.endswith("init.scope"):
            path = path[: -len("init.scope")] or "/"
        base[ctrl] = path
    base[UNIFIED] = "/"
    return base


def online_cpus() -> str:
    try:
        with open("/sys/devices/system/cpu/online") as f:
            return f.read().strip()
    except OSError:
        return "?"
