"""Starting a container's init: the fork dance.

parent (pyrunc create, host namespaces)
  └─ stage1: user namespace first (the parent writes its id maps), then joins namespaces
     given by path and unshares the new ones; forks init and exits
       └─ init: pid 1 of the new pid namespace (see init.py)

or, with no user, time or by-path namespace (direct_flags), without stage1:

parent
  └─ init: cloned (clone3) into all its new namespaces and its cgroup2 directory at once

They talk over pyrunc.sync's channel: its docstring has the messages, who sends each and
when. The parent joins stage1 to the container's cgroups right after forking it, so the
first attach to a v1 cpu cgroup (it can block ~10 ms in the kernel) overlaps stage1's
namespace work. A child that dies instead of answering (killed) is create's error too,
"container init exited during setup ... (killed by signal N)"; stage1 dies with create
(PR_SET_PDEATHSIG), init reads the end of the socket. The parent is a child subreaper, so
init (orphaned when stage1 exits) is reparented to it and `run` can wait for it.
"""

import errno
from . import oslite as os
import _signal as signal  # the C module: `signal` imports enum (~1 ms) for names we do not need

from ocispec.errors import OCIError
from ocispec.tables import NAMESPACES

from . import linux, sync, trace
from .sync import Channel, kill_reap, reap, send_error


def write_id_maps(pid: int, linux_cfg: dict) -> None:
    from . import procfs

    def fmt(maps):
        return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)

    for key, name in (("uidMappings", "uid_map"), ("gidMappings", "gid_map")):
        maps = linux_cfg.get(key)
        if not maps:
            continue
        try:
            procfs.write(f"{pid}/{name}", fmt(maps))
        except OSError as e:
            raise OCIError(f"linux.{key}: cannot write {name}: {e.strerror}") from None


class Spawn:
    """What the parent knows about the init it is starting."""

    def __init__(self, cfg: dict, rootfs: str, bundle: str, container_id: str):
        self.cfg = cfg
        self.rootfs = rootfs
        self.bundle = bundle
        self.id = container_id
        self.fifo_path = ""
        self.console_fd = -1
        self.no_pivot = False
        self.no_new_keyring = False
        self.preserve_fds = 0
        self.init_pid = 0
        self.cgroup_state: dict | None = None
        self.mount_trees: dict[int, int] = {}  # mounts index -> detached source tree
        self.v1_join: dict | None = None  # the self-join plan init carries out on "continue"
        # Called by the parent at the protocol's steps.
        # stage1 joins the cgroups itself and forks init into them (see can_join_self)
        self.self_join = False
        self.on_cgroups = lambda pid: None  # make the cgroups (join stage1 unless self_join);
                                            # extra "continue" fields, "join": the self-join plan
        self.on_resources = lambda pid: None  # linux.resources into the cgroups
        self.on_v2 = lambda pid: None       # init into the cgroup2 dir (a refused clone3)
        self.on_pid = lambda pid: None      # netDevices: before "continue"
        self.on_hooks = lambda pid: None


def can_join_self(cfg: dict) -> bool:
    """Whether stage1 can join the container's cgroups itself (Manager.self_join): it is
    still root in the host's user namespace and sees the host's cgroupfs at the paths the
    parent made (no user namespace; mount and cgroup namespaces not joined by path)."""
    for ns in (cfg.get("linux") or {}).get("namespaces") or ():
        t = ns.get("type")
        if t == "user" or (t in ("mount", "cgroup") and ns.get("path")):
            return False
    return True


def direct_flags(cfg: dict) -> int | None:
    """The clone flags of init forked straight from the parent, in all its new namespaces
    at once (no stage1: one Python fork fewer, whose copy-on-write faults cost ~3 ms here),
    or None where stage1 is needed: a user namespace (the parent writes its id maps between
    its unshare and the rest), a namespace joined by path (setns order; a pid namespace only
    takes in the joiner's children), a time namespace (its offsets are written before any
    process is in it)."""
    flags = 0
    for ns in (cfg.get("linux") or {}).get("namespaces") or ():
        t = ns.get("type")
        if ns.get("path") or t in ("user", "time"):
            return None
        if t != "cgroup":  # init unshares it once it is in its cgroups
            flags |= NAMESPACES[t][0]
    return flags


