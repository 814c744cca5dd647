"""kill -9 at any moment of `create` leaves nothing that `delete -f` does not clean.

DESIGN.md section 8 (faults). A create killed part-way must leave a record that `state`
answers consistently and that `delete -f` (or a new create of the same id) undoes: no state
directory, no cgroup directory in any hierarchy, no process of the container, no mount.
A container process killed during setup must turn into create's one-line error.
"""

import json
import os
import subprocess
import tempfile
import time

import pytest
from conftest import BUSYBOX, mounts_under


def cgroup_mounts() -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split(" ", 1)[0] in ("cgroup", "cgroup2"):
                out.append(pre.split(" ")[4])
    return out


def cgroups_named(token: str) -> list[str]:
    """Cgroup directories whose name has token, in every mounted hierarchy (v1 and v2)."""
    found = []
    for mp in cgroup_mounts():
        for root, dirs, _ in os.walk(mp):
            found += [os.path.join(root, d) for d in dirs if token in d]
    return found


def processes_with(token: str) -> list[str]:
    """Live processes (not zombies) with token in their command line or environment."""
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X"):
                continue
            blob = b""
            for what in ("cmdline", "environ"):
                with open(f"/proc/{name}/{what}", "rb") as f:
                    blob += f.read()
        except OSError:
            continue
        if token.encode() in blob:
            found.append(f"{name}: {blob[:120]!r}")
    return found


def leftovers(runtime, cid, bundle, grace=2.0) -> dict:
    """What is left of container cid. Killed processes get a moment to be gone."""
    deadline = time.monotonic() + grace
    while True:
        left = {
            "state dir": os.path.exists(os.path.join(runtime.root, cid)),
            "cgroups": cgroups_named(cid),
            "processes": processes_with(cid),
            "mounts": mounts_under(bundle.path) + [ln for ln in open("/proc/self/mountinfo")
                                                   if cid in ln],
        }
        if not any(left.values()) or time.monotonic() > deadline:
            return {k: v for k, v in left.items() if v}
        time.sleep(0.02)


def create_cmd(runtime, bundle, cid) -> list[str]:
    return [runtime.binary, "--root", runtime.root, "create", "-b", bundle.path, cid]


def env_with(cid) -> dict:
    # Every process create forks carries the id in its environment, even after init execs.
    return dict(os.environ, PYRUNC_CRASH_TEST=cid)


def crash_bundle(bundle, cid):
    # A nested cgroupsPath: the parent create makes must go too. The id in the container's
    # environment finds its process after exec as well.
    bundle.config["linux"]["cgroupsPath"] = f"/crash-{cid}/{cid}"
    bundle.config["process"]["env"].append(f"PYRUNC_CRASH_TEST={cid}")
    bundle.set_args("sleep", "30")


def check_state_answer(runtime, cid) -> str:
    """`state` of a container whose create died: 'does not exist' or a consistent state."""
    p = runtime("state", cid)
    assert "Traceback" not in p.stderr, p.stderr
    if p.returncode != 0:
        assert p.stderr.strip() == f"pyrunc: container {cid!r} does not exist", p.stderr
        return "missing"
    st = json.loads(p.stdout)
    assert st["status"] in ("stopped", "created"), st
    if st["status"] == "stopped":
        assert st["pid"] == 0
    return st["status"]


def test_create_killed_at_any_moment_leaves_nothing_after_delete_force(runtime, bundle, cid):
    crash_bundle(bundle, cid)
    # How long a whole create takes here (a loaded machine is slower): sweep across it.
    took = 0.0
    for _ in range(2):
        t0 = time.monotonic()
        subprocess.run(create_cmd(runtime, bundle, cid), env=env_with(cid), check=True,
                       stdout=subprocess.DEVNULL, timeout=30)
        took = max(took, time.monotonic() - t0)
        runtime("delete", "-f", cid, check=True)
    tries = 40
    hit = {"missing": 0, "stopped": 0, "created": 0, "cgroups": 0}
    budget = time.monotonic() + 90
    nested = bundle.config["linux"]["cgroupsPath"]
    for i in range(tries):
        delay = took * 1.1 * i / tries
        # Every other try without cgroupsPath: the default, the id below pyrunc's cgroup.
        if i % 2:
            del bundle.config["linux"]["cgroupsPath"]
        else:
            bundle.config["linux"]["cgroupsPath"] = nested
        bundle.write()
        # stderr to a file: a created init holds it open, like a pipe's end, until deleted
        with tempfile.TemporaryFile() as errf:
            p = subprocess.Popen(create_cmd(runtime, bundle, cid), env=env_with(cid),
                                 stdout=subprocess.DEVNULL, stderr=errf)
            time.sleep(delay)
            p.kill()
            p.wait(30)
            errf.seek(0)
            err = errf.read().decode()
        assert "Traceback" not in err, err
        if os.path.isdir(os.path.join(runtime.root, cid)):
            hit[check_state_answer(runtime, cid)] += 1
        hit["cgroups"] += bool(cgroups_named(cid))
        d = runtime("delete", "-f", cid)
        assert d.returncode == 0 and "Traceback" not in d.stderr, (delay, d.stderr)
        left = leftovers(runtime, cid, bundle)
        assert not left, f"killed after {delay * 1000:.0f} ms, delete -f left {left}"
        assert runtime("state", cid).returncode == 1
        assert time.monotonic() < budget, f"sweep too slow: {i} tries, {hit}"
    # The sweep must have killed create while it had made something, or it proves nothing.
    assert hit["cgroups"] >= 3, hit


