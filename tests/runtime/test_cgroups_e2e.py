"""Cgroups end to end through the installed pyrunc: cgroupsPath + resources in config.json,
checked in the host's cgroup files while the container runs, from inside the container,
and gone after delete."""

import json
import os
import re
import time

import pytest

from cgroup_helpers import BLKIO_WEIGHT, leftovers, unique
from pyrunc.cgroups import Manager, paths


def read(d, name):
    with open(f"{d}/{name}") as f:
        return f.read().strip()


def wait_status(runtime, cid, want, timeout=10):
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = runtime.state(cid)["status"]
        if st == want:
            return
        time.sleep(0.02)
    raise AssertionError(f"{cid} never became {want} (last: {st})")


def loop0():
    with open("/sys/block/loop0/dev") as f:
        return tuple(int(x) for x in f.read().split(":"))


RESOURCES = {
    "memory": {"limit": 128 << 20, "reservation": 64 << 20, "swap": 256 << 20,
               "swappiness": 30},
    "cpu": {"shares": 300, "quota": 40000, "period": 100000, "cpus": "0", "mems": "0"},
    "pids": {"limit": 40},
    "devices": [{"allow": False, "access": "rwm"}],
}


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_run_applies_resources_and_delete_removes_the_cgroups(runtime, bundle, cid, kind):
    name = unique("e2e")
    path = f"{name}/{cid}" if kind == "relative" else f"/{name}/{cid}"
    major, minor = loop0()
    res = json.loads(json.dumps(RESOURCES))
    res["blockIO"] = {"throttleWriteBpsDevice": [
        {"major": major, "minor": minor, "rate": 4194304}]}
    if BLKIO_WEIGHT:
        res["blockIO"]["weight"] = 250
    bundle.config["linux"]["cgroupsPath"] = path
    bundle.config["linux"]["resources"] = res
    bundle.set_args("sh", "-c", "sleep 1000 & sleep 1000 & wait")
    m = Manager.for_container(cid, path)
    try:
        runtime("run", "-d", "-b", bundle.path, cid, check=True)
        wait_status(runtime, cid, "running")
        pid = runtime.state(cid)["pid"]
        with open(f"/proc/{pid}/cgroup") as f:
            lines = dict(line.split(":", 2)[1:] for line in f.read().splitlines())
        for ctrl, d in m.v1.items():
            assert str(pid) in read(d, "cgroup.procs").split(), ctrl
        if m.v2:
            assert str(pid) in read(m.v2, "cgroup.procs").split()
            assert lines[""] == "/" + m.v2.split(paths.mounts()[1][0] + "/", 1)[1]
        mem, cpu = m.v1["memory"], m.v1["cpu"]
        assert read(mem, "memory.limit_in_bytes") == str(128 << 20)
        assert read(mem, "memory.soft_limit_in_bytes") == str(64 << 20)
        assert read(mem, "memory.memsw.limit_in_bytes") == str(256 << 20)
        assert read(mem, "memory.swappiness") == "30"
        assert read(cpu, "cpu.shares") == "300"
        assert read(cpu, "cpu.cfs_quota_us") == "40000"
        assert read(m.v1["cpuset"], "cpuset.cpus") == "0"
        assert read(m.v1["pids"], "pids.max") == "40"
        assert read(m.v1["blkio"], "blkio.throttle.write_bps_device") == \
            f"{major}:{minor} 4194304"
        devs = read(m.v1["devices"], "devices.list").splitlines()
        assert "a *:* rwm" not in devs and "c 1:3 rwm" in devs
        # ps lists init and its two sleeps, as the host sees them
        deadline = time.monotonic() + 5
        while True:
            ps = json.loads(runtime("ps", "-f", "json", cid, check=True).stdout)
            if len(ps) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(ps) == 3 and pid in ps and sorted(ps) == sorted(m.pids())
        # pause / resume drive the freezer
        runtime("pause", cid, check=True)
        assert read(m.v1["freezer"], "freezer.state") == "FROZEN"
        assert runtime.state(cid)["status"] == "paused"
        runtime("resume", cid, check=True)
        assert read(m.v1["freezer"], "freezer.state") == "THAWED"
        assert runtime.state(cid)["status"] == "running"
        runtime("kill", "--all", cid, "KILL", check=True)
        wait_status(runtime, cid, "stopped")
        runtime("delete", cid, check=True)
        assert all(not os.path.exists(d) for d in m.dirs())
        # the parent directory create made for the nested path goes too
        assert leftovers(name) == []
    finally:
        runtime("delete", "-f", cid)
        for d in sorted(set(m.dirs()), reverse=True):  # only if the test failed half-way
            for p in (d, os.path.dirname(d)):
                if os.path.isdir(p) and name in p:
                    os.rmdir(p)


