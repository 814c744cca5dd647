"""containerd (through its runc v2 shim) driving the installed pyrunc.

The test starts its own containerd on a private socket with private root and state dirs,
and stops it (by pid) at the end.
"""

import os
import shutil
import subprocess
import tempfile
import time

import pytest
from conftest import safe_rmtree
from containerd_daemon import Containerd

pytestmark = pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("ctr") is None,
                                reason="containerd is not installed")


@pytest.fixture
def ctr(workdir, pyrunc_bin, rootfs_template):
    d = tempfile.mkdtemp(prefix="ctd-")  # unix socket paths must stay short
    daemon = Containerd(d, f'''version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/t.sock"
''')
    rootfs = os.path.join(workdir, "rootfs")
    subprocess.run(["cp", "-a", rootfs_template, rootfs], check=True)

    def run(*args, check=True, timeout=60):
        return daemon.ctr(*args, check=check, timeout=timeout)

    run.rootfs = rootfs
    run.runtime = ["--runc-binary", pyrunc_bin]
    yield run
    for name in run("containers", "ls", "-q", check=False).stdout.split():
        run("task", "kill", "-s", "KILL", name, check=False)
        time.sleep(0.2)
        run("task", "delete", name, check=False)
        run("containers", "rm", name, check=False)
    daemon.stop()
    safe_rmtree(d)


def test_containerd_run_foreground(ctr):
    p = ctr("run", "--rm", *ctr.runtime, "--rootfs", ctr.rootfs, "ctd-fg", "sh", "-c", "echo via containerd")
    assert p.stdout == "via containerd\n"


def test_containerd_task_lifecycle(ctr):
    name = f"ctd-{os.getpid()}"
    ctr("run", "-d", *ctr.runtime, "--rootfs", ctr.rootfs, name,
        "sh", "-c", "trap 'exit 3' TERM; while true; do sleep 0.1; done")
    deadline = time.monotonic() + 20
    while "RUNNING" not in ctr("task", "ls").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    p = ctr("task", "exec", "--exec-id", "e1", name, "sh", "-c", "echo exec ok; exit 5", check=False)
    assert p.returncode == 5 and p.stdout == "exec ok\n", p.stderr
    pids = ctr("task", "ps", name).stdout.split()
    assert len([x for x in pids if x.isdigit()]) >= 1
    ctr("task", "pause", name)
    assert "PAUSED" in ctr("task", "ls").stdout
    ctr("task", "resume", name)
    ctr("task", "kill", name)
    deadline = time.monotonic() + 20
    while "STOPPED" not in ctr("task", "ls").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "STOPPED" in ctr("task", "ls").stdout
    ctr("task", "delete", name)
    ctr("containers", "rm", name)
    assert name not in ctr("task", "ls").stdout
