"""The known runc CVE classes, tried against pyrunc."""

import os

import pytest


def test_cve_2019_5736_runtime_binary_unreachable_from_container(runtime, bundle, cid):
    # While init waits on the exec fifo it is the runtime's interpreter inside the
    # container's namespaces. A process in the container must not reach its executable.
    bundle.set_args("sleep", "30")
    runtime("create", "-b", bundle.path, cid, check=True)
    p = runtime("exec", cid, "sh", "-c",
                "cat /proc/1/exe >/dev/null 2>&1 && echo READ; "
                "echo x >> /proc/1/exe 2>/dev/null && echo WROTE; "
                "for f in /proc/1/map_files/*; do cat $f >/dev/null 2>&1 && echo MAPS && break; done; "
                "readlink /proc/1/cwd >/dev/null 2>&1 && echo CWD; echo done")
    assert p.returncode == 0, p.stderr
    assert "READ" not in p.stdout and "WROTE" not in p.stdout and "MAPS" not in p.stdout
    assert p.stdout.split() == ["done"], "the waiting init must be non-dumpable"
    runtime("start", cid, check=True)
    p = runtime("exec", cid, "readlink", "/proc/1/exe")
    assert p.stdout.strip() == "/bin/busybox"


@pytest.mark.parametrize("cwd", ["/proc/self/fd/3", "/proc/self/fd/4", "/proc/self/fd/7"])
def test_cve_2024_21626_no_host_fd_as_cwd(runtime, bundle, cid, cwd):
    bundle.config["process"]["cwd"] = cwd
    bundle.set_args("sh", "-c", "pwd; ls")
    p = runtime("run", "-b", bundle.path, cid)
    # Either refused, or a path inside the container: never a host directory.
    assert p.returncode != 0 or not p.stdout.startswith(os.path.dirname(bundle.path)), p.stdout
    assert "state" not in p.stdout.split() and "bundle" not in p.stdout.split()


def test_cve_2024_21626_exec_cwd(runtime, bundle, cid):
    bundle.set_args("sleep", "30")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    for fd in (3, 4, 5, 6, 7, 8):
        p = runtime("exec", "--cwd", f"/proc/self/fd/{fd}", cid, "ls")
        assert "bundle" not in p.stdout.split() and "state" not in p.stdout.split(), (fd, p.stdout)


def test_cve_2021_30465_bind_destination_symlink_to_host(runtime, bundle, cid, workdir):
    # A rootfs symlink pointing at the host must not redirect a bind mount outside it.
    host = os.path.join(workdir, "victim")
    os.makedirs(host)
    src = os.path.join(workdir, "src")
    os.makedirs(src)
    open(os.path.join(src, "payload"), "w").write("x")
    os.symlink(host, os.path.join(bundle.rootfs, "mnt-link"))
    bundle.config["mounts"].append({"destination": "/mnt-link", "type": "bind", "source": src,
                                    "options": ["rbind"]})
    bundle.config["mounts"].append({"destination": "/proc/../mnt-link2", "type": "tmpfs", "source": "tmpfs"})
    bundle.set_args("true")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    assert os.listdir(host) == []
    assert not any(host in line for line in open("/proc/self/mountinfo"))


def test_proc_and_sys_writes_denied(runtime, bundle, cid):
    bundle.set_args("sh", "-c",
                    "echo 1 > /proc/sysrq-trigger 2>/dev/null && echo SYSRQ; "
                    "echo 1 > /sys/kernel/uevent_helper 2>/dev/null && echo SYS; "
                    "mount -t tmpfs t /mnt 2>/dev/null && echo MOUNT; echo done")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.stdout.split() == ["done"], p.stdout
