"""Starting a container's init: the fork dance and the parent/child protocol.

parent (pyrunc create, host namespaces)
  └─ stage1: user namespace first (the parent writes its id maps), then joins namespaces
     given by path and unshares the new ones; forks init and exits
       └─ init: pid 1 of the new pid namespace (see init.py)

Parent and children talk over a SOCK_SEQPACKET socketpair in small JSON messages:
  child -> parent: {"type": "idmap", "pid"}   write uid_map/gid_map of pid, then "idmap-done"
                   {"type": "pid", "pid"}     init's host pid; parent applies resources, then
                                              "continue"
  parent -> stage1: {"type": "joined"}          stage1 is in the container's cgroups: it may fork
                                              init, which inherits them. The parent joins stage1
                                              right after forking it, so the first attach to a v1
                                              cpu cgroup (it can block ~10 ms in the kernel)
                                              overlaps stage1's namespace work.
                   {"type": "hooks"}          run prestart/createRuntime hooks, then "hooks-done"
                   {"type": "ready"}          init is set up and blocks on exec.fifo
                   {"type": "error", "msg"}   a failure in the child: becomes create's error
The parent is a child subreaper, so init (orphaned when stage1 exits) is reparented to it
and `run` can wait for it.
"""

import os
import _signal as signal  # the C module: `signal` imports enum (~1 ms) for names we do not need

# _socket, not socket: the wrapper module costs ~2 ms of imports (enum, selectors).
import _socket

from ocispec import fastjson as json
from ocispec.errors import OCIError
from ocispec.tables import NAMESPACES

from . import linux, trace


class Channel:
    """One end of the sync socket, carrying JSON messages."""

    def __init__(self, sock):
        self.sock = sock

    def send(self, kind: str, **fields) -> None:
        fields["type"] = kind
        self.sock.send(json.dumps(fields).encode())

    def recv(self) -> dict | None:
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            # The peer exited with a message of ours unread (stage1 failing before it read
            # "joined"): the kernel reports that first, then still delivers what it sent.
            data = self.sock.recv(1 << 16)
        return json.loads(data) if data else None

    def expect(self, kind: str) -> dict:
        msg = self.recv()
        if msg is None:
            raise OCIError(f"the runtime's parent went away while init waited for {kind!r}")
        if msg["type"] != kind:
            raise OCIError(f"runtime protocol error: expected {kind!r}, got {msg['type']!r}")
        return msg

    def expect_any(self) -> dict:
        msg = self.recv()
        if msg is None:
            raise OCIError("the runtime's parent went away during container setup")
        return msg

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def send_error(ch: Channel, err: BaseException) -> None:
    if isinstance(err, OCIError):
        msg = str(err)
    elif isinstance(err, OSError):
        msg = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    else:
        msg = f"{type(err).__name__}: {err}"
    try:
        ch.send("error", msg=msg, errno=getattr(err, "errno", None))
    except OSError:
        pass


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
        self.idmap_trees: dict[int, int] = {}
        # Called by the parent at the protocol's steps.
        self.on_stage1 = lambda pid: None   # make the cgroups, join stage1; extra "continue" fields
        self.on_pid = lambda pid: None      # resources, netDevices: before "continue"
        self.on_hooks = lambda pid: None


