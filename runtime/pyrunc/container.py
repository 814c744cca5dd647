"""Container lifecycle: create, start, run, kill, delete, pause, resume.

The library under the CLI. Every operation takes the state root and the container id,
holds the container's lock while it works, and raises OCIError with the words containerd
matches on ("does not exist", "container not running", ...).
"""

from . import oslite as os
import _signal as signal  # the C module: `signal` imports enum (~1 ms) for names we do not need
import time

from ocispec.errors import OCIError

from . import trace
from .state import Container, check_id, now_rfc3339, proc_start_time, self_identity, write_atomic


def _cgroups():
    from . import cgroups

    return cgroups


def create(root: str, container_id: str, bundle: str, *, pid_file: str = "", console_socket: str = "",
           no_pivot: bool = False, no_new_keyring: bool = False, preserve_fds: int = 0,
           systemd: bool = False, log=None,
           loaded=None, console_fd: int = -1) -> Container:
    """loaded: (bundle, cfg, rootfs) already read by the caller; console_fd: the socket end
    init sends its pty master to, when the caller listens itself (run -t)."""
    from . import process, sync
    from .config import load_bundle

    check_id(container_id)
    bundle, cfg, rootfs = loaded or load_bundle(bundle)
    trace.mark("read, validate config.json")
    if not isinstance(cfg.get("process"), dict):
        raise OCIError("config.json: process: missing; a container needs process.args to run")
    warn_unknown_capabilities((cfg.get("process") or {}).get("capabilities"), log)
    _drop_kernel_memory(cfg, log)
    os.makedirs(root, 0o700, exist_ok=True)
    c = Container(root, container_id)
    try:
        try:
            os.mkdir(c.dir, 0o711)
        except FileExistsError:
            # The remains of a create that was killed are ours to clean; anything else exists.
            if not _remove_dead_create(c, log):
                raise OCIError(f"container with id exists: {container_id}") from None
            os.mkdir(c.dir, 0o711)
    except FileExistsError:
        raise OCIError(f"container with id exists: {container_id}") from None
    except OSError as e:
        raise OCIError(f"--root {root}: cannot create the state directory: {e.strerror}") from None
    try:
        c.lock(creator=True)
    except OCIError:
        _remove_dir(c.dir)  # nothing else was made yet
        raise
    # The record of what this create makes, saved before it makes anything outside c.dir
    # (see state.py); destroy() undoes it, here on failure and in a later delete if killed.
    c.data = {
        "id": container_id,
        "pid": 0,
        "bundle": bundle,
        "rootfs": rootfs,
        "created": now_rfc3339(),
        "annotations": cfg.get("annotations") or {},
        "cgroup": None,
        "creating": self_identity(),
    }
    creator = c.data["creating"]
    pid = 0
    trace.mark("state dir, lock")
    cg = None
    sp = None
    own_console = False
    ok = False
    try:
        os.mkfifo(c.fifo, 0o622)
        os.chmod(c.fifo, 0o622)
        if console_socket:
            from . import console

            console_fd = console.connect(console_socket)
            own_console = True
        lcfg = cfg.get("linux") or {}
        cgmod = _cgroups()
        cgmod.validate_resources(lcfg.get("resources") or {})
        sp = process.Spawn(cfg, rootfs, bundle, container_id)
        sp.fifo_path = c.fifo
        sp.console_fd = console_fd
        sp.no_pivot = no_pivot
        sp.no_new_keyring = no_new_keyring
        sp.preserve_fds = preserve_fds
        hooks = cfg.get("hooks") or {}

        def spec_state(pid: int, status: str = "creating") -> dict:
            return {"ociVersion": "1.2.0", "id": container_id, "status": status, "pid": pid,
                    "bundle": bundle, "annotations": cfg.get("annotations") or {}}

        v1_pending = False

        def record():
            c.data["cgroup"] = cg.to_state()
            c.save()

        def on_cgroups(pid: int):
            nonlocal cg, v1_pending
            cg = cgmod.Manager.for_container(container_id, lcfg.get("cgroupsPath"), systemd=systemd)
            # Init is born in these cgroups (stage1 joins them before it forks, or init joins
            # them before it does anything else): they are
            # the record of the container's processes, no pid needs saving before ready.
            cg.plan()
            record()
            if sp.self_join and not pid and cg.v1:
                # Init is cloned straight into the cgroup2 dir: the v1 dirs are made after
                # the clone (on_resources), while init starts, and init joins them itself.
                v1_pending = True
                cg.create(note=record, part="v2")
            else:
                cg.create(note=record)
            if sp.self_join:
                trace.mark("cgroups: create")
                return {"cgroup": cg.to_state(), "join": cg.self_join()}
            cg.add(pid)  # init, forked by this process, is born in the cgroups
            trace.mark("cgroups: create, join stage1")
            return {"cgroup": cg.to_state()}

        def on_resources(pid: int):
            nonlocal v1_pending
            if v1_pending:
                v1_pending = False
                cg.create(note=record, part="v1")
                trace.mark("cgroups: create v1")
            cg.set(cgmod.create_resources(lcfg))
            trace.mark("cgroups: resources")

        def on_v2(pid: int):
            cg.add_v2(pid)
            trace.mark("cgroups: join init (cgroup2)")

        def on_pid(pid: int):
            if lcfg.get("netDevices"):
                from . import netdev

                netdev.move(lcfg["netDevices"], pid)
                trace.mark("netDevices")

        def on_hooks(pid: int):
            from . import hooks as hookrun

            st = spec_state(pid)
            hookrun.run(hooks, "prestart", st)
            hookrun.run(hooks, "createRuntime", st)
            trace.mark("hooks: prestart, createRuntime")

        sp.self_join = process.can_join_self(cfg)
        sp.on_cgroups = on_cgroups
        sp.on_resources = on_resources
        sp.on_v2 = on_v2
        sp.on_pid = on_pid
        sp.on_hooks = on_hooks
        if cfg.get("mounts"):
            from . import idmap

            idmapped, binds = idmap.wanted(cfg)
            if idmapped or binds:
                sp.mount_trees = idmap.prepare(cfg["mounts"], lcfg, bundle, all_binds=binds)
        if lcfg.get("seccomp"):
            from . import seccomp

            # Compiled programs are kept under --root by the profile's hash (not a valid
            # container id): a docker-default profile costs libseccomp ~10 ms, a hit ~0.1 ms,
            # and every RUN of a build or container of a pod brings the same profile.
            seccomp.prepare(lcfg["seccomp"], os.path.join(root, "@seccomp"), connect=False)
        trace.mark("fifo, cgroup checks, seccomp")
        pid = process.start_init(sp)
        trace.mark("init ready")
        st = proc_start_time(pid)
        del c.data["creating"]
        c.data.update(pid=pid, init_start=st[0] if st else 0, cgroup=cg.to_state(), config=cfg)
        c.save()
        if pid_file:
            try:
                write_atomic(os.path.abspath(pid_file), str(pid).encode(), 0o644)
            except OSError as e:
                raise OCIError(f"--pid-file {pid_file}: cannot write it: {e.strerror}") from None
        trace.mark("state.json, pid file")
        ok = True
        return c
    finally:
        if own_console:
            os.close(console_fd)
        for fd in sp.mount_trees.values() if sp is not None else ():
            os.close(fd)
        if not ok:
            if pid:  # ready, but the state could not be saved: start_init left it to us
                sync.kill_reap(pid)
            c.data["creating"] = creator  # never ready: no poststop hooks
            try:
                destroy(c, log)
            except Exception as e:  # the original error matters more
                if log:
                    log.warn(f"cleanup: {e}")
        c.unlock()


