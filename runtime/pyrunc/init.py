"""The container's init: pid 1 of its pid namespace, until it execs process.args.

Order (DESIGN.md section 2): cgroup namespace, mounts, prestart/createRuntime hooks (in
the parent), createContainer hooks, pivot_root, masked/read-only paths, sysctl, hostname,
loopback, console, then the process's own settings (privileges), ready, exec.fifo,
startContainer hooks, seccomp (when noNewPrivileges), exec. Any failure before `ready`
goes back to the parent as a message and becomes create's error.
"""

from . import oslite as os

from ocispec import users
from ocispec.errors import OCIError

from . import linux, netdev, procfs, sync, trace, trampoline

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def main(sp, ch, fifo_fd: int) -> None:  # pragma: no cover - runs in the container
    try:
        state = _setup(sp, ch)
    except BaseException as e:
        sync.send_error(ch, e)
        os._exit(1)
    # Past `ready` nobody listens: failures go to stderr, like runc's.
    try:
        _run(sp, fifo_fd, state)
    except BaseException as e:
        import sys

        print(f"pyrunc init: {e}", file=sys.stderr)
        os._exit(127 if isinstance(e, (FileNotFoundError, PermissionError, OCIError)) else 1)


def _setup(sp, ch) -> dict:
    cfg = sp.cfg
    lcfg = cfg.get("linux") or {}
    process = cfg.get("process") or {}
    msg = ch.expect(sync.CONTINUE)
    trace.mark("wait: resources set")
    if sp.v1_join:
        from .cgroups.manager import join_v1

        join_v1(sp.v1_join)
        trace.mark("join cgroups")
    state = {"ociVersion": "1.2.0", "id": sp.id, "status": "creating", "pid": msg["pid"],
             "bundle": sp.bundle, "annotations": cfg.get("annotations") or {}}
    sp.cgroup_state = msg.get("cgroup")
    if not sp.no_new_keyring:
        _session_keyring(sp.id)
    types = {n["type"]: n.get("path") for n in lcfg.get("namespaces") or []}
    if "cgroup" in types and not types["cgroup"]:
        # Born in the container's cgroups: they become the new namespace's root.
        linux.unshare(linux.CLONE_NEWCGROUP)
    os.setsid()
    # The /proc of the runtime's writes (pyrunc.procfs), opened before any mount the
    # container's config or rootfs controls exists.
    procfs.root()
    trace.mark("keyring, cgroupns, setsid, procfs")
    from .rootfs import Setup

    # No "mount": the caller's namespace is inherited (runtime-spec), as runc does it.
    rs = Setup(cfg, sp.rootfs, sp.bundle, "user" in types, sp.cgroup_state, sp.mount_trees,
               own_mntns="mount" in types)
    rs.prepare()
    trace.mark("mounts: rootfs, config mounts, devices")
    mods = _preload(cfg)
    if "network" in types and not types["network"]:
        netdev.loopback_up()
    trace.mark("trampoline, preload, loopback")
    hooks = cfg.get("hooks") or {}
    if hooks.get("prestart") or hooks.get("createRuntime"):
        ch.send(sync.HOOKS)
        ch.expect(sync.HOOKS_DONE)
    if hooks.get("createContainer"):
        from . import hooks as hookrun

        # runc runs them from the container's root (it has chdir'ed there to pivot)
        hookrun.run(hooks, "createContainer", state, cwd=sp.rootfs)
    trace.mark("hooks")
    rs.pivot(sp.no_pivot)
    trace.mark("pivot_root")
    # runc's order: names and sysctls while /proc/sys is still writable, then the
    # read-only and masked paths, then the read-only root.
    if "hostname" in cfg and cfg["hostname"] is not None:
        linux.sethostname(cfg["hostname"])
    if cfg.get("domainname"):
        linux.setdomainname(cfg["domainname"])
    for key, value in (lcfg.get("sysctl") or {}).items():
        try:
            procfs.write("sys/" + key.replace(".", "/"), str(value))
        except OSError as e:
            raise OCIError(f"linux.sysctl.{key}: cannot set {value!r}: {e.strerror}") from None
    trace.mark("hostname, sysctl")
    rs.finalize()
    trace.mark("masked, read-only paths")
    if process.get("terminal"):
        if sp.console_fd < 0:
            raise OCIError("process.terminal is true but no --console-socket was given")
        mods["console"].setup_in_init(sp.console_fd, process.get("consoleSize"),
                                      uid=(process.get("user") or {}).get("uid"))
        sp.console_fd = -1
    env = process_env(process)  # before privileges go: /etc/passwd may be root's alone
    _apply_process(process, lcfg, state, mods)
    argv0 = lookpath(process["args"][0], env)
    trace.mark("process: user, caps, rlimits, env, lookpath")
    ch.send(sync.READY, **trace.fields())
    ch.close()
    state["argv0"] = argv0
    state["env"] = env
    return state


