"""The security fields end to end: `pyrunc --root TMP run -b BUNDLE ID` with a busybox rootfs,
observed from inside the container and, for the notify listener, from outside.

PYOCI_TEST_RUNTIME=runc runs the same cases against runc for comparison (runc 1.1.5 lacks
scheduler and ioPriority)."""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid

import pytest

from security_harness import BUSYBOX, capmask, status_field

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create containers")

APPLETS = ("sh", "cat", "grep", "id", "mkdir", "chmod", "ls", "uname", "ionice", "cut", "true", "echo", "hostname", "sleep")


def runtime_cmd():
    name = os.environ.get("PYOCI_TEST_RUNTIME", "pyrunc")
    if name == "pyrunc":
        # as tests/conftest.py: $PYRUNC, else the pyrunc on PATH, else the one beside python
        here = os.path.join(os.path.dirname(sys.executable), "pyrunc")
        return [os.environ.get("PYRUNC") or shutil.which("pyrunc") or here]
    return [name]


@pytest.fixture
def bundle():
    d = tempfile.mkdtemp(prefix="security-e2e-")
    root = os.path.join(d, "rootfs")
    for sub in ("bin", "proc", "dev", "tmp", "etc"):
        os.makedirs(os.path.join(root, sub))
    shutil.copy(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for a in APPLETS:
        os.symlink("busybox", os.path.join(root, "bin", a))
    state = os.path.join(d, "state")
    yield d, state
    # the runtime deletes its containers; check nothing of ours stays mounted, then remove
    with open("/proc/self/mountinfo") as f:
        left = [l for l in f if d in l]
    shutil.rmtree(d, ignore_errors=not left)
    assert not left, left


def config(args, process=None, linux=None):
    c = {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": dict({"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0},
                         "terminal": False}, **(process or {})),
        "hostname": "security-e2e",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}],
        "linux": dict({"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")]}, **(linux or {})),
    }
    return c


def run(bundle, args, process=None, linux=None, timeout=60):
    d, state = bundle
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config(args, process, linux), f)
    cid = "security-" + uuid.uuid4().hex[:12]
    try:
        return subprocess.run(runtime_cmd() + ["--root", state, "run", "-b", d, cid],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    finally:
        subprocess.run(runtime_cmd() + ["--root", state, "delete", "-f", cid], capture_output=True)


STATUS = ["/bin/sh", "-c", "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; id; umask"]


def test_caps_user_nnp(bundle):
    caps = {"bounding": ["CAP_KILL", "CAP_NET_RAW", "CAP_CHOWN"], "effective": ["CAP_KILL", "CAP_NET_RAW"],
            "permitted": ["CAP_KILL", "CAP_NET_RAW"], "inheritable": ["CAP_KILL", "CAP_NET_RAW"],
            "ambient": ["CAP_KILL"]}
    p = run(bundle, STATUS, {"capabilities": caps, "noNewPrivileges": True,
                             "user": {"uid": 1000, "gid": 1001, "additionalGids": [5, 6], "umask": 0o027}})
    assert p.returncode == 0, p
    assert status_field(p.stdout, "CapEff") == capmask("CAP_KILL")
    assert status_field(p.stdout, "CapAmb") == capmask("CAP_KILL")
    assert status_field(p.stdout, "CapInh") == capmask("CAP_KILL", "CAP_NET_RAW")
    assert status_field(p.stdout, "CapBnd") == capmask("CAP_KILL", "CAP_NET_RAW", "CAP_CHOWN")
    assert status_field(p.stdout, "NoNewPrivs") == "1"
    assert "uid=1000 gid=1001 groups=5,6" in p.stdout
    assert p.stdout.strip().endswith("0027")


def test_unknown_capability_is_a_warning_and_ignored(bundle):
    # runtime-spec 1.1+ config.md: log a warning, SHOULD NOT fail (runc 1.1 does the same).
    p = run(bundle, STATUS, {"capabilities": {"bounding": ["CAP_KILL", "CAP_FOO"]}})
    assert p.returncode == 0, p.stderr
    assert "CAP_FOO" in p.stderr and "warning" in p.stderr
    assert status_field(p.stdout, "CapBnd") == capmask("CAP_KILL")


def test_rlimits_and_oom(bundle):
    p = run(bundle, ["/bin/sh", "-c", "grep -E 'open files|core file' /proc/self/limits; cat /proc/self/oom_score_adj"],
            {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 300, "hard": 400},
                         {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}], "oomScoreAdj": 321})
    assert p.returncode == 0, p
    lines = p.stdout.splitlines()
    assert [l[26:].split()[:2] for l in lines if "core" in l] == [["0", "0"]], lines
    assert [l[26:].split()[:2] for l in lines if "open files" in l] == [["300", "400"]], lines
    assert lines[-1] == "321"


