"""podman (through conmon) driving the installed pyrunc as its OCI runtime."""

import os
import shutil
import subprocess
import tempfile
import time

import pytest
from conftest import safe_rmtree

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")


@pytest.fixture
def podman(workdir, pyrunc_bin, rootfs_template):
    rootfs = os.path.join(workdir, "rootfs")
    subprocess.run(["cp", "-a", rootfs_template, rootfs], check=True)
    # podman refuses a runroot path over 50 characters.
    runroot = tempfile.mkdtemp(prefix="pm-")
    base = ["podman", "--root", os.path.join(workdir, "storage"), "--runroot", runroot,
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--runtime", pyrunc_bin]

    def pm(*args, check=True, timeout=60):
        p = subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {p.returncode}: {p.stderr}")
        return p

    pm.rootfs = rootfs
    # This host's hard limits are below podman's defaults and raising them needs
    # CAP_SYS_RESOURCE, which this machine lacks (runc fails the same way without these).
    pm.limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none"]
    yield pm
    pm("rm", "-a", "-f", check=False)
    subprocess.run(base + ["system", "reset", "-f"], capture_output=True, timeout=60)
    safe_rmtree(runroot)


def test_podman_run_foreground(podman):
    p = podman("run", "--rm", *podman.limits, "--rootfs", podman.rootfs,
               "/bin/sh", "-c", "echo hello via podman; exit 4", check=False)
    assert p.returncode == 4, p.stderr
    assert p.stdout == "hello via podman\n"


def test_podman_detached_exec_pause_stop(podman):
    name = "pyrunc-pm-" + str(os.getpid())
    podman("run", "-d", "--name", name, *podman.limits, "--rootfs", podman.rootfs,
           "/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done")
    deadline = time.monotonic() + 20
    while "Up" not in podman("ps", "--format", "{{.Status}}").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    p = podman("exec", name, "sh", "-c", "echo in $(hostname); cat /proc/1/cmdline | tr '\\0' ' '")
    assert p.stdout.startswith("in ") and "while true" in p.stdout
    podman("pause", name)
    assert "Paused" in podman("ps", "-a", "--format", "{{.Status}}").stdout
    podman("unpause", name)
    podman("stop", "-t", "10", name)
    assert "Exited (0)" in podman("ps", "-a", "--format", "{{.Status}}").stdout
    podman("rm", name)