def test_delete_force_of_a_paused_container_removes_its_cgroups(runtime, bundle, cid):
    name = unique("e2e")
    bundle.config["linux"]["cgroupsPath"] = f"/{name}"
    bundle.set_args("sleep", "1000")
    m = Manager.for_container(cid, f"/{name}")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    wait_status(runtime, cid, "running")
    runtime("pause", cid, check=True)
    runtime("delete", "-f", cid, check=True)
    assert all(not os.path.exists(d) for d in m.dirs())
    assert leftovers(name) == []


def test_the_container_sees_its_own_limits_in_sys_fs_cgroup(runtime, bundle, cid):
    name = unique("e2e")
    bundle.config["linux"]["cgroupsPath"] = f"/{name}"
    bundle.config["linux"]["resources"] = {"pids": {"limit": 23},
                                           "memory": {"limit": 96 << 20},
                                           "devices": [{"allow": False, "access": "rwm"}]}
    bundle.set_args("sh", "-c", "cat /sys/fs/cgroup/pids/pids.max "
                    "/sys/fs/cgroup/memory/memory.limit_in_bytes; "
                    "grep ' /sys/fs/cgroup' /proc/self/mountinfo; cat /proc/self/cgroup; "
                    "echo x > /sys/fs/cgroup/pids/pids.max || echo READONLY; "
                    "echo data > /dev/null && echo NULL-OK")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert out[0] == "23" and out[1] == str(96 << 20)
    mounts = [line for line in out if " /sys/fs/cgroup" in line]
    assert any(" - tmpfs " in line for line in mounts)
    assert any(line.split()[4] == "/sys/fs/cgroup/pids" for line in mounts)
    if paths.mounts()[1]:
        assert any(line.split()[4] == "/sys/fs/cgroup/unified" for line in mounts)
    # default spec: a cgroup namespace, so the container's cgroup is its root
    cglines = [line for line in out if re.match(r"^\d+:[^:]*:/", line)]
    assert len(cglines) == len(open("/proc/self/cgroup").read().splitlines())
    assert all(line.endswith(":/") for line in cglines), cglines
    assert "READONLY" in out  # the spec's cgroup mount is ro
    assert "NULL-OK" in out  # deny-all still leaves runc's default devices
    assert leftovers(name) == []


@pytest.mark.parametrize("res, field", [
    ({"memory": {"limit": 64 << 20, "swap": 32 << 20}}, "linux.resources.memory.swap"),
    ({"cpu": {"cpus": "0-63"}}, "linux.resources.cpu.cpus"),
    ({"pids": {"limit": "lots"}}, "linux.resources.pids.limit"),
    ({"memory": {"swappiness": 500}}, "linux.resources.memory.swappiness"),
    ({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]},
     "linux.resources.hugepageLimits[0].pageSize"),
    ({"unified": {"nonesuch.file": "1"}}, "linux.resources.unified.nonesuch.file"),
])
def test_bad_resources_fail_create_and_leave_nothing(runtime, bundle, cid, res, field):
    name = unique("e2e")
    bundle.config["linux"]["cgroupsPath"] = f"/{name}"
    bundle.config["linux"]["resources"] = res
    bundle.set_args("sleep", "1000")
    p = runtime("create", "-b", bundle.path, cid)
    assert p.returncode == 1
    msg = p.stderr.strip()
    assert field in msg and "\n" not in msg, msg
    assert not os.path.exists(os.path.join(runtime.root, cid))
    assert leftovers(name) == []


