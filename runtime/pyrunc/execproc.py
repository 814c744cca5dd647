"""`pyrunc exec`: a new process in a running container.

The runtime forks a child that joins the init's namespaces (user first, mount last) and
forks the grandchild into the container's cgroups (the child joins the v1 ones itself and
clones into the cgroup2 one, Manager.self_join; with a user namespace of the container's
own, the parent writes the grandchild's pid instead), and the grandchild (in the
container's pid namespace) applies the process's settings and execs. The same JSON
protocol as create carries failures back as one-line errors.
"""

import copy
from . import oslite as os

from ocispec import fastjson as json
from ocispec.errors import OCIError
from ocispec.tables import NAMESPACES

from . import linux, procfs, sync
from .sync import kill_reap
from .state import Container, write_atomic

# Joined in this order: the user namespace first (it grants the rights to join the
# others), the mount namespace last (it changes what paths mean).
_JOIN_ORDER = ("user", "ipc", "uts", "network", "cgroup", "time", "pid", "mount")


def build_process(a, c: Container) -> dict:
    """The process to run: --process FILE, or the init's process edited by the flags."""
    cfg = c.data.get("config") or {}
    if a.opts["process"]:
        path = a.opts["process"]
        try:
            with open(path, "rb") as f:
                proc = json.loads(f.read())
        except OSError as e:
            raise OCIError(f"{path}: {e.strerror}") from None
        except ValueError as e:
            raise OCIError(f"{path}: invalid JSON: {e}") from None
        source = path
    else:
        if len(a.args) < 2:
            raise OCIError("exec: no command given (usage: pyrunc exec ID COMMAND [ARGS...])")
        proc = copy.deepcopy(cfg.get("process") or {})
        proc["args"] = a.args[1:]
        proc["terminal"] = a.opts["tty"]
        proc.pop("consoleSize", None)
        source = "exec flags"
    if a.opts["env"]:
        proc["env"] = list(proc.get("env") or []) + a.opts["env"]
    if a.opts["cwd"]:
        proc["cwd"] = a.opts["cwd"]
    if a.opts["tty"]:
        proc["terminal"] = True
    if a.opts["user"]:
        uid, _, gid = a.opts["user"].partition(":")
        try:
            proc["user"] = {"uid": int(uid), "gid": int(gid or 0)}
        except ValueError:
            raise OCIError(f"--user {a.opts['user']!r}: use numeric UID[:GID]") from None
    if a.opts["additional-gids"]:
        try:
            proc.setdefault("user", {"uid": 0, "gid": 0})["additionalGids"] = [int(g) for g in a.opts["additional-gids"]]
        except ValueError:
            raise OCIError("--additional-gids: must be numbers") from None
    if a.opts["cap"]:
        caps = proc.setdefault("capabilities", {})
        for s in ("bounding", "effective", "permitted", "ambient", "inheritable"):
            if s in ("inheritable", "ambient") and s not in caps:
                continue
            caps[s] = list(dict.fromkeys(list(caps.get(s) or []) + a.opts["cap"]))
    if a.opts["no-new-privs"]:
        proc["noNewPrivileges"] = True
    if a.opts["apparmor"]:
        proc["apparmorProfile"] = a.opts["apparmor"]
    if a.opts["process-label"]:
        proc["selinuxLabel"] = a.opts["process-label"]
    # Validate as part of the container's config: one validator, the same messages.
    check = dict(cfg)
    check["process"] = proc
    from ocispec.runtime_config import validate_config

    validate_config(check, source=source)
    return proc


