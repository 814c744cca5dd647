"""OCI hooks: run config.json `hooks.<name>[]` with the container state on stdin.

Runtime-spec rules (config.md "POSIX-platform Hooks", runtime.md "Lifecycle"):
path is absolute; args are execv's argv (args[0] is argv0); env is the whole
environment (nothing inherited); timeout is in seconds. A failing hook is an
error (the runtime stops the container), except poststop: its failures only warn
and the remaining poststop hooks still run (run_lenient).

Imported on every container start, so module level is the standard library only.
"""

from . import oslite as os
import sys

from ocispec import fastjson as json
from ocispec.errors import OCIError

# Lines of the hook's stderr (or stdout when stderr is empty) quoted in an error.
TAIL_LINES = 5


def run(hooks_cfg: dict | None, name: str, state: dict, cwd: str | None = None) -> None:
    """Run every `name` hook in order; the first failure raises OCIError.

    cwd: the hooks' working directory; by default the bundle (runc's create chdirs
    there, so its hooks see it as cwd), or / when the bundle does not resolve here.
    """
    for msg in _failures(hooks_cfg, name, state, cwd):
        raise OCIError(msg)


def run_lenient(hooks_cfg: dict | None, name: str, state: dict, cwd: str | None = None,
                warn=None) -> None:
    """Run every `name` hook in order; a failure is a warning and the rest still run
    (poststop). warn(message) defaults to a line on stderr."""
    for msg in _failures(hooks_cfg, name, state, cwd):
        if warn is None:
            sys.stderr.write(f"pyrunc: warning: {msg}\n")
            sys.stderr.flush()
        else:
            warn(msg)


def _failures(hooks_cfg, name: str, state: dict, cwd: str | None):
    """Run the hooks one by one, yielding a message for each that fails; the caller
    decides whether the next one runs (a generator stops where its consumer does)."""
    hooks = (hooks_cfg or {}).get(name)
    if not hooks:
        return
    stdin = json.dumps(state).encode()
    cwd = _cwd(cwd, state)
    for i, hook in enumerate(hooks):
        err = _run_one(hook, stdin, cwd)
        if err:
            yield f"hooks.{name}[{i}] ({hook.get('path')}): {err}"


def _cwd(cwd: str | None, state: dict) -> str:
    if cwd is None:
        cwd = state.get("bundle") or "/"
    return cwd if os.path.isdir(cwd) else "/"


def _run_one(hook: dict, stdin: bytes, cwd: str) -> str | None:
    """Run one hook; return None on success or the reason it failed.

    No subprocess: startContainer hooks run in the container's init after pivot_root, where
    an import would read Python files from the image as pid 1 (and subprocess needs ~3 ms of
    them). The hook is forked and exec'd through the sealed trampoline (trampoline.py), like
    the container's process. State in, output out through memfds: no pipe to pump, so no
    select, and nothing the hook leaves running can keep us waiting."""
    from . import linux, trampoline

    path = hook.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        return "path must be absolute"
    if not os.path.isfile(path):
        return "no such file" if not os.path.lexists(path) else "not a regular file"
    if not os.access(path, os.X_OK):
        return "not executable"
    argv = hook.get("args") or [path]
    env = dict(e.split("=", 1) for e in hook.get("env") or () if "=" in e)
    timeout = hook.get("timeout")
    tfd = trampoline.fd() if trampoline.available() else -1
    fds = [os.memfd_create(n, linux.MFD_CLOEXEC) for n in ("hook-state", "hook-out", "hook-err")]
    try:
        os.write(fds[0], stdin)
        os.lseek(fds[0], 0, os.SEEK_SET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                # A session of its own, so a timeout kills the hook and whatever it started.
                os.setsid()
                for i, f in enumerate(fds):
                    os.dup2(f, i)
                os.chdir(cwd)
                linux.close_fds_except([0, 1, 2, tfd])
                trampoline.execve(path, argv, env, tfd)
            except BaseException as e:
                os.write(2, f"pyrunc: exec {path}: {getattr(e, 'strerror', None) or e}\n".encode())
            finally:
                os._exit(127)
        status = _wait(pid, timeout)
        out, errout = _read_tail(fds[1]), _read_tail(fds[2])
    finally:
        for f in fds:
            os.close(f)
    if status is None:
        return f"timed out after {timeout}s, killed{_tail(errout, out)}"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}{_tail(errout, out)}"
    code = os.WEXITSTATUS(status)
    if code == 127:  # the trampoline's (or the child's) line: "pyrunc: exec PATH: REASON"
        last = errout.rstrip(b"\n").rpartition(b"\n")[2].decode(errors="replace")
        if last.startswith(f"pyrunc: exec {path}: "):
            return "cannot execute: " + last[len(f"pyrunc: exec {path}: "):]
    if code:
        return f"exit status {code}{_tail(errout, out)}"
    return None


class _Timeout(Exception):
    pass


def _wait(pid: int, timeout) -> int | None:
    """The hook's wait status, or None when it ran out of time (then it and its session
    are killed and reaped)."""
    if not timeout:
        return os.waitpid(pid, 0)[1]
    import _signal  # built in: no file to import

    def expire(signum, frame):
        raise _Timeout

    old = _signal.signal(_signal.SIGALRM, expire)
    _signal.setitimer(_signal.ITIMER_REAL, timeout)
    try:
        return os.waitpid(pid, 0)[1]
    except _Timeout:
        pass
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        _signal.signal(_signal.SIGALRM, old)
    _kill_group(pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped just as the alarm fired
        pass
    return None


def _read_tail(fd: int, limit: int = 1 << 16) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, min(size, limit), max(0, size - limit))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, 9)
    except OSError:
        pass


def _tail(errout: bytes, out: bytes) -> str:
    text = (errout or out or b"").decode(errors="replace").strip()
    if not text:
        return ""
    return ": " + " | ".join(text.splitlines()[-TAIL_LINES:])
