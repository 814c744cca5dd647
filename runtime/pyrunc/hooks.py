"""OCI hooks: run config.json `hooks.<name>[]` with the container state on stdin.

Runtime-spec rules (config.md "POSIX-platform Hooks", runtime.md "Lifecycle"):
path is absolute; args are execv's argv (args[0] is argv0); env is the whole
environment (nothing inherited); timeout is in seconds. A failing prestart,
createRuntime, createContainer or startContainer hook is an error; a failing
poststart or poststop hook only warns and the remaining hooks still run.

Imported on every container start, so module level is the standard library only
and `subprocess` is imported only when there is a hook to run.
"""

import json
import os
import sys

from ocispec.errors import OCIError

# Lines of the hook's stderr (or stdout when stderr is empty) quoted in an error.
TAIL_LINES = 5


def run(hooks_cfg: dict | None, name: str, state: dict, cwd: str | None = None) -> None:
    """Run every `name` hook in order; the first failure raises OCIError.

    cwd: the hooks' working directory; by default the bundle (runc's create chdirs
    there, so its hooks see it as cwd), or / when the bundle does not resolve here.
    """
    hooks = (hooks_cfg or {}).get(name)
    if not hooks:
        return
    stdin = json.dumps(state).encode()
    cwd = _cwd(cwd, state)
    for i, hook in enumerate(hooks):
        err = _run_one(hook, stdin, cwd)
        if err:
            raise OCIError(f"hooks.{name}[{i}] ({hook.get('path')}): {err}")


def run_lenient(hooks_cfg: dict | None, name: str, state: dict, cwd: str | None = None,
                warn=None) -> None:
    """Run every `name` hook in order; a failure is a warning and the rest still run
    (poststart, poststop). warn(message) defaults to a line on stderr."""
    hooks = (hooks_cfg or {}).get(name)
    if not hooks:
        return
    stdin = json.dumps(state).encode()
    cwd = _cwd(cwd, state)
    for i, hook in enumerate(hooks):
        err = _run_one(hook, stdin, cwd)
        if err:
            msg = f"hooks.{name}[{i}] ({hook.get('path')}): {err}"
            if warn is None:
                sys.stderr.write(f"pyrunc: warning: {msg}\n")
                sys.stderr.flush()
            else:
                warn(msg)


def _cwd(cwd: str | None, state: dict) -> str:
    if cwd is None:
        cwd = state.get("bundle") or "/"
    return cwd if os.path.isdir(cwd) else "/"


def _run_one(hook: dict, stdin: bytes, cwd: str) -> str | None:
    """Run one hook; return None on success or the reason it failed."""
    import subprocess  # only when a hook exists: ~3 ms of imports

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
    try:
        # A session of its own, so a timeout kills the hook and whatever it started,
        # and nothing the hook leaves running keeps our pipes open.
        proc = subprocess.Popen(argv, executable=path, env=env, cwd=cwd,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, close_fds=True,
                                start_new_session=True)
    except OSError as e:
        return f"cannot execute: {e.strerror}"
    try:
        out, errout = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, errout = proc.communicate()
        return f"timed out after {timeout}s, killed{_tail(errout, out)}"
    if proc.returncode < 0:
        return f"killed by signal {-proc.returncode}{_tail(errout, out)}"
    if proc.returncode:
        return f"exit status {proc.returncode}{_tail(errout, out)}"
    return None


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