def test_rlimit_above_hard_is_clear_error(bundle):
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    p = run(bundle, ["/bin/true"], {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": hard + 1}]})
    assert p.returncode != 0
    assert (f"process.rlimits[0]: RLIMIT_NOFILE hard limit {hard + 1} is above the runtime's own ({hard}) "
            "and raising it needs CAP_SYS_RESOURCE") in p.stderr, p.stderr


def test_seccomp_errno_args_and_kill(bundle):
    sc = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
          "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS},
                       {"names": ["chmod"], "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 1, "value": 0o777, "op": "SCMP_CMP_EQ"}]},
                       {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 2, "value": 0o777, "op": "SCMP_CMP_EQ"}]},
                       {"names": ["sethostname"], "action": "SCMP_ACT_KILL"}]}
    script = ("grep Seccomp: /proc/self/status; mkdir /tmp/d 2>&1; echo > /tmp/f; chmod 755 /tmp/f && echo ok755; "
              "chmod 777 /tmp/f 2>&1; (hostname x); echo after $?")
    for nnp in (True, False):
        p = run(bundle, ["/bin/sh", "-c", script], {"noNewPrivileges": nnp}, {"seccomp": sc})
        assert p.returncode == 0, p
        out = p.stdout
        assert "Seccomp:\t2" in out and "Read-only file system" in out and "ok755" in out, out
        assert "chmod: /tmp/f: Operation not permitted" in out, out
        assert f"after {128 + 31}" in out, out  # the subshell died of SIGSYS


def test_seccomp_notify_listener(bundle):
    d, _ = bundle
    path = os.path.join(d, "listener.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(30)
    import threading
    from test_security_seccomp import NOTIF_RECV, NOTIF_SEND
    import fcntl
    import struct
    got = {}

    def agent():
        try:
            conn, _ = srv.accept()
            with conn:
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 4)
            got["state"] = json.loads(msg)
            buf = bytearray(80)
            fcntl.ioctl(fds[0], NOTIF_RECV, buf)
            nid = struct.unpack_from("=Q", buf)[0]
            fcntl.ioctl(fds[0], NOTIF_SEND, bytearray(struct.pack("=QqiI", nid, 0, -errno.EXDEV, 0)))
            os.close(fds[0])
        except Exception as e:
            got["error"] = e

    t = threading.Thread(target=agent, daemon=True)
    t.start()
    sc = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path, "listenerMetadata": "security-e2e",
          "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
    p = run(bundle, ["/bin/sh", "-c", "ls /proc/self/fd; mkdir /tmp/x 2>&1"], {"noNewPrivileges": True}, {"seccomp": sc})
    t.join(30)
    srv.close()
    assert "error" not in got, got
    assert "Invalid cross-device link" in p.stdout, p
    st = got["state"]
    assert st["fds"] == ["seccompFd"] and st["metadata"] == "security-e2e"
    assert st["state"]["bundle"] == d and st["pid"] == st["state"]["pid"] > 0
    assert p.stdout.split()[:4] == ["0", "1", "2", "3"], p.stdout  # no leaked fd in the container


def test_apparmor_missing_is_clear_error(bundle):
    if os.path.exists("/sys/module/apparmor"):
        pytest.skip("host has AppArmor")
    p = run(bundle, ["/bin/true"], {"apparmorProfile": "docker-default"})
    assert p.returncode != 0 and "process.apparmorProfile: AppArmor is not enabled on this host" in p.stderr, p