def _remove_dead_create(c: Container, log) -> bool:
    """Undo what a killed create of c's id left, if that is what its directory holds."""
    try:
        if not c.lock(block=False):
            return False  # a live command has it
    except OCIError:
        return True  # gone meanwhile
    try:
        try:
            old = Container.load(c.root, c.id, lock=False)
        except OCIError:
            if os.path.exists(c.state_file) or not c.dead_create():
                return False
            _remove_dir(c.dir)  # nothing was made outside it yet
            return True
        if old.status() != "stopped" or not old.creating:
            return False
        destroy(old, log)
        return True
    finally:
        c.unlock()


def _warn(log, msg: str) -> None:
    if log is not None:
        log.warn(msg)
    else:
        import sys

        print(f"pyrunc: warning: {msg}", file=sys.stderr)


def _drop_kernel_memory(cfg: dict, log) -> None:
    """Kernel memory limits are deprecated and current kernels ignore them: runc warns and
    carries on without them, and so do we."""
    mem = ((cfg.get("linux") or {}).get("resources") or {}).get("memory")
    if isinstance(mem, dict) and ("kernel" in mem or "kernelTCP" in mem):
        mem.pop("kernel", None)
        mem.pop("kernelTCP", None)
        _warn(log, "Kernel memory settings are ignored and will be removed")


def warn_unknown_capabilities(caps, log) -> None:
    if not caps:
        return
    from .capabilities import unknown

    names = unknown(caps)
    if names:
        _warn(log, f"ignoring unknown or unavailable capabilities: {' '.join(names)}")


