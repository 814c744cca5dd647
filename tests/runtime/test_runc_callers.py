"""Where runc's callers (containerd's shim, conmon, podman, scripts) read runc's exact
answers: kill --all and signal 0, ps arguments and stopped containers, compact events,
runc's flag spellings, exec's exit status, --log/--debug/--version and owner."""

import json
import os
import signal
import time

import pytest



def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _stopped(runtime, cid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while runtime.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline, "the container did not stop"
        time.sleep(0.02)


def test_kill_all_on_a_stopped_container_kills_what_is_left(runtime, bundle, cid, workdir):
    # No pid namespace: init's child outlives init in the container's cgroup, as in a pod
    # whose containers share one pid namespace (containerd then sends kill --all 9).
    bundle.config["linux"]["namespaces"] = [n for n in bundle.config["linux"]["namespaces"]
                                            if n["type"] != "pid"]
    bundle.config["root"]["readonly"] = False
    pidfile = os.path.join(bundle.rootfs, "tmp", "orphan")
    bundle.set_args("sh", "-c", "sleep 1000 & echo $! > /tmp/orphan; exit 0")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    _stopped(runtime, cid)
    orphan = int(open(pidfile).read())
    try:
        assert _alive(orphan)
        p = runtime("kill", "--all", cid, "9")
        assert p.returncode == 0, p.stderr
        deadline = time.monotonic() + 5
        while _alive(orphan):
            assert time.monotonic() < deadline, "kill --all left the orphan running"
            time.sleep(0.02)
        runtime("delete", cid, check=True)
    finally:
        if _alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_signal_zero(runtime, bundle, cid):
    bundle.set_args("sleep", "60")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    assert runtime("kill", cid, "0").returncode == 0
    runtime("kill", cid, "KILL", check=True)
    _stopped(runtime, cid)
    p = runtime("kill", cid, "0")
    assert p.returncode == 1 and "container not running" in p.stderr


def test_ps_arguments_follow_the_id_and_stopped_ps_prints_the_header(runtime, bundle, cid):
    bundle.set_args("sleep", "60")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    pid = runtime.state(cid)["pid"]
    out = runtime("ps", cid, "-o", "pid,comm", check=True).stdout.splitlines()
    assert out[0].split() == ["PID", "COMMAND"]
    assert [line.split() for line in out[1:]] == [[str(pid), "sleep"]]
    runtime("kill", cid, "KILL", check=True)
    _stopped(runtime, cid)
    p = runtime("ps", cid)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and "PID" in lines[0].split()
    p = runtime("ps", "-f", "json", cid)
    assert p.returncode == 0 and p.stdout.strip() == "null"


def test_events_stats_are_compact_json(runtime, bundle, cid):
    bundle.set_args("sleep", "60")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    out = runtime("events", "--stats", cid, check=True).stdout.strip()
    assert out.startswith('{"type":"stats","id":"') and ", " not in out and '": ' not in out
    assert json.loads(out)["id"] == cid


def test_update_takes_runcs_cpu_share_spelling(runtime, bundle, cid):
    bundle.set_args("sleep", "60")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    runtime("update", "--cpu-share", "333", cid, check=True)
    assert runtime.state(cid)["status"] == "running"
    cfg_shares = _cpu_shares(runtime, cid)
    assert cfg_shares == "333"
    runtime("update", "--cpu-shares", "444", cid, check=True)
    assert _cpu_shares(runtime, cid) == "444"


def _cpu_shares(runtime, cid) -> str | None:
    pid = runtime.state(cid)["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if "cpu" in ctrls.split(","):
                mp = _v1_mount("cpu")
                with open(f"{mp}{path}/cpu.shares") as g:
                    return g.read().strip()
            if ctrls == "" and os.path.exists(f"/sys/fs/cgroup{path}/cpu.weight"):
                pytest.skip("cgroup v2 host: cpu.shares is converted to cpu.weight")
    return None


def _v1_mount(ctrl: str) -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields = post.split()
            if fields[0] == "cgroup" and ctrl in fields[2].split(","):
                return pre.split()[4]
    pytest.skip(f"no v1 {ctrl} hierarchy on this host")


def test_exec_cgroup_joins_the_sub_cgroup(runtime, bundle, cid):
    bundle.set_args("sleep", "60")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    pid = runtime.state(cid)["pid"]
    cg = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            cg[ctrls] = path
    ctrl = next((c for c in cg if c == "pids" or c == "memory"), None)
    if ctrl is None:
        pytest.skip("no v1 pids or memory hierarchy on this host")
    sub = f"{_v1_mount(ctrl)}{cg[ctrl]}/extra"
    os.mkdir(sub)
    try:
        p = runtime("exec", "--cgroup", f"{ctrl}:extra", cid, "cat", "/proc/self/cgroup")
        assert p.returncode == 0, p.stderr
        mine = dict(line.split(":", 2)[1:] for line in p.stdout.splitlines())
        assert mine[ctrl].endswith("/extra"), mine
        p = runtime("exec", "--cgroup", "missing", cid, "true")
        assert p.returncode == 255 and "does not exist" in p.stderr
        p = runtime("exec", "--cgroup", "../up", cid, "true")
        assert p.returncode == 255 and "--cgroup" in p.stderr
    finally:
        runtime("kill", cid, "KILL")
        _stopped(runtime, cid)
        runtime("delete", cid)
        if os.path.isdir(sub):
            os.rmdir(sub)


def test_exec_pid_file_failure_exits_255_and_leaves_no_process(runtime, bundle, cid, workdir):
    bundle.set_args("sleep", "60")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    p = runtime("exec", "-d", "--pid-file", os.path.join(workdir, "no", "dir", "pid"), cid,
                "sleep", "777")
    assert p.returncode == 255 and "Traceback" not in p.stderr and "pid" in p.stderr
    time.sleep(0.2)
    ps = json.loads(runtime("ps", "-f", "json", cid, check=True).stdout)
    cmdlines = [open(f"/proc/{q}/cmdline", "rb").read() for q in ps if _alive(q)]
    assert not any(b"777" in c for c in cmdlines), "the exec'd process was left running"


def test_log_debug_version_owner_and_help(runtime, bundle, cid, workdir, pyrunc_bin):
    bundle.set_args("sleep", "60")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    for fmt in ("json", "text"):
        log = os.path.join(workdir, f"log.{fmt}")
        runtime("--log", log, "--log-format", fmt, "state", cid, check=True)
        assert os.path.exists(log), "--log is created by every command, as runc's"
        runtime("--log", log, "--log-format", fmt, "--debug", "state", cid, check=True)
        lines = open(log).read().splitlines()
        assert lines and all(("debug" in ln) for ln in lines)
        if fmt == "json":
            assert json.loads(lines[0])["level"] == "debug"
    v = runtime("--version", check=True).stdout.splitlines()
    assert v[0].startswith("pyrunc version ") and v[1].startswith("commit: ") \
        and v[2].startswith("spec: 1.")
    assert runtime.state(cid)["owner"] == ""  # runc's state leaves it empty; list fills it in
    listed = runtime("list", check=True).stdout.splitlines()
    assert listed[0].split()[-1] == "OWNER" and listed[1].split()[-1] == "root"
    assert json.loads(runtime("list", "--format", "json", check=True).stdout)[0]["owner"] == "root"
    from pyrunc.cli import COMMANDS, GLOBAL_FLAGS

    assert [f.name for f in GLOBAL_FLAGS if not f.help] == []
    for name, (flags, _, _) in COMMANDS.items():
        assert [f.name for f in flags if not f.help] == [], name
        assert runtime(name, "--help").returncode == 0


def test_exec_into_a_paused_container_does_not_block_resume(runtime, bundle, cid, pyrunc_bin):
    import subprocess

    bundle.set_args("sleep", "60")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    runtime("pause", cid, check=True)
    ex = subprocess.Popen([pyrunc_bin, "--root", runtime.root, "exec", "--ignore-paused", cid,
                           "echo", "thawed"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    try:
        time.sleep(0.5)  # exec is now waiting on its frozen process
        runtime("resume", cid, check=True, timeout=5)
        out, err = ex.communicate(timeout=10)
        assert ex.returncode == 0 and out.strip() == "thawed", err
    finally:
        if ex.poll() is None:
            ex.kill()
            ex.wait()


def test_create_in_a_frozen_cgroup_fails_at_once(runtime, bundle, cid):
    freezer = _v1_mount("freezer")
    name = f"pyrunc-frozen-{cid}"
    d = f"{freezer}/{name}"
    os.mkdir(d)
    try:
        with open(f"{d}/freezer.state", "w") as f:
            f.write("FROZEN")
        bundle.config["linux"]["cgroupsPath"] = f"/{name}"
        bundle.set_args("true")
        t = time.monotonic()
        p = runtime("create", "-b", bundle.path, cid, timeout=20)
        assert p.returncode == 1 and "container's cgroup unexpectedly frozen" in p.stderr
        assert time.monotonic() - t < 5
        assert not os.path.exists(os.path.join(runtime.root, cid))
    finally:
        if os.path.exists(d):
            with open(f"{d}/freezer.state", "w") as f:
                f.write("THAWED")
        for sub in os.listdir(freezer):
            if sub.startswith(name) and os.path.isdir(f"{freezer}/{sub}"):
                os.rmdir(f"{freezer}/{sub}")
    from cgroup_helpers import leftovers

    assert leftovers(name) == []


def test_home_from_passwd_and_cwd_entered_before_privileges_drop(runtime, bundle, cid):
    os.makedirs(os.path.join(bundle.rootfs, "private"), mode=0o700)
    bundle.config["process"]["env"] = ["PATH=/bin"]
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.config["process"]["cwd"] = "/private"
    bundle.set_args("sh", "-c", "echo $HOME; pwd")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["/home/user", "/private"]
    bundle.config["process"]["user"] = {"uid": 0, "gid": 0}
    bundle.config["process"]["env"] = ["PATH=/bin", "HOME=/mine"]
    bundle.set_args("sh", "-c", "echo $HOME")
    assert runtime("run", "-b", bundle.path, cid + "b").stdout.strip() == "/mine"
    bundle.config["process"]["env"] = ["PATH=/bin"]
    bundle.set_args("sleep", "60")
    runtime("run", "-d", "-b", bundle.path, cid + "c", check=True)
    assert runtime("exec", cid + "c", "sh", "-c", "echo $HOME").stdout.strip() == "/root"


def test_create_container_hooks_run_in_the_container_root(runtime, bundle, cid, workdir):
    out = os.path.join(bundle.rootfs, "hook-cwd")
    bundle.config["hooks"] = {"createContainer": [
        {"path": "/bin/sh", "args": ["sh", "-c", "pwd > hook-cwd"]}]}
    bundle.set_args("true")
    runtime("run", "-b", bundle.path, cid, check=True)
    assert open(out).read().strip() == bundle.rootfs


def test_no_process_and_kernel_memory(runtime, bundle, cid):
    del bundle.config["process"]
    bundle.write()
    p = runtime("create", "-b", bundle.path, cid)
    assert p.returncode == 1 and "process" in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(os.path.join(runtime.root, cid))
    b2 = dict(bundle.config)
    bundle.config.update(b2)
    bundle.config["process"] = {"args": ["true"], "cwd": "/", "env": ["PATH=/bin"],
                                "user": {"uid": 0, "gid": 0}}
    bundle.config["linux"].setdefault("resources", {})["memory"] = {"kernel": 64 << 20,
                                                                   "kernelTCP": 64 << 20}
    bundle.write()
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    assert "Kernel memory settings are ignored" in p.stderr
