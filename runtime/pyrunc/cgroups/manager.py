"""The one interface over the cgroup drivers: a container's cgroup in every hierarchy."""

import errno as _errno
from .. import oslite as os
import time

from ocispec.errors import OCIError

from . import paths
from .files import freezer_state, read, write
from .record import STATE_VERSION, dirs_of, procs_dir

R = "linux.resources"


class Manager:
    """A container's cgroup: v1 directories per controller, and/or one cgroup2 directory.

    Layouts: 'v1', 'v2' (unified) and 'hybrid' (v1 controllers plus a cgroup2 mount, where
    like runc we use v1 for every controller it has and still place the container in the
    cgroup2 tree so that /proc/PID/cgroup's 0:: line is the container's)."""

    def __init__(self, layout: str, v1: dict, v2: str | None, v2_mount: str | None,
                 created: list | None = None, systemd_unit: str | None = None):
        self.layout = layout
        self.v1 = dict(v1)
        self.v2 = v2
        self.v2_mount = v2_mount
        self.created = list(created or ())  # topmost directories create() made
        self.systemd_unit = systemd_unit
        self._made_v2: list = []  # create(part="v2") made these; part "v1" adds the rest
        self._v2_ctrls = None

    # -- construction ----------------------------------------------------------------

    @classmethod
    def for_container(cls, container_id: str, cgroups_path: str | None, *,
                      systemd: bool = False) -> "Manager":
        """Compute the container's cgroup directories; writes nothing."""
        unit = inner = base = None
        if systemd:
            # No systemd runs here to ask for a unit: the path its driver would give the
            # unit is used directly on cgroupfs.
            inner = paths.systemd_path(container_id, cgroups_path)
            if inner is not None:
                unit = os.path.basename(inner)
                base = paths.systemd_base()
        if inner is None:
            # runc's default for no cgroupsPath: the container id, below our own cgroup
            inner = paths.clean(cgroups_path) if cgroups_path else container_id
        if not inner.strip("/"):
            raise OCIError(f"linux.cgroupsPath: {cgroups_path!r} names no cgroup below the root")
        layout = paths.layout()
        v1, v2 = paths.resolve(inner, v2_parent=(layout == "v2" and base is None), base=base)
        _, v2m = paths.mounts()
        return cls(layout, v1, v2, v2m[0] if v2m else None, systemd_unit=unit)

    def to_state(self) -> dict:
        return {"version": STATE_VERSION, "layout": self.layout, "v1": self.v1, "v2": self.v2,
                "v2_mount": self.v2_mount, "created": self.created,
                "systemd_unit": self.systemd_unit}

    @classmethod
    def from_state(cls, d: dict) -> "Manager":
        if d.get("version") != STATE_VERSION:
            raise OCIError(f"cgroups: unknown cgroup state version {d.get('version')!r}")
        return cls(d["layout"], d["v1"], d["v2"], d["v2_mount"], d.get("created"),
                   d.get("systemd_unit"))

    def dirs(self) -> list:
        return dirs_of(self.v1, self.v2)

    def path(self, controller: str) -> str | None:
        """The directory for a v1 controller ('' for the cgroup2 one)."""
        return self.v2 if controller == paths.UNIFIED else self.v1.get(controller)

    # -- life cycle ------------------------------------------------------------------

    def plan(self) -> None:
        """Note in `created`, before create() makes anything, what it is going to make: a
        create killed half-way is undone from its saved plan. Each directory makes itself
        (no stat: cgroupfs lookups cost); parents create() finds missing are added then."""
        self.created = self.dirs()

    def create(self, note=None, part: str = "") -> None:
        """Make the directories. note(): called once before the first missing parent is
        made, when the missing parents of every hierarchy are in `created`, so that the
        caller can save the plan first. part "v2": the cgroup2 directory alone, "v1": the
        rest after it (init can be cloned into the first while the parent makes the others);
        until the last part `created` keeps the plan, the record of what may exist."""
        made = []
        todo = self.dirs()
        if part:
            todo = [d for d in todo if (d == self.v2) == (part == "v2")]
        try:
            for d in todo:
                try:
                    os.mkdir(d, 0o755)
                    made.append(d)
                    continue
                except FileExistsError:
                    continue
                except FileNotFoundError:
                    pass
                if note is not None:
                    # The first missing parent: every hierarchy's missing top goes into the
                    # plan at once, one save (under ctr, `/default` is missing in all ten).
                    added = False
                    for other in self.dirs():
                        top = _missing_top(other)
                        if top and top not in self.created:
                            self.created.append(top)
                            added = True
                    if added:  # else an earlier part saved them already
                        note()
                    note = None
                top = _missing_top(d)
                os.makedirs(d, 0o755, exist_ok=True)
                if top:
                    made.append(top)
            cpuset = self.v1.get("cpuset")
            if cpuset and any(cpuset == m or cpuset.startswith(m + "/") for m in made):
                _fill_cpuset(cpuset)
            if self.layout == "v2":
                from . import fs2
                fs2.enable(self.v2_mount, self.v2, None, "linux.cgroupsPath")
            # An existing frozen cgroup would freeze init as it joins, and create with it
            # (runc refuses at once).
            if part != "v2" and self.state() == "frozen":
                raise OCIError("container's cgroup unexpectedly frozen")
        except OSError as e:
            self._remove(made)
            raise OCIError(f"linux.cgroupsPath: cannot create cgroup {e.filename}: "
                           f"{os.strerror(e.errno).lower()}", errno=e.errno) from None
        except OCIError:
            self._remove(made)
            raise
        if part == "v2":
            self._made_v2 = made
        else:
            self.created = self._made_v2 + made

    def self_join(self, sub: dict | None = None) -> dict:
        """What a single-threaded child of the runtime joins itself, in the host's namespaces
        (see join_self): writing another process's pid (or a thread group) makes the kernel
        take its global threadgroup lock, whose first writer waits out an RCU grace period
        (7-11 ms here); a v1 `tasks` write of "0" moves only the writer and skips it, and a
        child forked with clone3 into the cgroup2 directory needs no write at all. `sub`:
        as for add()."""
        v1, v2 = [], None
        for ctrl, d in self._targets(sub):
            if ctrl == paths.UNIFIED:
                v2 = d
            elif os.path.join(d, "tasks") not in v1:
                v1.append(os.path.join(d, "tasks"))
        return {"tasks": v1, "v2": v2}

    def add_v2(self, pid: int, sub: dict | None = None) -> None:
        """Put pid in the cgroup2 directory alone (when a clone3 into it was refused)."""
        for ctrl, d in self._targets(sub):
            if ctrl == paths.UNIFIED:
                write(d, "cgroup.procs", pid, "linux.cgroupsPath")

    def _targets(self, sub: dict | None) -> list:
        """[(controller, directory)] a process joins: the container's cgroup in every
        hierarchy, or the sub-cgroups `sub` names (add())."""
        pairs = [*self.v1.items(), *([(paths.UNIFIED, self.v2)] if self.v2 else [])]
        if not sub:
            return pairs
        if self.layout == "v2" and set(sub) - {""}:
            raise OCIError("exec --cgroup: controller names are not allowed on cgroup v2")
        out = []
        for ctrl, d in pairs:
            rel = sub.get(ctrl, sub.get(""))
            t = os.path.join(d, rel) if rel else d
            if rel and not os.path.isdir(t):
                raise OCIError(f"exec --cgroup: {ctrl or 'cgroup2'} sub-cgroup {rel!r} "
                               f"does not exist in the container's cgroup")
            out.append((ctrl, t))
        return out

    def add(self, pid: int, sub: dict | None = None) -> None:
        """Put pid in the container's cgroups; `sub` (from exec --cgroup) maps a controller,
        or "" for all, to an existing sub-cgroup to use instead (runc's SubCgroupPaths)."""
        targets = []
        for _, d in self._targets(sub):
            if d not in targets:
                targets.append(d)
        for d in targets:
            try:
                write(d, "cgroup.procs", pid, "linux.cgroupsPath")
            except OCIError as e:
                if e.errno == _errno.ESRCH:
                    raise OCIError(f"cgroups: cannot add pid {pid}: no such process",
                                   errno=e.errno) from None
                raise

    def destroy(self) -> None:
        """Remove the cgroup in every hierarchy (sub-cgroups first) and the parents create()
        made; waits briefly for exiting tasks. Safe to call again."""
        if self.state() == "frozen":
            self.thaw()  # killed tasks of a frozen cgroup only exit once thawed
        failed = []
        deadline = time.monotonic() + 2  # for all hierarchies together
        for d in self.dirs():
            try:
                _rmtree(d, max(0.0, deadline - time.monotonic()))
            except OSError as e:
                failed.append(f"{d}: {os.strerror(e.errno).lower()}")
        for top in self.created:
            for d in self.dirs():
                if d.startswith(top + "/"):
                    p = os.path.dirname(d)
                    while len(p) >= len(top):
                        try:
                            os.rmdir(p)
                        except FileNotFoundError:
                            pass
                        except OSError:
                            break  # shared with another container: theirs to remove
                        p = os.path.dirname(p)
        if failed:
            raise OCIError("cgroups: cannot remove " + "; ".join(failed))

    @staticmethod
    def _remove(made: list) -> None:
        for top in reversed(made):
            try:
                _rmtree(top, wait=0)
            except OSError:
                pass

    # -- resources -------------------------------------------------------------------

    def _v2_available(self) -> set:
        from . import fs2
        if self._v2_ctrls is None:
            self._v2_ctrls = fs2.available(self.v2_mount) if self.v2 else set()
        return self._v2_ctrls

    def _where(self, v1name: str, v2name: str | None, field: str):
        """('v1', dir) or ('v2', dir) for a controller, enabling it on v2 if need be."""
        if v1name in self.v1:
            return "v1", self.v1[v1name]
        if self.v2 and v2name and v2name in self._v2_available():
            ctrls = set(read(self.v2, "cgroup.controllers").split())
            if v2name not in ctrls:
                from . import fs2
                fs2.enable(self.v2_mount, self.v2, (v2name,), field)
            return "v2", self.v2
        raise OCIError(f"{field}: the {v1name} controller is not available on this host")

    def set(self, resources: dict) -> None:
        """Apply linux.resources: only what it sets is written."""
        if not resources:
            return
        if not isinstance(resources, dict):
            raise OCIError(f"{R}: must be an object")
        # drivers load on first use: most starts need only fs1 (or only fs2)
        from . import fs1, fs2
        cpu = resources.get("cpu") or {}
        if cpu.get("cpus") or cpu.get("mems"):
            kind, d = self._where("cpuset", "cpuset", f"{R}.cpu.cpus")
            (fs1 if kind == "v1" else fs2).set_cpuset(d, cpu)
        rules = resources.get("devices")
        if rules:
            if not isinstance(rules, list):
                raise OCIError(f"{R}.devices: must be a list")
            if "devices" in self.v1:
                from . import devices
                devices.set_v1(self.v1["devices"], rules)
            elif self.v2:
                from . import ebpf
                ebpf.set_v2(self.v2, rules)
            else:
                raise OCIError(f"{R}.devices: the devices controller is not available on "
                               "this host")
        mem = resources.get("memory")
        if mem and any(v is not None for v in mem.values()):
            kind, d = self._where("memory", "memory", f"{R}.memory")
            (fs1 if kind == "v1" else fs2).set_memory(d, mem)
        if any(cpu.get(k) is not None for k in ("shares", "quota", "period", "realtimeRuntime",
                                                 "realtimePeriod", "idle", "burst")):
            kind, d = self._where("cpu", "cpu", f"{R}.cpu")
            if kind == "v1":
                fs1.set_cpu(d, cpu, self._made_parents(d))
            else:
                fs2.set_cpu(d, cpu)
        pids = resources.get("pids")
        if pids and pids.get("limit") is not None:
            kind, d = self._where("pids", "pids", f"{R}.pids")
            fs1.set_pids(d, pids)
        bio = resources.get("blockIO")
        if bio and any(bio.values()):
            kind, d = self._where("blkio", "io", f"{R}.blockIO")
            (fs1.set_blkio if kind == "v1" else fs2.set_io)(d, bio)
        huge = resources.get("hugepageLimits")
        if huge:
            kind, d = self._where("hugetlb", "hugetlb", f"{R}.hugepageLimits")
            (fs1.set_hugetlb if kind == "v1" else fs2.set_hugetlb)(d, huge)
        net = resources.get("network")
        if net:
            if net.get("classID") is not None:
                kind, d = self._where("net_cls", None, f"{R}.network.classID")
                fs1.set_net_cls(d, net["classID"])
            if net.get("priorities"):
                kind, d = self._where("net_prio", None, f"{R}.network.priorities")
                fs1.set_net_prio(d, net["priorities"])
        rdma = resources.get("rdma")
        if rdma:
            kind, d = self._where("rdma", "rdma", f"{R}.rdma")
            fs1.set_rdma(d, rdma)
        unified = resources.get("unified")
        if unified:
            if not self.v2:
                raise OCIError(f"{R}.unified: this host has no cgroup v2 hierarchy")
            fs2.set_unified(self.v2, unified, self.v2_mount)

    def _made_parents(self, d: str) -> tuple:
        """The ancestors of d that create() made, top first."""
        for top in self.created:
            if d.startswith(top + "/"):
                out, p = [], os.path.dirname(d)
                while len(p) >= len(top):
                    out.append(p)
                    p = os.path.dirname(p)
                return tuple(reversed(out))
        return ()

    # -- freezer ---------------------------------------------------------------------

    def freeze(self) -> None:
        self._freeze(True)

    def thaw(self) -> None:
        self._freeze(False)

    def _freeze(self, on: bool) -> None:
        d = self.v1.get("freezer")
        if d:
            want = "FROZEN" if on else "THAWED"
            write(d, "freezer.state", want, "pause" if on else "resume")
            done = lambda: read(d, "freezer.state").strip() == want  # noqa: E731
        elif self.v2:
            write(self.v2, "cgroup.freeze", int(on), "pause" if on else "resume")
            done = lambda: fs_events(self.v2).get("frozen") == int(on)  # noqa: E731
        else:
            raise OCIError("cgroups: no freezer on this host")
        delay = 0.0005
        deadline = time.monotonic() + 5
        n = 0
        while not done():
            n += 1
            if time.monotonic() > deadline:
                if on:
                    self._freeze(False)
                raise OCIError(f"cgroups: cannot {'freeze' if on else 'thaw'} the container: "
                               "tasks did not stop in 5s")
            if d and on and n % 50 == 0:
                # v1 can stay FREEZING when a task forks at the wrong moment: retry
                write(d, "freezer.state", "THAWED", "pause")
                write(d, "freezer.state", "FROZEN", "pause")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def state(self) -> str:
        return freezer_state(self.v1.get("freezer"), self.v2)

    # -- processes and statistics ----------------------------------------------------

    def pids(self) -> list:
        """Every process in the container's cgroup and its sub-cgroups."""
        d = procs_dir(self.v1, self.v2)
        out = []
        if not d:
            return out
        for root in _tree(d):
            try:
                text = read(root, "cgroup.procs")
            except FileNotFoundError:
                continue
            out.extend(int(p) for p in text.split())
        return out

    def oom_kills(self) -> int:
        """How many tasks the OOM killer has killed in the cgroup (for `events` to report
        an "oom" event when it grows)."""
        from .files import read_keyed
        if "memory" in self.v1:
            return read_keyed(self.v1["memory"], "memory.oom_control").get("oom_kill", 0)
        if self.v2:
            return read_keyed(self.v2, "memory.events").get("oom_kill", 0)
        return 0

    def stats(self) -> dict:
        from . import stats
        return stats.collect(self)