def start_init(sp: Spawn) -> int:
    """Fork stage1 -> init and drive them until init is ready. Returns init's host pid."""
    # The init may sit in a user namespace that cannot read the host's Python (or in a rootfs
    # without it): import the process-settings modules and compile seccomp here; fork keeps them.
    from . import privileges  # noqa: F401
    seccomp_cfg = (sp.cfg.get("linux") or {}).get("seccomp")
    if seccomp_cfg:
        from . import seccomp

        seccomp.prepare(seccomp_cfg, connect=False)
    psock, csock = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    fifo_fd = os.open(sp.fifo_path, os.O_PATH | os.O_CLOEXEC)
    linux.set_subreaper()
    trace.mark("socketpair, imports (privileges)")
    stage1 = os.fork()
    if stage1 == 0:  # pragma: no cover - runs in the child
        trace.child("stage1")
        psock.close()
        ch = Channel(csock)
        try:
            _stage1(sp, ch, fifo_fd)
        except BaseException as e:  # everything must reach the parent as a message
            send_error(ch, e)
        os._exit(1)
    csock.close()
    os.close(fifo_fd)
    ch = Channel(psock)
    init_pid = 0
    trace.mark("fork stage1")
    try:
        extra = sp.on_stage1(stage1) or {}
        try:
            ch.send("joined")
        except OSError:
            pass  # stage1 failed meanwhile: its error message is waiting to be read
        while True:
            msg = ch.recv()
            if msg is None:
                raise OCIError(_died(stage1, init_pid))
            kind = msg["type"]
            trace.merge(msg.get("trace"))
            if kind == "idmap":
                write_id_maps(msg["pid"], sp.cfg.get("linux") or {})
                ch.send("idmap-done")
            elif kind == "pid":
                init_pid = sp.init_pid = msg["pid"]
                _reap(stage1)
                stage1 = 0
                sp.on_pid(init_pid)
                ch.send("continue", pid=init_pid, **extra)
            elif kind == "hooks":
                sp.on_hooks(init_pid)
                ch.send("hooks-done")
            elif kind == "ready":
                return init_pid
            elif kind == "error":
                raise OCIError(msg["msg"], errno=msg.get("errno"))
    except BaseException:
        if init_pid:
            _kill_reap(init_pid)
        if stage1:
            _kill_reap(stage1)
        raise
    finally:
        ch.close()


def _reap(pid: int) -> int | None:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def _kill_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _died(stage1: int, init_pid: int) -> str:
    pid = init_pid or stage1
    status = _reap(pid) if pid else None
    if status is not None and os.WIFSIGNALED(status):
        how = f"killed by signal {os.WTERMSIG(status)}"
    elif status is not None:
        how = f"exit status {os.WEXITSTATUS(status)}"
    else:
        how = "no status"
    return f"container init exited before it was ready ({how})"


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


def _stage1(sp: Spawn, ch: Channel, fifo_fd: int) -> None:  # pragma: no cover - child
    linux.set_dumpable(False)
    # Nothing of the runtime's may reach the container: not the state lock (whose flock
    # would stay held), not a host directory (CVE-2024-21626), only what it is given.
    keep = [0, 1, 2, ch.fileno(), fifo_fd, *sp.idmap_trees.values()]
    keep += range(3, 3 + sp.preserve_fds)
    if sp.console_fd >= 0:
        keep.append(sp.console_fd)
    linux.close_fds_except(keep)
    trace.mark("close fds")
    cfg = sp.cfg
    lcfg = cfg.get("linux") or {}
    if lcfg.get("seccomp"):
        from . import seccomp

        # listenerPath is a host path that a user-namespaced init may not be allowed to
        # connect to: connect here, still the host's root in its namespaces; init inherits it.
        seccomp.prepare(lcfg["seccomp"])
    from . import init

    init.preimport(cfg)  # before a mount namespace joined by path changes what paths mean
    trace.mark("imports (init, rootfs)")
    plan, _ = namespace_plan(cfg)
    types = {t for t, _ in plan}
    seen: set[str] = set()
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
            ch.send("idmap", pid=os.getpid())
            _wait(ch, "idmap-done", seen)
        try:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        except OSError:
            raise OCIError("linux.uidMappings: the user namespace has no mapping for uid/gid 0") from None
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
    _wait(ch, "joined", seen)  # init must be born in the container's cgroups
    trace.mark("wait: in the cgroups")
    pid = os.fork()
    if pid == 0:
        trace.child("init")
        init.main(sp, ch, fifo_fd)  # never returns
    trace.mark("fork init")
    ch.send("pid", pid=pid, **trace.fields())
    os._exit(0)


def _wait(ch: Channel, kind: str, seen: set) -> None:  # pragma: no cover - child
    """Wait for a message from the parent; ones that came first are remembered."""
    while kind not in seen:
        seen.add(ch.expect_any()["type"])


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