def _remove_dir(path: str) -> None:
    # Only our own flat files live here, never a mount or a subdirectory.
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for n in names:
        try:
            os.unlink(os.path.join(path, n))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def start(root: str, container_id: str, log=None) -> Container:
    c = Container.load(root, container_id)
    trace.mark("start: lock, read state")
    try:
        st = c.status()
        if st == "stopped":
            raise OCIError("cannot start a container that has stopped")
        if st != "created":
            raise OCIError(f"cannot start an already {st} container")
        _open_fifo(c)
        trace.mark("start: exec fifo (init released)")
        hooks = (c.data.get("config") or {}).get("hooks") or {}
        if hooks.get("poststart"):
            from . import hooks as hookrun

            try:
                hookrun.run(hooks, "poststart", c.spec_state("running"))
            except OCIError as e:
                # runtime-spec: a failing poststart hook is an error and the container is stopped.
                _kill_all(c, signal.SIGKILL)
                raise OCIError(f"poststart hook failed, container stopped: {e}") from None
            trace.mark("hooks: poststart")
        return c
    finally:
        c.unlock()


def _open_fifo(c: Container) -> None:
    import select

    try:
        fd = os.open(c.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OCIError("cannot start an already running container") from None
    try:
        deadline = time.monotonic() + 60
        while True:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                data = os.read(fd, 1)
                if data:
                    break
                time.sleep(0.001)  # the writer has not attached yet
            if not c.init_alive():
                raise OCIError("container init exited before start; see its output for why")
            if time.monotonic() > deadline:
                raise OCIError("timed out waiting for the container's init to start")
    finally:
        os.close(fd)
    os.unlink(c.fifo)


SIGNALS = {n: int(getattr(signal, n)) for n in dir(signal) if n.startswith("SIG") and not n.startswith("SIG_")}


def parse_signal(s: str) -> int:
    s = (s or "SIGTERM").strip()
    if s.isdigit():
        n = int(s)
        if 0 <= n < 65:  # 0 checks that init exists (runc and kill(2) take it)
            return n
        raise OCIError(f"invalid signal number {s}")
    name = s.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
        base, _, off = name[3:].partition("+" if "+" in name else "-")
        if off.isdigit():
            n = signal.SIGRTMIN + int(off) if base == "RTMIN" else signal.SIGRTMAX - int(off)
            if signal.SIGRTMIN <= n <= signal.SIGRTMAX:
                return int(n)
    if name in SIGNALS:
        return SIGNALS[name]
    raise OCIError(f"unknown signal {s!r}")


def cgroup_manager(c: Container):
    """The cgroups of a container from its state, or None when it has none recorded."""
    cgs = c.data.get("cgroup")
    return _cgroups().Manager.from_state(cgs) if cgs else None


def _kill_all(c: Container, sig: int) -> None:
    m = cgroup_manager(c)
    pids = set()
    if m is not None:
        try:
            pids.update(m.pids())
        except OSError:
            pass
    if c.init_alive():
        pids.add(c.pid)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    if m is not None and sig == signal.SIGKILL:
        try:
            if m.state() == "frozen":
                m.thaw()
        except OSError:
            pass


def kill(root: str, container_id: str, sig: str = "SIGTERM", all_: bool = False) -> None:
    signum = parse_signal(sig)
    c = Container.load(root, container_id)
    try:
        st = c.status()
        if all_:
            # runc: --all reaches whatever is left in the cgroup even after init exited
            # (containerd's shim sends it when a shared-pid-namespace init dies).
            _kill_all(c, signum)
            return
        if st == "stopped":
            raise OCIError("container not running")
        try:
            os.kill(c.pid, signum)
        except ProcessLookupError:
            raise OCIError("no such process") from None
    finally:
        c.unlock()


def _wait_gone(c: Container, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while c.init_alive():
        try:
            os.waitpid(c.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if time.monotonic() > deadline:
            raise OCIError(f"container {c.id}: init (pid {c.pid}) did not die after SIGKILL")
        time.sleep(0.002)


def delete(root: str, container_id: str, force: bool = False, log=None) -> None:
    check_id(container_id)
    try:
        c = Container.load(root, container_id)
    except OCIError:
        # A state dir without state.json is a create that died before it made anything
        # else (runc removes it too). Under its lock: a live create finishes first.
        c = Container(root, container_id)
        if os.path.isdir(c.dir) and not os.path.exists(c.state_file):
            try:
                c.lock()
            except OCIError:
                pass
            else:
                try:
                    if not os.path.exists(c.state_file):
                        _remove_dir(c.dir)
                        if force:
                            return
                finally:
                    c.unlock()
                if os.path.exists(c.state_file):
                    return delete(root, container_id, force, log)
        if force:
            return  # runc: delete --force of a missing container succeeds
        raise
    trace.mark("delete: lock, read state")
    try:
        st = c.status()
        if st != "stopped":
            if not force:
                raise OCIError(f"cannot delete container {container_id} that is not stopped: {st}")
            _kill_all(c, signal.SIGKILL)
            _wait_gone(c)
            trace.mark("delete: kill")
        destroy(c, log)
    finally:
        c.unlock()


def destroy(c: Container, log=None) -> None:
    """Remove what create made, then run poststop hooks (failures only warn). A create that
    never finished (failed, or killed: see state.py) is undone the same way: its processes
    never ran the user's program and are killed first; it gets no poststop hooks."""
    creating = c.creating
    if creating and c.status() == "stopped":
        # Its create was killed: what it started is in the recorded cgroups.
        _kill_all(c, signal.SIGKILL)
    rec = c.data.get("cgroup")
    if rec and not creating:
        from .cgroups.record import remove_empty

        if remove_empty(rec):  # the common case: nothing left in them
            trace.mark("delete: cgroups removed")
            rec = None
    m = cgroup_manager(c) if rec else None
    if m is not None:
        # What is left in the cgroup (a process that joined it from outside the pid namespace,
        # or any when the pid namespace is shared) is killed first, as runc does: removing
        # first would wait for it to exit on its own. destroy() then waits for the exiting.
        try:
            left = m.pids()
        except OSError:
            left = ()
        if left:
            _kill_all(c, signal.SIGKILL)
        try:
            m.destroy()
        except OCIError:
            _kill_all(c, signal.SIGKILL)
            m.destroy()
        trace.mark("delete: cgroups removed")
    _remove_dir(c.dir)
    trace.mark("delete: state dir removed")
    hooks = (c.data.get("config") or {}).get("hooks") or {}
    if hooks.get("poststop") and not creating:
        state = c.spec_state("stopped")
        from . import hooks as hookrun

        # runtime-spec: a failing poststop hook is a warning; the others still run.
        hookrun.run_lenient(hooks, "poststop", state, warn=log.warn if log else None)


def pause(root: str, container_id: str) -> None:
    c = Container.load(root, container_id)
    try:
        st = c.status()
        if st not in ("running", "created"):
            raise OCIError(f"container not running (status: {st})")
        m = cgroup_manager(c)
        if m is None:
            raise OCIError("cannot pause: the container has no cgroup")
        m.freeze()
    finally:
        c.unlock()


def resume(root: str, container_id: str) -> None:
    c = Container.load(root, container_id)
    try:
        if c.status() != "paused":
            raise OCIError("container not paused")
        cgroup_manager(c).thaw()
    finally:
        c.unlock()


def run(root: str, container_id: str, bundle: str, *, detach: bool, keep: bool = False, log=None, **kw) -> int:
    from .config import load_bundle

    check_id(container_id)
    loaded = load_bundle(bundle)
    term = None
    if (loaded[1].get("process") or {}).get("terminal") and not kw.get("console_socket"):
        if detach:
            raise OCIError("process.terminal: a detached container with a terminal needs --console-socket")
        from .console import ForegroundTerminal

        term = ForegroundTerminal()
        kw["console_fd"] = term.child_fd
    try:
        c = create(root, container_id, bundle, log=log, loaded=loaded, **kw)
        if term is not None:
            term.receive()
    except BaseException:
        if term is not None:
            term.close()
        raise
    pid = c.pid
    if detach:
        start(root, container_id, log)
        return 0
    forward_signals(pid)
    try:
        start(root, container_id, log)
    except OCIError:
        if term is not None:
            term.close()
        _cleanup_after_run(root, container_id, log)
        raise
    if term is not None:
        term.copy(pid)
    status = wait_child(pid)
    trace.mark("container process ran (exec to exit)")
    if not keep:
        _cleanup_after_run(root, container_id, log)
    return status


def forward_signals(pid: int) -> None:
    """Pass the signals a foreground caller gets on to the container's process, as runc."""
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2, signal.SIGWINCH):
        signal.signal(s, forward)


def _cleanup_after_run(root, container_id, log) -> None:
    try:
        delete(root, container_id, force=True, log=log)
    except OCIError as e:
        if log:
            log.warn(f"cleanup of {container_id}: {e}")


def wait_child(pid: int) -> int:
    """Wait for pid (our child through the subreaper) and map its status like a shell."""
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
        if wpid == pid:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)
