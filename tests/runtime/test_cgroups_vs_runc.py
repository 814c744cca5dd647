"""The same cgroupsPath and resources through runc and through pyrunc.cgroups: the host's
cgroup files must read the same."""

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from cgroup_helpers import BLKIO_WEIGHT, BUSYBOX, leftovers, procs, unique  # noqa: F401
from pyrunc.cgroups import Manager, create_resources, paths

RUNC = shutil.which("runc")
pytestmark = pytest.mark.skipif(RUNC is None, reason="runc is not installed on this host")

FILES = {
    "memory": ["memory.limit_in_bytes", "memory.soft_limit_in_bytes",
               "memory.memsw.limit_in_bytes", "memory.swappiness", "memory.oom_control"],
    "cpu": ["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.rt_runtime_us"],
    "cpuset": ["cpuset.cpus", "cpuset.mems"],
    "pids": ["pids.max"],
    "blkio": ["blkio.bfq.weight", "blkio.throttle.read_bps_device",
              "blkio.throttle.write_iops_device"],
    "devices": ["devices.list"],
}


def snapshot(dirs: dict) -> dict:
    out = {}
    for ctrl, names in FILES.items():
        for name in names:
            try:
                with open(f"{dirs[ctrl]}/{name}") as f:
                    out[name] = f.read().strip()
                if name == "devices.list":  # the kernel lists in the order rules came
                    out[name] = sorted(out[name].splitlines())
            except OSError as e:
                out[name] = f"<{e.strerror}>"
    return out


def resources():
    with open("/sys/block/loop0/dev") as f:
        major, minor = (int(x) for x in f.read().split(":"))
    return {
        "memory": {"limit": 96 << 20, "reservation": 48 << 20, "swap": 192 << 20,
                   "swappiness": 20, "disableOOMKiller": True},
        "cpu": {"shares": 256, "quota": 25000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 33},
        "blockIO": {**({"weight": 200} if BLKIO_WEIGHT else {}),
                    "throttleReadBpsDevice": [{"major": major, "minor": minor,
                                               "rate": 2097152}],
                    "throttleWriteIOPSDevice": [{"major": major, "minor": minor,
                                                 "rate": 50}]},
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"},
                    {"allow": True, "type": "b", "major": major, "access": "rw"}],
    }


@pytest.mark.parametrize("path", ["/{name}", "{name}/sub"])
def test_pyrunc_cgroups_match_runc(procs, path):
    name = unique("runc")
    path = path.format(name=name)
    tmp = tempfile.mkdtemp(prefix="cgtest-runc-")
    try:
        bundle = os.path.join(tmp, "bundle")
        os.makedirs(os.path.join(bundle, "rootfs", "bin"))
        shutil.copy(BUSYBOX, os.path.join(bundle, "rootfs", "bin", "busybox"))
        subprocess.run([RUNC, "spec"], cwd=bundle, check=True)
        with open(os.path.join(bundle, "config.json")) as f:
            cfg = json.load(f)
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = ["/bin/busybox", "sleep", "1000"]
        cfg["linux"]["cgroupsPath"] = path
        cfg["linux"]["resources"] = resources()
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(cfg, f)
        root = os.path.join(tmp, "root")
        runc_dirs = Manager.for_container(name, path).v1
        subprocess.run([RUNC, "--root", root, "run", "-d", name], cwd=bundle, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=30)
        try:
            state = json.loads(subprocess.run([RUNC, "--root", root, "state", name],
                                              capture_output=True, check=True).stdout)
            theirs = snapshot(runc_dirs)
            with open(f"/proc/{state['pid']}/cgroup") as f:
                their_lines = sorted(line.split(":", 1)[1] for line in f.read().splitlines())
        finally:
            subprocess.run([RUNC, "--root", root, "delete", "-f", name], timeout=30)
        deadline = time.monotonic() + 5
        while any(os.path.exists(d) for d in runc_dirs.values()):
            assert time.monotonic() < deadline, "runc left its cgroups"
            time.sleep(0.05)
        for d in set(runc_dirs.values()):  # runc leaves the parents of a nested path
            if os.path.dirname(d).endswith(name):
                os.rmdir(os.path.dirname(d))
        if m2 := Manager.for_container(name, path).v2:
            if os.path.isdir(os.path.dirname(m2)) and os.path.dirname(m2).endswith(name):
                os.rmdir(os.path.dirname(m2))
        assert leftovers(name) == []
    finally:
        shutil.rmtree(tmp)
    m = Manager.for_container(name, path)
    m.create()
    try:
        p = procs.sleeper()
        m.add(p.pid)
        m.set(create_resources(cfg["linux"]))
        ours = snapshot(m.v1)
        with open(f"/proc/{p.pid}/cgroup") as f:
            our_lines = sorted(line.split(":", 1)[1] for line in f.read().splitlines())
    finally:
        procs.kill_all()
        m.destroy()
    assert leftovers(name) == []
    assert ours == theirs
    assert our_lines == their_lines  # the same cgroup in every hierarchy, 0:: included
    assert paths.layout() != "hybrid" or any(x.startswith(":/") for x in our_lines)
