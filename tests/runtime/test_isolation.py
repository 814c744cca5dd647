"""Namespaces, mounts, masking, users and fds, observed from inside and outside."""

import json
import os
import subprocess

import pytest


def run_out(runtime, bundle, cid, *args, check=True):
    bundle.set_args(*args)
    p = runtime("run", "-b", bundle.path, cid)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_namespaces_are_new(runtime, bundle, cid):
    bundle.set_args("sleep", "30")
    runtime("create", "-b", bundle.path, cid, check=True)
    pid = runtime.state(cid)["pid"]
    for ns in ("pid", "net", "ipc", "uts", "mnt", "cgroup"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    # user namespace not asked for: shared with the host
    assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user")


def test_inside_view(runtime, bundle, cid):
    p = run_out(runtime, bundle, cid, "sh", "-c",
                "echo pid=$$; hostname; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; "
                "ip link show lo | grep -c UP; ls /proc | grep -c '^[0-9]'")
    lines = p.stdout.split()
    assert lines[0] == "pid=1"
    assert lines[1] == "pyrunc"
    assert lines[2:3] == ["lo"], "a new network namespace has only loopback"
    assert lines[3] == "1", "loopback is up"
    assert int(lines[4]) <= 3, "only the container's processes are visible"


def test_join_namespace_by_path(runtime, bundle, cid, workdir, pyrunc_bin, rootfs_template):
    bundle.set_args("sleep", "30")
    runtime("create", "-b", bundle.path, cid, check=True)
    pid = runtime.state(cid)["pid"]
    other = os.path.join(workdir, "b2")
    os.makedirs(other)
    subprocess.run(["cp", "-a", rootfs_template, os.path.join(other, "rootfs")], check=True)
    subprocess.run([pyrunc_bin, "spec", "-b", other], check=True)
    cfg = json.load(open(os.path.join(other, "config.json")))
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["sleep", "30"]
    for ns in cfg["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = f"/proc/{pid}/ns/net"
    json.dump(cfg, open(os.path.join(other, "config.json"), "w"))
    runtime("create", "-b", other, cid + "b", check=True)
    pid2 = runtime.state(cid + "b")["pid"]
    assert os.readlink(f"/proc/{pid2}/ns/net") == os.readlink(f"/proc/{pid}/ns/net")
    assert os.readlink(f"/proc/{pid2}/ns/uts") != os.readlink(f"/proc/{pid}/ns/uts")


def test_join_namespace_of_wrong_type_fails_cleanly(runtime, bundle, cid):
    for ns in bundle.config["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = "/proc/self/ns/uts"
    bundle.set_args("true")
    p = runtime("create", "-b", bundle.path, cid)
    assert p.returncode == 1
    assert "linux.namespaces[1].path" in p.stderr and "not a network namespace" in p.stderr
    assert not os.path.exists(os.path.join(runtime.root, cid))


def test_user_namespace_mappings(runtime, bundle, cid):
    bundle.config["linux"]["namespaces"].append({"type": "user"})
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    # The mapped root must be able to reach the bundle, as with runc.
    d = bundle.rootfs
    while d != "/":
        os.chmod(d, os.stat(d).st_mode | 0o011)
        d = os.path.dirname(d)
    subprocess.run(["chown", "-R", "100000:100000", bundle.rootfs], check=True)
    p = run_out(runtime, bundle, cid, "sh", "-c", "id -u; cat /proc/self/uid_map")
    lines = p.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "100000", "65536"]


def test_mounts_in_order_with_options(runtime, bundle, cid, workdir):
    src = os.path.join(workdir, "shared")
    os.makedirs(src)
    open(os.path.join(src, "file"), "w").write("from the host\n")
    bundle.config["mounts"] += [
        {"destination": "/data", "type": "bind", "source": src, "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "mode=700", "noexec"]},
        {"destination": "/scratch/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=2m"]},
    ]
    p = run_out(runtime, bundle, cid, "sh", "-c",
                "cat /data/file; touch /data/x 2>/dev/null && echo writable || echo readonly; "
                "grep -E ' /data | /scratch | /scratch/sub ' /proc/self/mountinfo; stat -c %a /scratch")
    out = p.stdout.splitlines()
    assert out[0] == "from the host"
    assert out[1] == "readonly"
    mi = {line.split()[4]: line for line in out[2:5]}
    assert "ro" in mi["/data"].split()[5].split(",") and "nosuid" in mi["/data"].split()[5]
    assert "noexec" in mi["/scratch"].split()[5]
    assert "size=2048k" in mi["/scratch/sub"]
    assert out[5] == "700"
    assert not os.path.exists(os.path.join(src, "x"))


def test_masked_and_readonly_paths(runtime, bundle, cid):
    masked_file = next(p for p in bundle.config["linux"]["maskedPaths"]
                       if p.startswith("/proc/") and os.path.isfile(p) and os.path.getsize(p) == 0
                       and open(p, "rb").read(1))
    p = run_out(runtime, bundle, cid, "sh", "-c",
                f"wc -c < {masked_file}; ls /sys/firmware | wc -l; "
                "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo writable || echo readonly; "
                "touch /newfile 2>/dev/null && echo rootrw || echo rootro")
    out = p.stdout.split()
    assert out == ["0", "0", "readonly", "rootro"]


def test_user_and_groups_and_umask(runtime, bundle, cid):
    bundle.config["root"]["readonly"] = False
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 27], "umask": 0o077}
    p = run_out(runtime, bundle, cid, "sh", "-c", "id; umask")
    lines = p.stdout.splitlines()
    assert lines[0].startswith("uid=1000(user) gid=1000(user) groups=")
    assert "5" in lines[0] and "27" in lines[0]
    assert lines[1] == "0077"