def test_update_changes_limits_of_a_running_container(runtime, bundle, cid, workdir):
    name = unique("e2e")
    bundle.config["linux"]["cgroupsPath"] = f"/{name}"
    bundle.config["linux"]["resources"] = {"memory": {"limit": 64 << 20, "swap": 64 << 20},
                                           "pids": {"limit": 5},
                                           "devices": [{"allow": False, "access": "rwm"}]}
    bundle.set_args("sleep", "1000")
    m = Manager.for_container(cid, f"/{name}")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    try:
        devices_before = read(m.v1["devices"], "devices.list")
        # memory grows past the old memory+swap: the write order must adapt
        runtime("update", "--memory", "200M", "--memory-swap", "300M", "--pids-limit", "9",
                "--cpu-quota", "30000", "--cpu-period", "60000", "--cpuset-cpus", "0",
                cid, check=True)
        assert read(m.v1["memory"], "memory.limit_in_bytes") == str(200 << 20)
        assert read(m.v1["memory"], "memory.memsw.limit_in_bytes") == str(300 << 20)
        assert read(m.v1["pids"], "pids.max") == "9"
        assert read(m.v1["cpu"], "cpu.cfs_quota_us") == "30000"
        assert read(m.v1["cpu"], "cpu.cfs_period_us") == "60000"
        assert read(m.v1["cpuset"], "cpuset.cpus") == "0"
        res = os.path.join(workdir, "res.json")
        with open(res, "w") as f:
            json.dump({"cpu": {"shares": 700}, "pids": {"limit": 11},
                       "devices": [{"allow": True, "access": "rwm"}]}, f)
        runtime("update", "-r", res, cid, check=True)
        assert read(m.v1["cpu"], "cpu.shares") == "700"
        assert read(m.v1["pids"], "pids.max") == "11"
        assert read(m.v1["devices"], "devices.list") == devices_before  # as runc: untouched
        p = runtime("update", "--memory", "5x", cid)
        assert p.returncode == 1 and "--memory" in p.stderr and p.stderr.count("\n") == 1
        with open(res, "w") as f:
            json.dump({"cpu": {"cpus": "0-63"}}, f)
        p = runtime("update", "-r", res, cid)
        assert p.returncode == 1 and "linux.resources.cpu.cpus" in p.stderr
        assert read(m.v1["cpuset"], "cpuset.cpus") == "0"
    finally:
        runtime("delete", "-f", cid)
    assert leftovers(name) == []


def test_events_stats_and_oom(runtime, bundle, cid):
    import subprocess
    name = unique("e2e")
    bundle.config["root"]["readonly"] = False
    bundle.config["linux"]["cgroupsPath"] = f"/{name}"
    bundle.config["linux"]["resources"] = {"memory": {"limit": 16 << 20, "swap": 16 << 20},
                                           "pids": {"limit": 20}}
    # a subshell that eats memory once /tmp/go exists; the container itself lives on
    bundle.set_args("sh", "-c", "sleep 1000 & while [ ! -e /tmp/go ]; do sleep 0.05; done; "
                    "(x=y; while :; do x=$x$x; done); wait")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    ev = None
    try:
        st = json.loads(runtime("events", "--stats", cid, check=True).stdout)
        assert st["type"] == "stats" and st["id"] == cid
        data = st["data"]
        assert data["memory"]["usage"]["limit"] == 16 << 20
        assert data["pids"]["limit"] == 20 and data["pids"]["current"] >= 2
        assert data["cpu"]["usage"]["total"] > 0
        ev = subprocess.Popen([runtime.binary, "--root", runtime.root, "events", "--interval",
                               "200ms", cid], stdout=subprocess.PIPE, text=True)
        first = json.loads(ev.stdout.readline())
        assert first["type"] == "stats" and first["id"] == cid
        open(os.path.join(bundle.rootfs, "tmp", "go"), "w").close()
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            e = json.loads(ev.stdout.readline())
            seen.append(e["type"])
            if e["type"] == "oom":
                break
        assert seen[-1] == "oom"
        assert runtime.state(cid)["status"] == "running"
    finally:
        if ev is not None:
            ev.kill()
            ev.wait()
            ev.stdout.close()
        runtime("delete", "-f", cid)
    assert leftovers(name) == []
    p = runtime("events", "--stats", cid)
    assert p.returncode == 1 and "does not exist" in p.stderr