def test_scheduler_ioprio_personality(bundle):
    p = run(bundle, ["/bin/sh", "-c", "grep -E '^policy' /proc/self/sched; ionice; uname -m"],
            {"scheduler": {"policy": "SCHED_BATCH", "nice": 3}, "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 5}},
            {"personality": {"domain": "LINUX32"}})
    assert p.returncode == 0, p
    assert p.stdout.split() == ["policy", ":", "3", "best-effort:", "prio", "5", "i686"], p.stdout


def test_caps_and_user_in_a_user_namespace(bundle):
    d, _ = bundle
    os.chown(d, 100000, 100000)
    for dirpath, dirnames, filenames in os.walk(os.path.join(d, "rootfs")):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), 100000, 100000)
    os.lchown(os.path.join(d, "rootfs"), 100000, 100000)
    caps = {k: ["CAP_KILL", "CAP_NET_RAW"] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    linux = {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts", "user")],
             "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
             "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}
    p = run(bundle, STATUS, {"capabilities": caps, "user": {"uid": 1000, "gid": 1000, "additionalGids": [7]}}, linux)
    assert p.returncode == 0, p
    assert status_field(p.stdout, "CapEff") == capmask("CAP_KILL", "CAP_NET_RAW")
    assert status_field(p.stdout, "CapBnd") == capmask("CAP_KILL", "CAP_NET_RAW")
    assert "uid=1000 gid=1000 groups=7" in p.stdout


@pytest.mark.parametrize("process, linux, field", [
    ({"capabilities": {"ambient": [7]}}, None, "process.capabilities.ambient[0]: must be"),
    ({"rlimits": [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]}, None, "process.rlimits[0].type: unknown rlimit"),
    ({"oomScoreAdj": 5000}, None, "process.oomScoreAdj"),
    ({"user": {"uid": 0, "gid": 0, "umask": -1}}, None, "process.user.umask: must be"),
    ({"scheduler": {"policy": "SCHED_NOPE"}}, None, "process.scheduler.policy: unknown policy"),
    ({"ioPriority": {"class": "IOPRIO_CLASS_NOPE"}}, None, "process.ioPriority.class: unknown class"),
    ({"selinuxLabel": "system_u:system_r:container_t:s0"}, None, "process.selinuxLabel: SELinux is not enabled"),
    ({}, {"personality": {"domain": "LINUX64"}}, "linux.personality.domain: unknown domain"),
    ({}, {"mountLabel": "system_u:object_r:container_file_t:s0"}, "linux.mountLabel: SELinux is not enabled"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_NOPE"}}, "linux.seccomp.defaultAction: unknown action"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}},
     "linux.seccomp.syscalls[0].args[0].index: must be"),
    ({}, {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/nonexistent/security.sock",
                      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}},
     "linux.seccomp.listenerPath: connecting to /nonexistent/security.sock: No such file or directory"),
])
def test_bad_values_fail_create_with_one_line_and_leave_nothing(bundle, process, linux, field):
    if "SELinux" in field and os.path.exists("/sys/fs/selinux/enforce"):  # then they apply
        pytest.skip("host has SELinux")
    d, state = bundle
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config(["/bin/true"], process, linux), f)
    cid = "security-" + uuid.uuid4().hex[:12]
    p = subprocess.run(runtime_cmd() + ["--root", state, "create", "-b", d, cid],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    # The field's JSON path must be named; the wording is the validator's.
    assert p.returncode == 1 and field.split(": ")[0] + ":" in p.stderr, p
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    s = subprocess.run(runtime_cmd() + ["--root", state, "state", cid], capture_output=True, text=True)
    assert s.returncode == 1 and "does not exist" in s.stderr, s


@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "privileged-load"])
def test_allowlist_profile_without_close_range_does_not_hang(bundle, nnp):
    """An ERRNO-default allow-list written before close_range(2) existed: the runtime's own
    fd cleanup after the filter is loaded must not fall into closing 2^31 fds one by one."""
    from test_security_seccomp import native_syscalls

    names = [n for n in native_syscalls() if n not in ("close_range",)]
    sc = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"},
                                                         {"names": ["close_range"], "action": "SCMP_ACT_ERRNO"}]}
    p = run(bundle, ["/bin/sh", "-c", "echo alive; ls /proc/self/fd"], {"noNewPrivileges": nnp}, {"seccomp": sc},
            timeout=30)
    assert p.returncode == 0 and p.stdout.split() == ["alive", "0", "1", "2", "3"], p