def start_init(sp: Spawn) -> int:
    """Fork init (through stage1 where direct_flags() says so) and drive it until it is
    ready. Returns init's host pid."""
    # The init may sit in a user namespace that cannot read the host's Python (or in a rootfs
    # without it): import the process-settings modules and compile seccomp here; fork keeps them.
    from . import privileges  # noqa: F401
    seccomp_cfg = (sp.cfg.get("linux") or {}).get("seccomp")
    if seccomp_cfg:
        from . import seccomp

        seccomp.prepare(seccomp_cfg, connect=False)
    ch, child_ch = sync.pair()
    fifo_fd = os.open(sp.fifo_path, os.O_PATH | os.O_CLOEXEC)
    linux.set_subreaper()
    trace.mark("socketpair, imports (privileges)")
    parent = os.getpid()
    flags = direct_flags(sp.cfg) if sp.self_join else None
    if flags is not None and linux.has_clone3():
        return _start_direct(sp, ch, child_ch, fifo_fd, flags)
    stage1 = os.fork()
    if stage1 == 0:  # pragma: no cover - runs in the child
        # Init cannot die with create the same way: stage1, its parent, exits on purpose.
        # It is born in the cgroups create has recorded, and reads the end of the socket.
        trace.child("stage1")
        _die_with_parent(parent)
        ch.close()
        ch = child_ch
        try:
            _stage1(sp, ch, fifo_fd, parent)
        except BaseException as e:  # everything must reach the parent as a message
            send_error(ch, e)
        os._exit(1)
    child_ch.close()
    os.close(fifo_fd)
    # Until stage1 has sent init's pid, init may hold the socket's other end: a stage1 killed
    # right after forking it would leave both waiting. Wake up now and then to look at it.
    ch.sock.settimeout(0.05)
    trace.mark("fork stage1")
    try:
        extra = sp.on_cgroups(stage1) or {}
        join = extra.pop("join", None)
        try:
            ch.send(sync.JOINED, **({"join": join} if join else {}))
        except OSError:
            pass  # stage1 failed meanwhile: its error message is waiting to be read
        if join:
            # The cgroups are empty until stage1 has joined them: their limits go in now,
            # while stage1 joins and forks init (init waits for "continue").
            sp.on_resources(stage1)
    except BaseException:
        kill_reap(stage1)
        ch.close()
        raise
    return _drive(sp, ch, stage1, 0, extra, join)


def _start_direct(sp: Spawn, ch: Channel, child_ch: Channel, fifo_fd: int, flags: int) -> int:
    """Init cloned by the parent into its namespaces and cgroup2 directory; the parent makes
    the v1 directories and writes the limits while init starts, and init joins the v1
    hierarchies itself on "continue" (a `tasks` write of "0": no grace period)."""
    from .cgroups.manager import open_v2

    try:
        extra = sp.on_cgroups(0) or {}
        join = extra.pop("join")
        v2fd = open_v2(join)
        try:
            pid, in_v2 = linux.fork_maybe_into_cgroup(v2fd, flags)
        except OSError as e:
            raise OCIError(f"linux.namespaces: cannot create the container's namespaces: "
                           f"{e.strerror}", errno=e.errno) from None
    except BaseException:
        ch.close()
        child_ch.close()
        os.close(fifo_fd)
        raise
    if pid == 0:  # pragma: no cover - runs in the child
        trace.child("init")
        ch.close()
        try:
            _close_fds(sp, child_ch, fifo_fd)
            _prepare_child(sp)
            sp.v1_join = join  # its v1 dirs are made while init starts: joined on "continue"
        except BaseException as e:
            send_error(child_ch, e)
            os._exit(1)
        from . import init

        init.main(sp, child_ch, fifo_fd)  # never returns
    child_ch.close()
    os.close(fifo_fd)
    trace.mark("namespaces: clone init")
    try:
        sp.init_pid = pid
        sp.on_resources(pid)
        if join["v2"] and not in_v2:
            sp.on_v2(pid)
        sp.on_pid(pid)
        ch.send(sync.CONTINUE, pid=pid, **extra)
    except OSError as e:
        if e.errno not in (errno.EPIPE, errno.ECONNRESET):
            kill_reap(pid)
            ch.close()
            raise
    except BaseException:
        kill_reap(pid)
        ch.close()
        raise
    return _drive(sp, ch, 0, pid, extra, join)


