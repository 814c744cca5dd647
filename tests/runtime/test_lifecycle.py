"""create/start/state/kill/delete/run/list through the installed pyrunc."""

import fcntl
import json
import os
import re
import subprocess
import time

import pytest


def wait_status(runtime, cid, want, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = runtime.state(cid)["status"]
        if st == want:
            return
        time.sleep(0.02)
    raise AssertionError(f"{cid} never became {want} (last: {st})")


def test_version(runtime):
    out = runtime("--version", check=True).stdout.splitlines()
    assert out[0].startswith("pyrunc version ")
    assert out[1].startswith("commit: ") and out[2].startswith("spec: 1.")  # runc's lines


def test_run_foreground_output_and_exit_status(runtime, bundle, cid):
    bundle.set_args("sh", "-c", "echo hello from $(hostname); exit 3")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.stdout == "hello from pyrunc\n"
    assert p.returncode == 3
    assert not os.path.exists(os.path.join(runtime.root, cid)), "run must delete the container"


def test_run_killed_by_signal_exit_status(runtime, bundle, cid):
    # pid 1 ignores SIGKILL from inside its namespace: kill it from outside.
    bundle.set_args("sleep", "30")
    p = subprocess.Popen([runtime.binary, "--root", runtime.root, "run", "-b", bundle.path, cid])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = runtime("state", cid)
        if r.returncode == 0 and json.loads(r.stdout)["status"] == "running":
            break
        time.sleep(0.02)
    runtime("kill", cid, "9", check=True)
    assert p.wait(10) == 128 + 9


def test_lifecycle_states_and_state_json(runtime, bundle, cid, workdir):
    marker = "/tmp/started"
    bundle.config["root"]["readonly"] = False
    bundle.set_args("sh", "-c", f"touch {marker}; sleep 30")
    runtime("create", "-b", bundle.path, cid, check=True)
    st = runtime.state(cid)
    assert list(st) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]
    assert st["id"] == cid and st["status"] == "created" and st["pid"] > 0
    assert st["bundle"] == bundle.path
    assert st["rootfs"] == os.path.realpath(bundle.rootfs)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$", st["created"])
    # The user process has not run: init waits on the exec fifo.
    assert not os.path.exists(bundle.rootfs + marker)
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert b"sleep" not in f.read()
    runtime("start", cid, check=True)
    assert runtime.state(cid)["status"] == "running"
    deadline = time.monotonic() + 5
    while not os.path.exists(bundle.rootfs + marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.exists(bundle.rootfs + marker)
    # Start only from created.
    p = runtime("start", cid)
    assert p.returncode == 1 and "running" in p.stderr
    runtime("kill", cid, "KILL", check=True)
    wait_status(runtime, cid, "stopped")
    assert runtime.state(cid)["pid"] == 0
    p = runtime("kill", cid)
    assert p.returncode == 1 and "container not running" in p.stderr
    runtime("delete", cid, check=True)
    p = runtime("state", cid)
    assert p.returncode == 1 and "does not exist" in p.stderr


def test_state_annotations(runtime, bundle, cid):
    bundle.config["annotations"] = {"org.example.key": "value"}
    bundle.set_args("true")
    runtime("create", "-b", bundle.path, cid, check=True)
    assert runtime.state(cid)["annotations"] == {"org.example.key": "value"}


def test_duplicate_id_fails_and_keeps_the_first(runtime, bundle, cid):
    bundle.set_args("sleep", "30")
    runtime("create", "-b", bundle.path, cid, check=True)
    first = runtime.state(cid)
    p = runtime("create", "-b", bundle.path, cid)
    assert p.returncode == 1 and "exists" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert runtime.state(cid) == first


def _catches(pid: int, sig: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


@pytest.mark.parametrize("sig,expect", [("TERM", 15), ("SIGUSR1", 10), ("9", 9), ("sigint", 2)])
def test_kill_signal_spellings(runtime, bundle, cid, sig, expect):
    bundle.set_args("sh", "-c", "trap 'exit 99' USR1 INT TERM; sleep 30 & wait")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    pid = runtime.state(cid)["pid"]
    if expect != 9:  # pid 1 ignores a signal it has no handler for: wait for the trap
        deadline = time.monotonic() + 10
        while not _catches(pid, expect):
            assert time.monotonic() < deadline, "the shell never set its trap"
            time.sleep(0.01)
    runtime("kill", cid, sig, check=True)
    wait_status(runtime, cid, "stopped")
    assert not os.path.exists(f"/proc/{pid}/stat") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_kill_unknown_signal(runtime, bundle, cid):
    bundle.set_args("sleep", "30")
    runtime("create", "-b", bundle.path, cid, check=True)
    for bad in ("SIGFOO", "65", "99", "FOO"):
        p = runtime("kill", cid, bad)
        assert p.returncode == 1 and "signal" in p.stderr, bad
    assert runtime.state(cid)["status"] == "created"


def test_delete_running_needs_force(runtime, bundle, cid):
    bundle.set_args("sleep", "30")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    pid = runtime.state(cid)["pid"]
    p = runtime("delete", cid)
    assert p.returncode == 1 and "not stopped" in p.stderr
    assert runtime.state(cid)["status"] == "running"
    runtime("delete", "-f", cid, check=True)
    assert not os.path.exists(os.path.join(runtime.root, cid))
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_delete_created_follows_the_spec(runtime, bundle, cid):
    # runtime-spec: deleting a container that is not stopped is an error (runc deletes it).
    bundle.set_args("true")
    runtime("create", "-b", bundle.path, cid, check=True)
    p = runtime("delete", cid)
    assert p.returncode == 1 and "not stopped: created" in p.stderr
    runtime("delete", "--force", cid, check=True)


def test_delete_force_of_missing_container_succeeds(runtime):
    assert runtime("delete", "-f", "never-existed").returncode == 0
    p = runtime("delete", "never-existed")
    assert p.returncode == 1 and "does not exist" in p.stderr


def test_list_formats(runtime, bundle, cid):
    bundle.set_args("sleep", "30")
    runtime("create", "-b", bundle.path, cid, check=True)
    assert runtime("list", "-q", check=True).stdout.split() == [cid]
    rows = json.loads(runtime("list", "-f", "json", check=True).stdout)
    assert rows[0]["id"] == cid and rows[0]["status"] == "created"
    table = runtime("list", check=True).stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert table[1].split()[0] == cid


def test_pid_file(runtime, bundle, cid, workdir):
    bundle.set_args("sleep", "30")
    pidfile = os.path.join(workdir, "init.pid")
    runtime("create", "--pid-file", pidfile, "-b", bundle.path, cid, check=True)
    assert int(open(pidfile).read()) == runtime.state(cid)["pid"]


def test_flags_after_the_id_and_equals_form(runtime, bundle, cid):
    bundle.set_args("true")
    runtime("create", cid, f"--bundle={bundle.path}", check=True)
    assert runtime.state(cid)["status"] == "created"


def test_lock_serialises_commands_on_one_id(runtime, bundle, cid):
    bundle.set_args("sleep", "30")
    runtime("create", "-b", bundle.path, cid, check=True)
    fd = os.open(os.path.join(runtime.root, cid, "lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    p = subprocess.Popen([runtime.binary, "--root", runtime.root, "start", cid],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    assert p.poll() is None, "start must wait for the lock"
    assert runtime.state(cid)["status"] == "created"
    os.close(fd)
    assert p.wait(10) == 0
    assert runtime.state(cid)["status"] == "running"


def test_concurrent_starts_only_one_wins(runtime, bundle, cid):
    bundle.set_args("sleep", "30")
    runtime("create", "-b", bundle.path, cid, check=True)
    procs = [subprocess.Popen([runtime.binary, "--root", runtime.root, "start", cid],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    codes = sorted(p.wait(15) for p in procs)
    assert codes == [0, 1, 1, 1]