def test_exec_gets_the_same_security(bundle):
    """`pyrunc exec` applies the exec'd process's caps/user/nnp and the container's seccomp
    profile, and hands the notify fd of the exec'd process to listenerPath too."""
    d, state = bundle
    path = os.path.join(d, "listener.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(2)
    srv.settimeout(30)
    import threading
    from test_security_seccomp import NOTIF_RECV, NOTIF_SEND
    import fcntl
    import struct
    got = []

    def agent():
        try:
            for _ in range(2):  # the init's filter, then the exec'd process's
                conn, _ = srv.accept()
                with conn:
                    msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 4)
                got.append(json.loads(msg))
                threading.Thread(target=answer, args=(fds[0],), daemon=True).start()
        except Exception as e:
            got.append(e)

    def answer(fd):
        try:
            buf = bytearray(80)
            fcntl.ioctl(fd, NOTIF_RECV, buf)
            nid = struct.unpack_from("=Q", buf)[0]
            fcntl.ioctl(fd, NOTIF_SEND, bytearray(struct.pack("=QqiI", nid, 0, -errno.EXDEV, 0)))
        except OSError:
            pass
        finally:
            os.close(fd)

    threading.Thread(target=agent, daemon=True).start()
    sc = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
          "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"},
                       {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS}]}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config(["/bin/sleep", "30"], {"noNewPrivileges": True}, {"seccomp": sc}), f)
    cid = "security-" + uuid.uuid4().hex[:12]
    rt = runtime_cmd() + ["--root", state]
    try:
        # the init keeps create's stdio: a file, not a pipe that would never reach EOF
        with open(os.path.join(d, "init.out"), "w+") as log:
            p = subprocess.run(rt + ["create", "-b", d, cid], stdout=log, stderr=log, timeout=30,
                               stdin=subprocess.DEVNULL)
            log.seek(0)
            assert p.returncode == 0, log.read()
        s = subprocess.run(rt + ["start", cid], capture_output=True, text=True, timeout=30)
        assert s.returncode == 0, s
        caps = {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
        proc = {"args": ["/bin/sh", "-c", "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; id; "
                         "chmod 700 /tmp 2>&1; mkdir /tmp/e 2>&1; ls /proc/self/fd"],
                "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 1000, "gid": 1000, "additionalGids": [3]},
                "capabilities": caps, "noNewPrivileges": True, "terminal": False}
        with open(os.path.join(d, "process.json"), "w") as f:
            json.dump(proc, f)
        e = subprocess.run(rt + ["exec", "--pid-file", os.path.join(d, "exec.pid"),
                                 "--process", os.path.join(d, "process.json"), cid],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run(rt + ["delete", "-f", cid], capture_output=True)
        srv.close()
    assert e.returncode == 0, e
    out = e.stdout
    assert status_field(out, "CapEff") == capmask("CAP_KILL") == status_field(out, "CapBnd")
    assert status_field(out, "NoNewPrivs") == "1" and status_field(out, "Seccomp") == "2"
    assert "uid=1000 gid=1000 groups=3" in out
    assert "Read-only file system" in out and "Invalid cross-device link" in out, out
    assert out.split()[-4:] == ["0", "1", "2", "3"], out
    assert len(got) == 2 and all(isinstance(g, dict) and g["fds"] == ["seccompFd"] for g in got), got
    init_pid = got[0]["pid"]
    assert got[0]["state"]["pid"] == init_pid == got[1]["state"]["pid"] and got[1]["state"]["id"] == cid
    with open(os.path.join(d, "exec.pid")) as f:
        assert got[1]["pid"] == int(f.read()) != init_pid


def test_notify_listener_from_a_user_namespace(bundle):
    """The listener socket is root's and mode 0755: a user-namespaced init could not connect
    to it itself; the runtime connects before entering the namespace."""
    d, _ = bundle
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), 100000, 100000)
    os.chown(d, 100000, 100000)
    path = os.path.join(d, "listener.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o755)
    srv.listen(1)
    srv.settimeout(30)
    import threading
    from test_security_seccomp import NOTIF_RECV, NOTIF_SEND
    import fcntl
    import struct
    got = {}

    def agent():
        try:
            conn, _ = srv.accept()
            with conn:
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 4)
            got["state"] = json.loads(msg)
            buf = bytearray(80)
            fcntl.ioctl(fds[0], NOTIF_RECV, buf)
            nid = struct.unpack_from("=Q", buf)[0]
            fcntl.ioctl(fds[0], NOTIF_SEND, bytearray(struct.pack("=QqiI", nid, 0, -errno.EXDEV, 0)))
            os.close(fds[0])
        except Exception as e:
            got["error"] = e

    t = threading.Thread(target=agent, daemon=True)
    t.start()
    sc = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
          "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
    linux = {"namespaces": [{"type": x} for x in ("pid", "mount", "ipc", "uts", "user")],
             "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
             "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}], "seccomp": sc}
    p = run(bundle, ["/bin/sh", "-c", "mkdir /tmp/x 2>&1"], {"noNewPrivileges": True}, linux)
    t.join(30)
    srv.close()
    assert "error" not in got and "Invalid cross-device link" in p.stdout, (p, got)
    assert got["state"]["state"]["bundle"] == d