def fs_events(d: str) -> dict:
    from .files import read_keyed
    return read_keyed(d, "cgroup.events")


def _fill_cpuset(d: str) -> None:
    """A new v1 cpuset has no cpus or mems and refuses tasks: copy them down from the
    nearest ancestor that has them, as runc does."""
    chain = []  # [(dir, {name: value})], d first, up to the ancestor that has both
    p = d
    while True:
        try:
            vals = {n: read(p, n).strip() for n in ("cpuset.cpus", "cpuset.mems")}
        except FileNotFoundError:
            break
        chain.append((p, vals))
        if all(vals.values()):
            break
        p = os.path.dirname(p)
    for (c, vals), (_, above) in zip(reversed(chain[:-1]), reversed(chain[1:])):
        for name, value in vals.items():
            if not value:
                write(c, name, above[name], "linux.resources.cpu")
                vals[name] = above[name]


def _missing_top(d: str) -> str | None:
    """The topmost missing directory on the way to d (None if d exists)."""
    if os.path.isdir(d):
        return None
    top = d
    while not os.path.isdir(os.path.dirname(top)):
        top = os.path.dirname(top)
    return top


def _tree(d: str, topdown: bool = True) -> list:
    """d and every directory below it, parents first (or children first): a cgroup tree
    holds no symlinks, and a directory that goes away meanwhile is left out."""
    out = []
    try:
        with os.scandir(d) as it:
            subs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return out
    for sub in subs:
        out.extend(_tree(sub, topdown))
    return [d, *out] if topdown else [*out, d]