def test_cwd_env_and_created_cwd(runtime, bundle, cid):
    bundle.config["process"]["cwd"] = "/srv/app"
    bundle.config["process"]["env"] = ["PATH=/bin", "FOO=bar baz"]
    p = run_out(runtime, bundle, cid, "sh", "-c", "pwd; echo $FOO")
    assert p.stdout.splitlines() == ["/srv/app", "bar baz"]


def test_only_stdio_reaches_the_container(runtime, bundle, cid, workdir):
    # An fd the caller leaks (not CLOEXEC) must not reach the container (CVE-2024-21626).
    leak = os.open(workdir, os.O_RDONLY)
    try:
        bundle.set_args("ls", "/proc/self/fd")
        p = subprocess.run([runtime.binary, "--root", runtime.root, "run", "-b", bundle.path, cid],
                           pass_fds=(leak,), capture_output=True, text=True, timeout=30)
    finally:
        os.close(leak)
    assert p.returncode == 0, p.stderr
    # ls itself opens one fd for the directory it lists.
    assert sorted(int(x) for x in p.stdout.split()) == [0, 1, 2, 3]


def test_preserve_fds(runtime, bundle, cid, workdir):
    path = os.path.join(workdir, "passed")
    open(path, "w").write("via fd 3\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.dup2(fd, 3, inheritable=True) if fd != 3 else None
        bundle.set_args("cat", "/proc/self/fd/3")
        p = subprocess.run([runtime.binary, "--root", runtime.root, "run", "--preserve-fds", "1",
                            "-b", bundle.path, cid], pass_fds=(3,), capture_output=True, text=True, timeout=30)
    finally:
        os.close(fd)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "via fd 3\n"


def test_no_pivot(runtime, bundle, cid):
    bundle.set_args("sh", "-c", "ls /bin/busybox && echo ok")
    p = runtime("run", "--no-pivot", "-b", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[-1] == "ok"


def test_init_is_not_dumpable_during_setup_and_runtime_is_not_reachable(runtime, bundle, cid):
    bundle.set_args("sh", "-c", "readlink /proc/1/exe")
    p = run_out(runtime, bundle, cid, "sh", "-c", "readlink /proc/1/exe")
    # The container's init is the user's binary, never the runtime's interpreter (CVE-2019-5736).
    assert p.stdout.strip() == "/bin/busybox"


@pytest.mark.parametrize("dest", ["/evil/sub", "/../../../evil2", "/link-dir/x"])
def test_mount_destination_cannot_escape_rootfs(runtime, bundle, cid, workdir, dest):
    host = os.path.join(workdir, "host-target")
    os.makedirs(host)
    os.symlink(host, os.path.join(bundle.rootfs, "evil"))  # absolute link to a host dir
    os.symlink("../../../../../../" + host.lstrip("/"), os.path.join(bundle.rootfs, "link-dir"))
    bundle.config["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs"})
    p = run_out(runtime, bundle, cid, "true", check=False)
    assert os.listdir(host) == [], "a mount destination resolved outside the rootfs"
    assert p.returncode == 0, p.stderr


def _keyrings():
    return open("/proc/keys").read()


@pytest.mark.parametrize("flag", [[], ["--no-new-keyring"]])
def test_session_keyring(runtime, bundle, cid, flag):
    bundle.set_args("sleep", "30")
    runtime("create", *flag, "-b", bundle.path, cid, check=True)
    present = f"_ses.{cid}" in _keyrings()
    assert present == (not flag)


def test_time_namespace_offsets(runtime, bundle, cid):
    bundle.config["linux"]["namespaces"].append({"type": "time"})
    bundle.config["linux"]["timeOffsets"] = {"monotonic": {"secs": 86400 * 365, "nanosecs": 0},
                                             "boottime": {"secs": 86400 * 730, "nanosecs": 0}}
    p = run_out(runtime, bundle, cid, "sh", "-c", "cat /proc/uptime; cat /proc/self/timens_offsets")
    lines = p.stdout.splitlines()
    host_uptime = float(open("/proc/uptime").read().split()[0])
    assert float(lines[0].split()[0]) >= host_uptime + 86400 * 730 - 5
    assert lines[1].split() == ["monotonic", str(86400 * 365), "0"]


def test_hostname_domainname_sysctl(runtime, bundle, cid):
    bundle.config["hostname"] = "box"
    bundle.config["domainname"] = "example.org"
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}
    p = run_out(runtime, bundle, cid, "sh", "-c",
                "hostname; cat /proc/sys/kernel/domainname; cat /proc/sys/net/ipv4/ip_forward; "
                "cat /proc/sys/kernel/shm_rmid_forced")
    assert p.stdout.split() == ["box", "example.org", "1", "1"]
    assert open("/proc/sys/kernel/hostname").read().strip() != "box"


def test_sysctl_outside_the_containers_namespaces_is_refused(runtime, bundle, cid):
    bundle.config["linux"]["namespaces"] = [n for n in bundle.config["linux"]["namespaces"]
                                            if n["type"] != "network"]
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    bundle.set_args("true")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 1 and "linux.sysctl" in p.stderr
    assert not os.path.exists(os.path.join(runtime.root, cid))
