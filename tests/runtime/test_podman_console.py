"""A real client of --console-socket: podman -> conmon -> `pyrunc create --console-socket`.

conmon listens on the socket, receives the pty master from pyrunc's init and copies it to
podman's stdio. Podman keeps everything (storage, run dir, image) in a temp dir of its own.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

PYRUNC = shutil.which("pyrunc", path=os.path.dirname(sys.executable)) or shutil.which("pyrunc")

pytestmark = pytest.mark.skipif(PYRUNC is None or shutil.which("podman") is None
                                or shutil.which("conmon") is None,
                                reason="needs the pyrunc command, podman and conmon")

# This host has no CAP_SYS_RESOURCE: podman's default rlimits would be refused (by runc
# too). --network host: no network namespace, so no net sysctls to write.
RUN_OPTS = ["--rm", "--network", "host", "--ulimit", "nofile=1024:1024",
            "--ulimit", "nproc=1024:1024"]


@pytest.fixture
def podman():
    d = tempfile.mkdtemp(prefix="pyrunc-hooks-podman-")
    base = ["podman", "--root", f"{d}/storage", "--runroot", f"{d}/run",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--storage-driver", "vfs"]
    rootfs = os.path.join(d, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy2("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for a in ("sh", "tty", "stty", "echo", "cat", "readlink"):
        os.symlink("busybox", os.path.join(rootfs, "bin", a))
    tar = os.path.join(d, "rootfs.tar")
    subprocess.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
    subprocess.run(base + ["import", tar, "pyrh-busybox:latest"], check=True,
                   capture_output=True)
    yield base
    subprocess.run(base + ["rm", "--all", "--force"], capture_output=True)
    subprocess.run(base + ["rmi", "--all", "--force"], capture_output=True)
    with open("/proc/self/mountinfo") as f:
        assert d not in f.read()
    subprocess.run(["rm", "-rf", "--one-file-system", d], check=True)


def test_podman_run_tty_through_conmon(podman):
    script = ("tty; [ /dev/console -ef /proc/self/fd/0 ] && echo console-ok; "
              "read x; echo got:$x")
    p = subprocess.run(podman + ["run", "-i", "-t", "--runtime", PYRUNC, *RUN_OPTS,
                                 "pyrh-busybox", "sh", "-c", script],
                       input="through conmon\n", capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.replace("\r\n", "\n").splitlines()
    assert "/dev/pts/0" in lines and "console-ok" in lines
    assert "got:through conmon" in lines