def _drive(sp: Spawn, ch: Channel, stage1: int, init_pid: int, extra: dict, join) -> int:
    """The parent's side of the protocol (pyrunc.sync) until init is READY."""
    try:
        while True:
            msg = _recv(ch, stage1)
            if msg is None:
                raise OCIError(_died(stage1, init_pid))
            kind = msg["type"]
            trace.merge(msg.get("trace"))
            try:
                if kind == sync.IDMAP:
                    write_id_maps(msg["pid"], sp.cfg.get("linux") or {})
                    ch.send(sync.IDMAP_DONE)
                elif kind == sync.PID:
                    init_pid = sp.init_pid = msg["pid"]
                    reap(stage1)
                    stage1 = 0
                    ch.sock.settimeout(None)  # init alone holds the other end now
                    if not join:
                        sp.on_resources(init_pid)
                    elif join["v2"] and not msg.get("in_v2"):
                        sp.on_v2(init_pid)
                    sp.on_pid(init_pid)
                    ch.send(sync.CONTINUE, pid=init_pid, **extra)
                elif kind == sync.HOOKS:
                    sp.on_hooks(init_pid)
                    ch.send(sync.HOOKS_DONE)
                elif kind == sync.READY:
                    return init_pid
                elif kind == sync.ERROR:
                    raise OCIError(msg["msg"], errno=msg.get("errno"))
            except OSError as e:
                if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                    raise
                # The child is gone (killed?): say how, or what it said before it went.
                try:
                    msg = ch.recv()
                except OSError:
                    msg = None
                if msg is not None and msg["type"] == sync.ERROR:
                    raise OCIError(msg["msg"], errno=msg.get("errno")) from None
                raise OCIError(_died(stage1, init_pid)) from None
    except BaseException:
        if init_pid:
            kill_reap(init_pid)
        if stage1:
            kill_reap(stage1)
        raise
    finally:
        ch.close()


def _die_with_parent(parent: int) -> None:  # pragma: no cover - child
    """SIGKILL this process when create dies, even if create died before this ran."""
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _recv(ch: Channel, stage1: int) -> dict | None:
    """The next message from the children; None once they are gone."""
    while True:
        try:
            return ch.recv()
        except TimeoutError:
            if not os.waitid(os.P_PID, stage1, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                continue
            try:
                return ch.recv()  # stage1 exited: what it sent before is queued
            except TimeoutError:
                return None


def _died(stage1: int, init_pid: int) -> str:
    # Look without reaping: the caller's cleanup reaps it, so the pid cannot be reused first.
    pid = init_pid or stage1
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT) if pid else None
    except ChildProcessError:
        info = None
    if info is None:
        how = "no status"
    elif info.si_code == os.CLD_EXITED:
        how = f"exit status {info.si_status}"
    else:
        how = f"killed by signal {info.si_status}"
    return f"container init exited during setup, before it was ready ({how})"


def namespace_plan(cfg: dict) -> tuple[list[tuple[str, str | None]], int]:
    """[(type, path or None)] in config order, and the clone flags of the new ones."""
    out = []
    flags = 0
    for ns in (cfg.get("linux") or {}).get("namespaces") or []:
        t = ns["type"]
        path = ns.get("path") or None
        out.append((t, path))
        if not path:
            flags |= NAMESPACES[t][0]
    return out, flags


def _close_fds(sp: Spawn, ch: Channel, fifo_fd: int) -> None:  # pragma: no cover - child
    linux.set_dumpable(False)
    # Nothing of the runtime's may reach the container: not the state lock (whose flock
    # would stay held), not a host directory (CVE-2024-21626), only what it is given.
    keep = [0, 1, 2, ch.fileno(), fifo_fd, *sp.mount_trees.values()]
    keep += range(3, 3 + sp.preserve_fds)
    if sp.console_fd >= 0:
        keep.append(sp.console_fd)
    linux.close_fds_except(keep)
    trace.mark("close fds")