def _rmtree(d: str, wait: float = 1.0) -> None:
    """rmdir a cgroup and its sub-cgroups, children first; EBUSY while tasks still exit."""
    try:
        os.rmdir(d)  # the common case, tried first: a listing of cgroupfs dirs costs
        return
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        if e.errno != _errno.EBUSY:
            raise
    subdirs = _tree(d, topdown=False)
    deadline = time.monotonic() + wait
    delay = 0.001
    for sub in subdirs:
        while True:
            try:
                os.rmdir(sub)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != _errno.EBUSY or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)


def join_self(plan: dict) -> int:
    """In the child: join the v1 hierarchies of Manager.self_join()'s plan; returns an fd
    of its cgroup2 directory for linux.clone (-1 when there is none)."""
    join_v1(plan)
    return open_v2(plan)


def join_v1(plan: dict) -> None:
    """Move the calling process (alone) into the v1 hierarchies of a self_join() plan."""
    for path in plan["tasks"]:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as e:
            raise OCIError(f"linux.cgroupsPath: cannot join cgroup {os.path.dirname(path)}: "
                           f"{os.strerror(e.errno).lower()}", errno=e.errno) from None


def open_v2(plan: dict) -> int:
    """An fd of a self_join() plan's cgroup2 directory for linux.clone (-1: none)."""
    if not plan["v2"]:
        return -1
    return os.open(plan["v2"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