def preimport(cfg: dict) -> None:
    """Import what init will need, while the host's files are what the paths name: stage1
    calls it before it joins a mount namespace given by path (another container's, where
    the host's sys.path would name that container's files)."""
    from . import rootfs  # noqa: F401

    if any(m.get("type") == "cgroup" for m in cfg.get("mounts") or ()):
        try:
            from . import cgroups  # noqa: F401
        except ImportError:
            pass
    hk = cfg.get("hooks") or {}
    if hk.get("createContainer") or hk.get("startContainer"):
        from . import hooks  # noqa: F401
    if (cfg.get("process") or {}).get("terminal"):
        from . import console  # noqa: F401


def _preload(cfg: dict) -> dict:
    """Import now what init needs after pivot_root, when the host's sys.path is gone."""
    process = cfg.get("process") or {}
    lcfg = cfg.get("linux") or {}
    # The sealed trampoline the process execs through (CVE-2019-5736), made before
    # seccomp could refuse memfd_create.
    mods = {"exec_fd": trampoline.fd() if trampoline.available() else -1}
    # start_init imported it already when this init runs in a user namespace
    from . import privileges

    mods["privileges"] = privileges
    if (cfg.get("hooks") or {}).get("startContainer"):
        from . import hooks

        mods["hooks"] = hooks
    if process.get("terminal"):
        from . import console

        mods["console"] = console
    if lcfg.get("seccomp"):
        from . import seccomp

        # the program was compiled in start_init; this connects listenerPath, a host path
        seccomp.preload(lcfg["seccomp"])
        mods["seccomp"] = seccomp
    return mods


def _apply_process(process: dict, lcfg: dict, state: dict, mods: dict) -> None:
    apply_process(process, lcfg, state, mods["privileges"], mods.get("seccomp"))
    state["mods"] = mods


def apply_process(process: dict, lcfg: dict, state: dict, privileges, seccomp=None,
                  pid: int | None = None) -> None:
    """The process's own settings, for init and exec alike: limits and labels as root, a
    seccomp filter that needs privilege to load (no noNewPrivileges) before the capabilities
    go, then user and capabilities, then the working directory as that user."""
    privileges.prepare(process, lcfg)
    if seccomp is not None and not process.get("noNewPrivileges"):
        seccomp.load(lcfg["seccomp"], state, pid=pid)
    # runc enters cwd before giving up root (a directory only root may search), and
    # again as the user when root may not (a volume chowned to the user, root squashed).
    cwd = process.get("cwd") or "/"
    retry = False
    try:
        os.chdir(cwd)
    except PermissionError:
        retry = True
    except OSError as e:
        raise OCIError(f"process.cwd: cannot change to {cwd}: {e.strerror}") from None
    privileges.finalize(process)
    if retry:
        try:
            os.chdir(cwd)
        except OSError as e:
            raise OCIError(f"process.cwd: cannot change to {cwd}: {e.strerror}") from None


def process_env(process: dict) -> list[str]:
    """process.env, with HOME from the user's /etc/passwd entry when it has none (as runc)."""
    env = list(process.get("env") or [])
    if not any(e.startswith("HOME=") for e in env):
        uid = (process.get("user") or {}).get("uid") or 0
        env.append("HOME=" + users.home(users.read_db("/etc/passwd"), uid))
    return env


def _run(sp, fifo_fd: int, state: dict) -> None:
    # Blocks until `pyrunc start` opens the other end.
    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(fifo_fd)
    cfg = sp.cfg
    hooks = cfg.get("hooks") or {}
    argv0, env, mods = state.pop("argv0"), state.pop("env"), state.pop("mods")
    state["status"] = "created"
    if hooks.get("startContainer"):
        mods["hooks"].run(hooks, "startContainer", state)
    process = cfg.get("process") or {}
    seccomp_cfg = (cfg.get("linux") or {}).get("seccomp")
    if seccomp_cfg and process.get("noNewPrivileges"):
        mods["seccomp"].load(seccomp_cfg, state)
    keep = [0, 1, 2, mods["exec_fd"]] + list(range(3, 3 + sp.preserve_fds))
    linux.close_fds_except(keep)
    trampoline.execve(argv0, process["args"], env_dict(env), mods["exec_fd"])


def _session_keyring(container_id: str) -> None:
    """A session keyring of the container's own, so it cannot see the host's keys (as runc)."""
    try:
        serial = linux.join_session_keyring(f"_ses.{container_id}")
    except OSError as e:
        if e.errno in (38, 1, 13):  # ENOSYS, EPERM, EACCES: keyrings unavailable here
            return
        raise OCIError(f"cannot create the session keyring: {e.strerror}") from None
    # possessor: all; user: view, read, write, search, link (runc's 0x3f1b0000)
    linux.keyring_setperm(serial, 0x3F1B0000)


def env_dict(env: list[str]) -> dict:
    """process.env ("K=V" strings) as the dict execve takes; a later K wins."""
    return dict(e.partition("=")[::2] for e in env)


def lookpath(name: str, env: list[str]) -> str:
    """args[0] as the process will exec it: a path as given, a name searched in env's PATH
    (runc's LookPath), an OCIError when there is none."""
    if "/" in name:
        if not os.path.exists(name):
            raise OCIError(f"process.args[0]: {name}: no such file or directory in the container")
        return name
    path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    for d in path.split(":"):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise OCIError(f'process.args[0]: exec: "{name}": executable file not found in $PATH')
