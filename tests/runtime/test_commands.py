"""exec, ps, pause/resume, update, events, features, spec, tmpcopyup, terminal."""

import json
import os
import pty
import subprocess
import time

import pytest


def running(runtime, bundle, cid, *args):
    bundle.set_args(*(args or ("sleep", "60")))
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    return runtime.state(cid)["pid"]


def test_exec_joins_the_container(runtime, bundle, cid):
    pid = running(runtime, bundle, cid)
    p = runtime("exec", cid, "sh", "-c", "hostname; readlink /proc/self/ns/net; echo $$; exit 7")
    assert p.returncode == 7, p.stderr
    host, netns, mypid = p.stdout.split()
    assert host == "pyrunc"
    assert netns == os.readlink(f"/proc/{pid}/ns/net")
    assert int(mypid) > 1, "the exec'd process lives in the container's pid namespace"


def test_exec_flags_env_cwd_user(runtime, bundle, cid):
    running(runtime, bundle, cid)
    p = runtime("exec", "-e", "A=b", "--cwd", "/tmp", "-u", "1000:1000", cid,
                "sh", "-c", "echo $A; pwd; id -u; id -g")
    assert p.stdout.split() == ["b", "/tmp", "1000", "1000"], p.stderr


def test_exec_process_json_and_detach_pidfile(runtime, bundle, cid, workdir):
    running(runtime, bundle, cid)
    proc = {"args": ["sleep", "30"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
    pj = os.path.join(workdir, "process.json")
    json.dump(proc, open(pj, "w"))
    pidfile = os.path.join(workdir, "exec.pid")
    runtime("exec", "--process", pj, "--detach", "--pid-file", pidfile, cid, check=True)
    epid = int(open(pidfile).read())
    assert open(f"/proc/{epid}/cmdline", "rb").read().split(b"\0")[0] == b"sleep"
    pids = json.loads(runtime("ps", "-f", "json", cid, check=True).stdout)
    assert epid in pids and runtime.state(cid)["pid"] in pids


def test_exec_errors(runtime, bundle, cid, workdir):
    running(runtime, bundle, cid)
    p = runtime("exec", cid, "no-such-cmd")
    assert p.returncode == 255 and "executable file not found" in p.stderr  # runc: 255
    bad = os.path.join(workdir, "bad.json")
    open(bad, "w").write('{"args": "x", "cwd": "/"}')
    p = runtime("exec", "--process", bad, cid)
    assert p.returncode == 255 and "args" in p.stderr
    runtime("kill", cid, "KILL", check=True)
    time.sleep(0.3)
    p = runtime("exec", cid, "true")
    assert p.returncode == 255 and "stopped" in p.stderr


def test_ps_table(runtime, bundle, cid):
    pid = running(runtime, bundle, cid)
    out = runtime("ps", cid, check=True).stdout.splitlines()
    assert "PID" in out[0].split()
    assert any(line.split()[1] == str(pid) for line in out[1:])


def test_pause_resume(runtime, bundle, cid):
    pid = running(runtime, bundle, cid, "sh", "-c", "while true; do sleep 0.05; done")
    runtime("pause", cid, check=True)
    assert runtime.state(cid)["status"] == "paused"
    p = runtime("pause", cid)
    assert p.returncode == 1
    runtime("resume", cid, check=True)
    assert runtime.state(cid)["status"] == "running"
    assert runtime("resume", cid).returncode == 1


def test_update_and_events_stats(runtime, bundle, cid, workdir):
    running(runtime, bundle, cid)
    runtime("update", "--memory", "64M", "--pids-limit", "50", cid, check=True)
    ev = json.loads(runtime("events", "--stats", cid, check=True).stdout)
    assert ev["type"] == "stats" and ev["id"] == cid
    assert ev["data"]["pids"]["limit"] == 50
    assert ev["data"]["memory"]["usage"]["limit"] == 64 << 20
    res = os.path.join(workdir, "res.json")
    json.dump({"pids": {"limit": 77}}, open(res, "w"))
    runtime("update", "--resources", res, cid, check=True)
    ev = json.loads(runtime("events", "--stats", cid, check=True).stdout)
    assert ev["data"]["pids"]["limit"] == 77
    p = runtime("update", "--memory", "lots", cid)
    assert p.returncode == 1


def test_features_document(runtime):
    doc = json.loads(runtime("features", check=True).stdout)
    assert doc["ociVersionMin"].startswith("1.")
    assert "CAP_SYS_ADMIN" in doc["linux"]["capabilities"]
    assert "SCMP_ACT_NOTIFY" in doc["linux"]["seccomp"]["actions"]
    assert set(doc["linux"]["namespaces"]) >= {"pid", "network", "mount", "user", "time", "cgroup"}
    assert doc["linux"]["apparmor"]["enabled"] is os.path.exists("/sys/kernel/security/apparmor")
    from ocispec.schema import validate_document

    validate_document(doc, "features", source="pyrunc features")


def test_spec_is_valid_and_refuses_overwrite(runtime, workdir):
    d = os.path.join(workdir, "spec")
    os.makedirs(d)
    runtime("spec", "-b", d, check=True)
    cfg = json.load(open(os.path.join(d, "config.json")))
    from ocispec.runtime_config import validate_config
    from ocispec.schema import validate_document

    validate_config(cfg)
    validate_document(cfg, "config", source="config.json")
    assert runtime("spec", "-b", d).returncode == 1


def test_tmpcopyup(runtime, bundle, cid):
    os.makedirs(os.path.join(bundle.rootfs, "etc/app"))
    open(os.path.join(bundle.rootfs, "etc/app/conf"), "w").write("kept\n")
    bundle.config["mounts"].append({"destination": "/etc/app", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["tmpcopyup"]})
    bundle.set_args("sh", "-c", "cat /etc/app/conf; grep -c ' /etc/app ' /proc/self/mountinfo")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.stdout.split() == ["kept", "1"], p.stderr


def test_run_with_terminal_in_the_foreground(runtime, bundle, cid):
    bundle.config["process"]["terminal"] = True
    bundle.set_args("sh", "-c", "tty; stty size")
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(runtime.binary, [runtime.binary, "--root", runtime.root, "run", "-b", bundle.path, cid])
    out = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = out.decode(errors="replace")
    assert os.WEXITSTATUS(status) == 0, text
    assert "/dev/pts/0" in text or "/dev/console" in text, text


def test_detached_terminal_needs_console_socket(runtime, bundle, cid):
    bundle.config["process"]["terminal"] = True
    bundle.set_args("true")
    p = runtime("run", "-d", "-b", bundle.path, cid)
    assert p.returncode == 1 and "console-socket" in p.stderr
    assert not os.path.exists(os.path.join(runtime.root, cid))


@pytest.mark.parametrize("hook_phase", ["prestart", "createRuntime", "poststart"])
def test_failing_hook_fails_and_cleans_up(runtime, bundle, cid, hook_phase):
    bundle.config["hooks"] = {hook_phase: [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}]}
    bundle.set_args("sleep", "30")
    p = runtime("run", "-d", "-b", bundle.path, cid)
    assert p.returncode == 1 and "nope" in p.stderr and hook_phase in p.stderr
    if hook_phase != "poststart":
        assert not os.path.exists(os.path.join(runtime.root, cid))


def test_hooks_get_state_on_stdin(runtime, bundle, cid, workdir):
    out = os.path.join(workdir, "hooks.log")
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"cat >> {out}; echo >> {out}"]}
    bundle.config["hooks"] = {k: [hook] for k in ("prestart", "createRuntime", "poststart", "poststop")}
    bundle.set_args("true")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    states = [json.loads(line) for line in open(out).read().splitlines() if line.strip()]
    assert [s["status"] for s in states] == ["creating", "creating", "running", "stopped"]
    assert all(s["id"] == cid and s["bundle"] == bundle.path for s in states)
    assert states[0]["pid"] > 0