def exec_command(a, log) -> int:
    if not a.args:
        raise OCIError('"exec" requires a container id')
    c = Container.load(a.g["root"], a.args[0])
    try:
        st = c.status()
        if st == "stopped":
            raise OCIError("cannot exec in a stopped container")
        if st == "paused" and not a.opts["ignore-paused"]:
            raise OCIError("cannot exec in a paused container (pass --ignore-paused to try anyway)")
        proc = build_process(a, c)
        subcg = parse_sub_cgroups(a.opts["cgroup"])
    finally:
        # Never hold the lock while waiting on a container process: exec --ignore-paused
        # waits on a frozen one, and resume must be able to take the lock to thaw it.
        c.unlock()
    from .container import warn_unknown_capabilities

    warn_unknown_capabilities(proc.get("capabilities"), log)
    console_fd = -1
    term = None
    if proc.get("terminal"):
        from . import console

        if a.opts["console-socket"]:
            console_fd = console.connect(a.opts["console-socket"])
        elif a.opts["detach"]:
            raise OCIError("exec: a terminal with --detach needs --console-socket")
        else:
            term = console.ForegroundTerminal()
            console_fd = term.child_fd
            # The caller's window size is on the new terminal before the process runs (as
            # runc's ConsoleWidth/Height), not only once receive() copies it: a quick
            # `stty size` would otherwise see 0x0.
            if not proc.get("consoleSize"):
                try:
                    rows, cols = console.get_size(0)
                    if rows and cols:
                        proc["consoleSize"] = {"height": rows, "width": cols}
                except OSError:
                    pass
    try:
        pid = _spawn(c, proc, console_fd, a.opts["preserve-fds"], subcg)
    finally:
        if console_fd >= 0 and term is None:
            os.close(console_fd)
    if a.opts["pid-file"]:
        try:
            write_atomic(os.path.abspath(a.opts["pid-file"]), str(pid).encode(), 0o644)
        except OSError as e:
            kill_reap(pid)  # runc terminates a process it could not record
            raise OCIError(f"--pid-file {a.opts['pid-file']}: {e.strerror}") from None
    if a.opts["detach"]:
        return 0
    if term is not None:
        term.receive()
        term.copy(pid)
    return _wait(pid)


def _wait(pid: int) -> int:
    from .container import forward_signals, wait_child

    forward_signals(pid)
    return wait_child(pid)


def parse_sub_cgroups(values: list) -> dict:
    """exec --cgroup PATH or CONTROLLER[,CONTROLLER]:PATH (repeatable), as runc: a map from
    controller ("" for all) to a sub-cgroup below the container's."""
    out = {}
    for v in values:
        ctrls, sep, path = v.rpartition(":") if ":" in v else ("", "", v)
        rel = path.strip("/")
        if not rel or ".." in rel.split("/") or (sep and not ctrls):
            raise OCIError(f"exec --cgroup {v!r}: want PATH or CONTROLLER[,...]:PATH, a "
                           "sub-cgroup below the container's")
        for ctrl in ctrls.split(",") if ctrls else [""]:
            out[ctrl] = rel
    return out


def _spawn(c: Container, proc: dict, console_fd: int, preserve_fds: int,
           subcg: dict | None = None) -> int:
    cfg = c.data.get("config") or {}
    lcfg = cfg.get("linux") or {}
    init_pid = c.pid
    # Import now: after setns(mount) the host's sys.path is gone.
    from . import init, privileges, trampoline  # noqa: F401

    seccomp = None
    if lcfg.get("seccomp"):
        from . import seccomp

        # listenerPath is a host path: connect before joining the container's mount namespace
        seccomp.prepare(lcfg["seccomp"])
    console = None
    if proc.get("terminal"):
        from . import console
    state = c.spec_state()
    cgs = c.data.get("cgroup")
    manager = join = None
    if cgs:
        from .cgroups import Manager

        manager = Manager.from_state(cgs)
        if _same_userns(init_pid):
            # the child joins them itself: no grace-period wait (Manager.self_join)
            join = manager.self_join(subcg)
    ch, child_ch = sync.pair()
    linux.set_subreaper()
    child = os.fork()
    if child == 0:  # pragma: no cover - child
        ch.close()
        ch = child_ch
        try:
            keep = [0, 1, 2, ch.fileno()] + list(range(3, 3 + preserve_fds))
            if console_fd >= 0:
                keep.append(console_fd)
            if seccomp is not None:
                keep += seccomp.held_fds()
            linux.close_fds_except(keep)
            linux.set_dumpable(False)
            # the host's verified /proc, pinned before the container's mounts are ours
            # (oomScoreAdj and the other procfs writes go through it: pyrunc.procfs)
            procfs.root()
            v2fd = -1
            if join:
                from .cgroups.manager import join_self

                v2fd = join_self(join)
            # With a cgroup2 dir to clone into, the cgroup namespace waits for the grandchild:
            # the kernel refuses CLONE_INTO_CGROUP from inside it (its root is the container's).
            cgns = _join(init_pid, defer_cgroup=v2fd >= 0)
            pid, in_v2 = linux.fork_maybe_into_cgroup(v2fd)
            if pid == 0:
                if cgns >= 0:
                    _setns(cgns, "cgroup")
                _exec_child(ch, proc, lcfg, state, seccomp, console, console_fd, preserve_fds)
            ch.send(sync.PID, pid=pid, in_v2=in_v2)
        except BaseException as e:
            sync.send_error(ch, e)
            os._exit(1)
        os._exit(0)
    child_ch.close()
    pid = 0
    try:
        while True:
            msg = ch.recv()
            if msg is None:
                raise OCIError("exec: the process exited before it was ready")
            if msg["type"] == sync.PID:
                pid = msg["pid"]
                os.waitpid(child, 0)
                child = 0
                if join is not None:
                    if join["v2"] and not msg.get("in_v2"):
                        manager.add_v2(pid, subcg)
                elif manager is not None:
                    manager.add(pid, subcg)
                ch.send(sync.CONTINUE, pid=pid)
            elif msg["type"] == sync.READY:
                return pid
            elif msg["type"] == sync.ERROR:
                raise OCIError(msg["msg"])
    except BaseException:
        for p in (pid, child):
            if p:
                kill_reap(p)
        raise
    finally:
        ch.close()