def hook_bundle(bundle, cid, script):
    crash_bundle(bundle, cid)
    bundle.config["hooks"] = {"createRuntime": [
        {"path": BUSYBOX, "args": ["sh", "-c", script]}]}
    bundle.write()


INIT_PID = "pid=$(sed -n 's/.*\"pid\": *\\([0-9][0-9]*\\).*/\\1/p')"


def test_create_killed_in_a_hook_state_stopped_then_delete_force(runtime, bundle, cid):
    # The createRuntime hook kills create itself: cgroups made, init waiting in setup.
    hook_bundle(bundle, cid, "kill -9 $PPID; sleep 5")
    p = subprocess.run(create_cmd(runtime, bundle, cid), env=env_with(cid),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    assert p.returncode == -9
    assert cgroups_named(cid), "the hook ran after the cgroups were made"
    assert check_state_answer(runtime, cid) == "stopped"
    assert [ln.split()[:3] for ln in runtime("list").stdout.splitlines()[1:]] == \
        [[cid, "0", "stopped"]]
    p = runtime("start", cid)
    assert p.returncode == 1 and "stopped" in p.stderr, p.stderr
    runtime("delete", "-f", cid, check=True)
    assert not leftovers(runtime, cid, bundle)


def test_create_killed_in_a_hook_then_create_again(runtime, bundle, cid):
    hook_bundle(bundle, cid, "kill -9 $PPID; sleep 5")
    p = subprocess.run(create_cmd(runtime, bundle, cid), env=env_with(cid),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    assert p.returncode == -9
    # The same id again: the dead create's remains are cleaned, the new one works.
    del bundle.config["hooks"]
    bundle.write()
    runtime("create", "-b", bundle.path, cid, check=True, env=env_with(cid))
    assert runtime.state(cid)["status"] == "created"
    runtime("delete", "-f", cid, check=True)
    assert not leftovers(runtime, cid, bundle)


def test_init_killed_during_setup_is_a_one_line_error(runtime, bundle, cid):
    # The hook kills the container's init while it waits for the hooks to finish.
    hook_bundle(bundle, cid, f"{INIT_PID}; kill -9 $pid")
    for _ in range(5):  # the parent may see a reset, a broken pipe or an end of file
        p = runtime("create", "-b", bundle.path, cid, env=env_with(cid))
        assert p.returncode == 1, p.stderr
        assert p.stderr.startswith("pyrunc: container init exited"), p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "killed by signal 9" in p.stderr, p.stderr
        assert not leftovers(runtime, cid, bundle)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def test_container_process_killed_at_any_moment_of_setup(runtime, bundle, cid):
    # create's child is stage1, then init (reparented to create): kill it at a swept moment
    # after it appears. create must fail with one line and leave nothing, or have finished.
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        pytest.skip("the kernel has no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)")
    crash_bundle(bundle, cid)
    setup = 0.0
    for _ in range(2):
        p = subprocess.Popen(create_cmd(runtime, bundle, cid), env=env_with(cid),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not children(p.pid) and p.poll() is None:
            pass
        t0 = time.monotonic()
        assert p.wait(30) == 0
        setup = max(setup, time.monotonic() - t0)
        runtime("delete", "-f", cid, check=True)
    tries = 30
    outcomes = {"init exited": 0, "other error": 0, "finished": 0}
    for i in range(tries):
        with tempfile.TemporaryFile() as errf:
            p = subprocess.Popen(create_cmd(runtime, bundle, cid), env=env_with(cid),
                                 stdout=subprocess.DEVNULL, stderr=errf)
            while not children(p.pid) and p.poll() is None:
                pass
            time.sleep(setup * i / tries)
            for pid in children(p.pid):
                os.kill(pid, 9)
            rc = p.wait(30)
            errf.seek(0)
            err = errf.read().decode()
        if rc == 0:
            outcomes["finished"] += 1
            assert check_state_answer(runtime, cid) in ("created", "stopped")
            runtime("delete", "-f", cid, check=True)
        else:
            assert rc == 1 and err.startswith("pyrunc: ") and len(err.splitlines()) == 1, err
            if err.startswith("pyrunc: container init exited during setup"):
                outcomes["init exited"] += 1
            else:
                outcomes["other error"] += 1
        left = leftovers(runtime, cid, bundle)
        assert not left, f"try {i} ({err.strip()!r}) left {left}"
    assert outcomes["init exited"] >= 3, outcomes


def test_create_failing_after_init_is_ready_leaves_nothing(runtime, bundle, cid, workdir):
    # The pid file is written last, once init is ready and the state saved: a failure
    # there must still undo everything, init included.
    crash_bundle(bundle, cid)
    bad = os.path.join(workdir, "no-such-dir", "pid")
    p = runtime("create", "--pid-file", bad, "-b", bundle.path, cid, env=env_with(cid))
    assert p.returncode == 1
    assert p.stderr == f"pyrunc: --pid-file {bad}: cannot write it: No such file or directory\n"
    assert not leftovers(runtime, cid, bundle)
