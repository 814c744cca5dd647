"""pyrunc.hooks end to end: real hook processes (busybox sh) on the real kernel."""

import json
import os
import time

import pytest

from ocispec.errors import OCIError
from pyrunc import hooks

BUSYBOX = "/bin/busybox"


@pytest.fixture
def bundle(tmp_path):
    d = tmp_path / "hooks-bundle"
    d.mkdir()
    return d


def state(bundle, status="created"):
    return {"ociVersion": "1.2.0", "id": "hooks-test-1", "status": status, "pid": os.getpid(),
            "bundle": str(bundle), "annotations": {"a": "b"}}


def sh(script, *extra, env=None, timeout=None):
    hook = {"path": BUSYBOX, "args": ["sh", "-c", script, "argv0-of-script", *extra]}
    if env is not None:
        hook["env"] = env
    if timeout is not None:
        hook["timeout"] = timeout
    return hook


def test_hook_gets_argv_env_state_and_cwd(bundle, tmp_path):
    out = tmp_path / "rec"
    script = (f"cat /proc/$$/cmdline > {out}.argv; cat /proc/$$/environ > {out}.env; "
              f"cat > {out}.stdin; pwd > {out}.cwd")
    cfg = {"prestart": [sh(script, "one", "two words", env=["FOO=bar", "EMPTY=", "X=a=b"])]}
    st = state(bundle)
    hooks.run(cfg, "prestart", st)
    argv = (out.parent / "rec.argv").read_bytes().split(b"\0")[:-1]
    assert argv == [b"sh", b"-c", script.encode(), b"argv0-of-script", b"one", b"two words"]
    env = (out.parent / "rec.env").read_bytes().split(b"\0")[:-1]
    assert env == [b"FOO=bar", b"EMPTY=", b"X=a=b"]  # exactly the hook's env, nothing inherited
    got = json.loads((out.parent / "rec.stdin").read_text())
    assert got == st
    assert (got["status"], got["pid"], got["id"], got["bundle"]) == (
        "created", os.getpid(), "hooks-test-1", str(bundle))
    assert (out.parent / "rec.cwd").read_text().strip() == str(bundle)


def test_no_env_means_empty_environment(bundle, tmp_path):
    out = tmp_path / "env"
    # busybox cp, not sh: the shell would add SHLVL, PWD and PATH to an empty environment.
    hook = {"path": BUSYBOX, "args": ["cp", "/proc/self/environ", str(out)]}
    hooks.run({"createRuntime": [hook]}, "createRuntime", state(bundle))
    assert out.read_bytes() == b""


def test_argv0_defaults_to_path(bundle, tmp_path):
    # busybox picks its applet from argv0: named "false", it must fail; were argv0 anything
    # but the path (e.g. "busybox"), it would print its help and exit 0.
    false = tmp_path / "false"
    false.symlink_to(BUSYBOX)
    with pytest.raises(OCIError, match=r"^hooks.prestart\[0\] \(.*/false\): exit status 1$"):
        hooks.run({"prestart": [{"path": str(false)}]}, "prestart", state(bundle))


def test_exit_status_and_stderr_tail(bundle):
    script = "echo noise; for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 2"
    with pytest.raises(OCIError) as e:
        hooks.run({"prestart": [sh(script)]}, "prestart", state(bundle))
    msg = str(e.value)
    assert msg.startswith(f"hooks.prestart[0] ({BUSYBOX}): exit status 2: line3 | ")
    assert msg.endswith("line7") and "line2" not in msg and "noise" not in msg
    assert "\n" not in msg


def test_killed_by_signal(bundle):
    with pytest.raises(OCIError, match=r"killed by signal 9"):
        hooks.run({"startContainer": [sh("kill -9 $$")]}, "startContainer", state(bundle))


def test_timeout_kills_the_hook(bundle, tmp_path):
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    with pytest.raises(OCIError, match=r"^hooks.createContainer\[0\] .*: timed out after 1s"):
        hooks.run({"createContainer": [sh(f"echo $$ > {pidfile}; sleep 30", timeout=1)]},
                  "createContainer", state(bundle))
    assert time.monotonic() - t0 < 10
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_nonexistent_and_not_executable(bundle, tmp_path):
    missing = tmp_path / "no-such-hook"
    with pytest.raises(OCIError, match=rf"^hooks.prestart\[0\] \({missing}\): no such file$"):
        hooks.run({"prestart": [{"path": str(missing)}]}, "prestart", state(bundle))
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(OCIError, match=r"not executable"):
        hooks.run({"prestart": [{"path": str(plain)}]}, "prestart", state(bundle))


def test_hooks_run_in_order_and_stop_at_first_failure(bundle, tmp_path):
    log = tmp_path / "order"
    cfg = {"poststop": [sh(f"echo first >> {log}"), sh(f"echo second >> {log}; exit 4"),
                        sh(f"echo third >> {log}")]}
    with pytest.raises(OCIError, match=r"^hooks.poststop\[1\] .*exit status 4$"):
        hooks.run(cfg, "poststop", state(bundle))
    assert log.read_text().split() == ["first", "second"]


def test_lenient_warns_and_continues(bundle, tmp_path, capfd):
    log = tmp_path / "order"
    cfg = {"poststop": [sh(f"echo first >> {log}"), sh("echo broken >&2; exit 4"),
                        sh(f"echo third >> {log}")]}
    hooks.run_lenient(cfg, "poststop", state(bundle, "stopped"))
    assert log.read_text().split() == ["first", "third"]
    err = capfd.readouterr().err
    assert err == f"pyrunc: warning: hooks.poststop[1] ({BUSYBOX}): exit status 4: broken\n"
    seen = []
    hooks.run_lenient(cfg, "poststop", state(bundle, "stopped"), warn=seen.append)
    assert len(seen) == 1 and "exit status 4" in seen[0]


def test_absent_hooks_do_nothing(bundle):
    hooks.run(None, "prestart", state(bundle))
    hooks.run({}, "prestart", state(bundle))
    hooks.run({"poststop": []}, "poststop", state(bundle))