def _same_userns(init_pid: int) -> bool:
    """Whether init shares our user namespace (then a child of ours is still the host's
    root in it, and may join the cgroups itself)."""
    try:
        return os.readlink(f"/proc/{init_pid}/ns/user") == os.readlink("/proc/self/ns/user")
    except OSError:
        return False


def _join(init_pid: int, defer_cgroup: bool = False) -> int:  # pragma: no cover - child
    """Join init's namespaces; with defer_cgroup, the cgroup one is left out and its fd
    returned (-1 when there is none to join) for the grandchild to join."""
    fds = []
    for t in _JOIN_ORDER:
        name = NAMESPACES[t][1]
        try:
            theirs = os.readlink(f"/proc/{init_pid}/ns/{name}")
        except FileNotFoundError:
            continue
        if theirs == os.readlink(f"/proc/self/ns/{name}"):
            continue
        fds.append((t, os.open(f"/proc/{init_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)))
    deferred = -1
    for t, fd in fds:
        if t == "cgroup" and defer_cgroup:
            deferred = fd
            continue
        _setns(fd, t)
    return deferred


def _setns(fd: int, t: str) -> None:  # pragma: no cover - child
    try:
        linux.setns(fd, NAMESPACES[t][0])
    except OSError as e:
        raise OCIError(f"exec: cannot join the container's {t} namespace: {e.strerror}") from None
    os.close(fd)


def _exec_child(ch, proc, lcfg, state, seccomp, console, console_fd, preserve_fds):  # pragma: no cover
    from . import init, privileges, trampoline

    try:
        host_pid = ch.expect(sync.CONTINUE).get("pid")  # for seccomp's containerProcessState
        # the sealed trampoline it execs through (CVE-2019-5736), before seccomp
        exec_fd = trampoline.fd() if trampoline.available() else -1
        os.setsid()
        if console is not None and console_fd >= 0:
            console.setup_in_init(console_fd, proc.get("consoleSize"), mount_console=False,
                                  uid=(proc.get("user") or {}).get("uid"))
        if seccomp is not None:
            seccomp.preload(lcfg["seccomp"])
        env = init.process_env(proc)
        init.apply_process(proc, lcfg, state, privileges, seccomp, pid=host_pid)
        nnp = bool(proc.get("noNewPrivileges"))
        argv0 = init.lookpath(proc["args"][0], env)
        ch.send(sync.READY)
        ch.close()
        if seccomp is not None and nnp:
            seccomp.load(lcfg["seccomp"], state, pid=host_pid)
        linux.close_fds_except([0, 1, 2, exec_fd] + list(range(3, 3 + preserve_fds)))
        trampoline.execve(argv0, proc["args"], init.env_dict(env), exec_fd)
    except BaseException as e:
        sync.send_error(ch, e)
        os._exit(127)