def _prepare_child(sp: Spawn) -> None:  # pragma: no cover - child
    """What stage1 (or a directly cloned init) does before any namespace is joined by path."""
    seccomp_cfg = (sp.cfg.get("linux") or {}).get("seccomp")
    if seccomp_cfg:
        from . import seccomp

        # listenerPath is a host path that a user-namespaced init may not be allowed to
        # connect to: connect here, still the host's root in its namespaces; init inherits it.
        seccomp.prepare(seccomp_cfg)
    from . import init

    init.preimport(sp.cfg)  # before a mount namespace joined by path changes what paths mean
    trace.mark("imports (init, rootfs)")


def _stage1(sp: Spawn, ch: Channel, fifo_fd: int, parent: int) -> None:  # pragma: no cover - child
    _close_fds(sp, ch, fifo_fd)
    _prepare_child(sp)
    cfg = sp.cfg
    lcfg = cfg.get("linux") or {}
    plan, _ = namespace_plan(cfg)
    types = {t for t, _ in plan}
    # Open every namespace path while still in the host mount namespace.
    fds = {}
    for i, (t, path) in enumerate(plan):
        if path:
            try:
                fds[t] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise OCIError(f"linux.namespaces[{i}].path: cannot open {path}: {e.strerror}") from None
    if "user" in types:
        if "user" in fds:
            _setns(plan, fds, "user")
        else:
            linux.unshare(linux.CLONE_NEWUSER)
            ch.send(sync.IDMAP, pid=os.getpid())
            ch.wait(sync.IDMAP_DONE)
        try:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        except OSError:
            raise OCIError("linux.uidMappings: the user namespace has no mapping for uid/gid 0") from None
        _die_with_parent(parent)  # a new euid clears the parent-death signal
    for t in ("ipc", "uts", "network", "pid", "cgroup", "time", "mount"):
        if t in fds:
            _setns(plan, fds, t)
    new = 0
    for t, path in plan:
        # cgroup: init unshares it once it is in its cgroup, so that cgroup is the root.
        if not path and t not in ("user", "cgroup"):
            new |= NAMESPACES[t][0]
    if new:
        linux.unshare(new)
    offsets = lcfg.get("timeOffsets")
    if offsets and new & linux.CLONE_NEWTIME:
        from . import procfs

        text = ""
        for clock in ("monotonic", "boottime"):
            o = offsets.get(clock)
            if o:
                text += f"{clock} {int(o.get('secs', 0))} {int(o.get('nanosecs', 0))}\n"
        if text:
            procfs.write("self/timens_offsets", text)
    trace.mark("namespaces: join, unshare")
    # Init must be born in the container's cgroups.
    join = ch.wait(sync.JOINED).get("join")
    trace.mark("wait: cgroups made" if join else "wait: in the cgroups")
    pid, in_v2 = _fork_init(join)
    if pid == 0:
        from . import init

        trace.child("init")
        init.main(sp, ch, fifo_fd)  # never returns
    trace.mark("join cgroups, fork init" if join else "fork init")
    ch.send(sync.PID, pid=pid, in_v2=in_v2, **trace.fields())
    os._exit(0)


def _fork_init(join: dict | None) -> tuple[int, bool]:  # pragma: no cover - child
    """Fork init; with a self-join plan, into the cgroups: (pid or 0, born in the cgroup2
    directory). A clone3 the kernel refuses leaves that join to the parent."""
    if not join:
        return os.fork(), False
    from .cgroups.manager import join_self

    return linux.fork_maybe_into_cgroup(join_self(join))


def _setns(plan, fds, t) -> None:  # pragma: no cover - child
    i = next(i for i, (tt, _) in enumerate(plan) if tt == t)
    try:
        linux.setns(fds[t], NAMESPACES[t][0])
    except OSError as e:
        path = plan[i][1]
        if e.errno == 22:
            raise OCIError(f"linux.namespaces[{i}].path: {path} is not a {t} namespace") from None
        raise OCIError(f"linux.namespaces[{i}].path: cannot join {path}: {e.strerror}") from None
    os.close(fds.pop(t))
