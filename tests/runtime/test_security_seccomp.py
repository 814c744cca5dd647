"""linux.seccomp loaded into a real process (libseccomp + seccomp(2)), observed through what
busybox's syscalls get back, the signals that end it and a notify listener in the test."""

import ctypes
import errno
import json
import os
import signal
import socket
import struct
import tempfile
import threading
import fcntl

import pytest

from ocispec.errors import OCIError, SpecError
from pyrunc import seccomp

from security_harness import run, sh, status_field

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def profile(*rules, default="SCMP_ACT_ALLOW", **kw):
    return dict({"defaultAction": default, "syscalls": list(rules)}, **kw)


def deny(names, action="SCMP_ACT_ERRNO", **kw):
    return dict({"names": names, "action": action}, **kw)


MKDIR = ["mkdir", "mkdirat"]


def mkdir_in(tmp_path, nnp):
    return lambda sc: run(sh(f"mkdir {tmp_path}/d"), {"noNewPrivileges": nnp}, {"seccomp": sc})


@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "privileged-load"])
def test_errno_default_and_custom(tmp_path, nnp):
    go = mkdir_in(tmp_path, nnp)
    r = go(profile(deny(MKDIR)))
    assert r.error is None and r.status == 1 and "Operation not permitted" in r.err, r
    r = go(profile(deny(MKDIR, errnoRet=errno.EROFS)))
    assert r.status == 1 and "Read-only file system" in r.err, r
    assert not (tmp_path / "d").exists()
    r = go(profile(deny(["rmdir"])))
    assert r.status == 0 and (tmp_path / "d").is_dir(), r


def test_seccomp_mode_in_status_and_unknown_names_ignored():
    sc = profile(deny(["no_such_syscall", "mkdir", "socketcall"]))
    r = run(["/bin/busybox", "grep", "Seccomp", "/proc/self/status"], {"noNewPrivileges": True}, {"seccomp": sc})
    assert r.error is None, r
    assert status_field(r.out, "Seccomp") == "2"
    assert status_field(r.out, "Seccomp_filters") == "1"


def test_arg_conditions_on_chmod(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    # deny only mode 0777, on both syscalls busybox may use (mode is arg 1 / arg 2)
    sc = profile(deny(["chmod"], args=[{"index": 1, "value": 0o777, "op": "SCMP_CMP_EQ"}]),
                 deny(["fchmodat"], args=[{"index": 2, "value": 0o777, "op": "SCMP_CMP_EQ"}]))
    r = run(sh(f"chmod 755 {f} && echo ok755; chmod 777 {f} || echo denied777"), {}, {"seccomp": sc})
    assert r.out.split() == ["ok755", "denied777"] and "Operation not permitted" in r.err, r
    assert os.stat(f).st_mode & 0o777 == 0o755


def test_masked_eq_and_same_index_conditions_are_ored(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    # runc's rule: two conditions on one index become two rules (700 OR 750 denied)
    same = [{"index": 1, "value": 0o700, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 0o750, "op": "SCMP_CMP_EQ"}]
    masked = [{"index": 1, "value": 0o002, "valueTwo": 0o002, "op": "SCMP_CMP_MASKED_EQ"}]
    sc = profile(deny(["chmod"], args=same), deny(["chmod"], args=masked, errnoRet=errno.EACCES),
                 deny(["fchmodat"], args=[dict(a, index=2) for a in same]),
                 deny(["fchmodat"], args=[dict(a, index=2) for a in masked], errnoRet=errno.EACCES))
    script = "; ".join(f"chmod {m} {f} 2>&1 && echo {m}:ok" for m in ("700", "750", "755", "757", "640"))
    r = run(sh(script), {}, {"seccomp": sc})
    lines = r.out.splitlines()
    assert "700:ok" not in lines and "750:ok" not in lines and "757:ok" not in lines, r
    assert "755:ok" in lines and "640:ok" in lines, r
    assert sum("Operation not permitted" in l for l in lines) == 2
    assert sum("Permission denied" in l for l in lines) == 1


def test_several_args_on_one_rule_are_anded():
    # kill(pid > 0, SIGUSR1) denied; kill(0, SIGUSR1) and kill(pid, 0) allowed
    args = [{"index": 0, "value": 0, "op": "SCMP_CMP_GT"},
            {"index": 1, "value": int(signal.SIGUSR1), "op": "SCMP_CMP_EQ"}]
    sc = profile(deny(["kill"], args=args, errnoRet=errno.EDOM))
    r = run(sh('trap "" USR1; kill -USR1 $$ 2>&1 || echo A; kill -USR1 0 && echo B; kill -0 $$ && echo C'),
            {}, {"seccomp": sc})
    assert r.out.split()[-3:] == ["A", "B", "C"] and "Numerical argument out of domain" in r.out, r


@pytest.mark.parametrize("action, expect", [
    ("SCMP_ACT_KILL", -signal.SIGSYS), ("SCMP_ACT_KILL_THREAD", -signal.SIGSYS),
    ("SCMP_ACT_KILL_PROCESS", -signal.SIGSYS), ("SCMP_ACT_TRAP", -signal.SIGSYS),
    ("SCMP_ACT_ERRNO", 1), ("SCMP_ACT_TRACE", 1), ("SCMP_ACT_LOG", 0), ("SCMP_ACT_ALLOW", 0),
])
def test_actions(tmp_path, action, expect):
    sc = profile(deny(MKDIR, action), default="SCMP_ACT_ALLOW" if action != "SCMP_ACT_ALLOW" else "SCMP_ACT_LOG")
    r = run(["/bin/busybox", "mkdir", str(tmp_path / "d")], {"noNewPrivileges": True}, {"seccomp": sc})
    assert r.error is None and r.status == expect, r
    if action == "SCMP_ACT_TRACE":  # no tracer attached: the syscall fails with ENOSYS
        assert "Function not implemented" in r.err
    assert (tmp_path / "d").exists() == (expect == 0)


def native_syscalls():
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    libc = ctypes.CDLL(None)
    libc.free.argtypes = (ctypes.c_void_p,)
    names = []
    for nr in range(0, 500):
        p = lib.seccomp_syscall_resolve_num_arch(0, nr)
        if p:
            names.append(ctypes.string_at(p).decode())
            libc.free(p)
    return names


def test_allowlist_with_default_errno_ret(tmp_path):
    allowed = [n for n in native_syscalls() if n not in ("mkdir", "mkdirat")]
    sc = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS,
          "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
          "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
          "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]}
    r = run(sh(f"echo hi; mkdir {tmp_path}/d"), {"noNewPrivileges": True}, {"seccomp": sc})
    assert r.out == "hi\n" and "Function not implemented" in r.err and r.status == 1, r


def test_wait_killable_recv_without_listener_loads():
    sc = profile(deny(MKDIR), flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])
    r = run(["/bin/busybox", "mkdir", "/proc/nope"], {"noNewPrivileges": True}, {"seccomp": sc})
    assert r.error is None and "Operation not permitted" in r.err, r


# struct seccomp_notif is 80 bytes, seccomp_notif_resp 24: _IOWR('!', 0/1, ...)
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101


class Listener(threading.Thread):
    """A seccomp agent: accepts one connection on listenerPath, takes the fd and the state,
    answers `answers` notifications with error -EXDEV, or with success for `allow`."""

    def __init__(self, path, answers=1, allow=False):
        super().__init__(daemon=True)
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.srv.settimeout(15)
        self.answers, self.allow = answers, allow
        self.state, self.nr, self.pid, self.error = None, [], [], None
        self.start()

    def run(self):
        try:
            conn, _ = self.srv.accept()
            with conn:
                msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
                while True:
                    more = conn.recv(65536)
                    if not more:
                        break
                    msg += more
            self.state = json.loads(msg)
            self.nfds = len(fds)
            fd = fds[0]
            for _ in range(self.answers):
                buf = bytearray(80)
                fcntl.ioctl(fd, NOTIF_RECV, buf)
                nid, pid, _flags, nr = struct.unpack_from("=QIIi", buf)
                self.nr.append(nr)
                self.pid.append(pid)
                # flags=1 (SECCOMP_USER_NOTIF_FLAG_CONTINUE) lets the syscall run
                resp = struct.pack("=QqiI", nid, 0, 0 if self.allow else -errno.EXDEV, 1 if self.allow else 0)
                fcntl.ioctl(fd, NOTIF_SEND, bytearray(resp))
            os.close(fd)
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.srv.close()


@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "privileged-load"])
def test_notify_listener_gets_fd_and_state_and_answers(tmp_path, nnp):
    with tempfile.TemporaryDirectory(prefix="security-notify-") as d:
        path = os.path.join(d, "l.sock")
        agent = Listener(path)
        sc = profile(deny(["mkdir", "mkdirat"], "SCMP_ACT_NOTIFY"), listenerPath=path,
                     listenerMetadata="security-meta", flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])
        state = {"ociVersion": "1.2.0", "id": "security-notify", "status": "created", "pid": 0,
                 "bundle": str(tmp_path), "annotations": {"a": "b"}}
        r = run(sh(f"ls /proc/self/fd; mkdir {tmp_path}/d"), {"noNewPrivileges": nnp}, {"seccomp": sc}, state,
                before_exec=fds_before_exec)
        agent.join(20)
    assert agent.error is None, agent.error
    assert r.error is None, r
    assert "Invalid cross-device link" in r.err and r.status == 1, r
    assert not (tmp_path / "d").exists()
    st = agent.state
    assert st["ociVersion"] == "1.2.0" and st["fds"] == ["seccompFd"] and agent.nfds == 1
    assert st["metadata"] == "security-meta"
    assert st["state"]["id"] == "security-notify" and st["state"]["annotations"] == {"a": "b"}
    assert st["pid"] == st["state"]["pid"] > 0
    assert agent.nr == [83] or agent.nr == [258]  # mkdir or mkdirat on x86_64
    # no notify fd (nor anything else) left in the container's process: ls's own dir fd is 3
    assert r.out.split()[-4:] == ["0", "1", "2", "3"], r.out
    # and it was closed before execve, not just left to O_CLOEXEC
    links = r.out.split()[:-4]
    assert links and not any("seccomp" in l for l in links), links


def fds_before_exec():
    # runs in the child after load(), just before execve: print what is open besides stdio
    for fd in sorted(map(int, os.listdir("/proc/self/fd"))):
        try:
            os.write(1, f"{os.readlink(f'/proc/self/fd/{fd}')}\n".encode())
        except OSError:
            pass


def test_notify_continue_lets_syscall_run(tmp_path):
    with tempfile.TemporaryDirectory(prefix="security-notify-") as d:
        path = os.path.join(d, "l.sock")
        agent = Listener(path, allow=True)
        sc = profile(deny(["mkdir", "mkdirat"], "SCMP_ACT_NOTIFY"), listenerPath=path)
        r = run(["/bin/busybox", "mkdir", str(tmp_path / "d")], {"noNewPrivileges": True}, {"seccomp": sc})
        agent.join(20)
    assert agent.error is None and r.status == 0 and (tmp_path / "d").is_dir(), (r, agent.error)


def test_notify_listener_missing_is_clear_error():
    sc = profile(deny(["mkdir"], "SCMP_ACT_NOTIFY"), listenerPath="/nonexistent/security-l.sock")
    r = run(["/bin/busybox", "true"], {"noNewPrivileges": True}, {"seccomp": sc})
    assert r.status == 111 and r.error.startswith(
        "OCIError: linux.seccomp.listenerPath: connecting to /nonexistent/security-l.sock: No such file"), r


def test_notify_send_fd_relay(tmp_path):
    """load(send_fd=...) hands the fd to a parent, which calls send_listener()."""
    with tempfile.TemporaryDirectory(prefix="security-notify-") as d:
        path = os.path.join(d, "l.sock")
        agent = Listener(path)
        a, b = socket.socketpair()
        sc = profile(deny(["mkdir", "mkdirat"], "SCMP_ACT_NOTIFY"), listenerPath=path)
        pid = os.fork()
        if pid == 0:
            try:
                a.close()
                seccomp.load(sc, {}, send_fd=lambda fd: socket.send_fds(b, [b"fd"], [fd]))
                b.close()
                try:
                    os.mkdir(str(tmp_path / "d"))
                    os._exit(0)
                except OSError as e:
                    os._exit(e.errno)
            except BaseException:
                os._exit(99)
        b.close()
        _, fds, _, _ = socket.recv_fds(a, 16, 1)
        seccomp.send_listener(path, fds[0], {"ociVersion": "1.2.0", "id": "security-relay", "pid": pid})
        os.close(fds[0])
        a.close()
        agent.join(20)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == errno.EXDEV, (status, agent.error)
    assert agent.state["pid"] == pid and agent.state["state"]["id"] == "security-relay"


@pytest.mark.parametrize("sc, match", [
    (profile(default="SCMP_ACT_NOPE"), r"linux\.seccomp\.defaultAction: unknown action"),
    (profile(default="SCMP_ACT_ALLOW", defaultErrnoRet=3), r"linux\.seccomp\.defaultErrnoRet: is only valid"),
    (profile(default="SCMP_ACT_NOTIFY", listenerPath="/x"), r"linux\.seccomp\.defaultAction: SCMP_ACT_NOTIFY cannot"),
    (profile(deny(["mkdir"], "SCMP_ACT_BAD")), r"linux\.seccomp\.syscalls\[0\]\.action: unknown action"),
    (profile(deny(["mkdir"], "SCMP_ACT_KILL", errnoRet=1)), r"linux\.seccomp\.syscalls\[0\]\.errnoRet: is only valid"),
    (profile(deny(["mkdir"], errnoRet=70000)), r"linux\.seccomp\.syscalls\[0\]\.errnoRet: must be"),
    (profile(deny([])), r"linux\.seccomp\.syscalls\[0\]\.names: must be a non-empty"),
    (profile(deny(["mkdir"], args=[{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}])),
     r"linux\.seccomp\.syscalls\[0\]\.args\[0\]\.index: must be"),
    (profile(deny(["mkdir"], args=[{"index": 1, "value": 1, "op": "SCMP_CMP_XX"}])),
     r"linux\.seccomp\.syscalls\[0\]\.args\[0\]\.op: unknown operator"),
    (profile(deny(["mkdir"], args=[{"index": 1, "value": -1, "op": "SCMP_CMP_EQ"}])),
     r"linux\.seccomp\.syscalls\[0\]\.args\[0\]\.value: must be"),
    (profile(deny(["mkdir"], "SCMP_ACT_NOTIFY")), r"linux\.seccomp\.listenerPath: must be set"),
    (profile(deny(["sendmsg"], "SCMP_ACT_NOTIFY"), listenerPath="/x"), r"linux\.seccomp\.syscalls\[0\]\.names: SCMP_ACT_NOTIFY cannot"),
    (profile(flags=["SECCOMP_FILTER_FLAG_NOPE"]), r"linux\.seccomp\.flags\[0\]: unknown flag"),
    (profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]), r"linux\.seccomp\.architectures\[1\]: unknown architecture"),
])
def test_bad_values_name_the_field(sc, match):
    with pytest.raises(SpecError, match=match):
        seccomp.check(sc)
    r = run(["/bin/busybox", "true"], {"noNewPrivileges": True}, {"seccomp": sc})
    assert r.status == 111 and "linux.seccomp." in r.error, r


def test_privileged_load_without_cap_sys_admin_is_clear_error():
    # finalize() has dropped CAP_SYS_ADMIN and there is no no_new_privs: the kernel says EACCES
    from pyrunc import privileges
    pid = os.fork()
    if pid == 0:
        try:
            privileges.finalize({"capabilities": {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")}})
            seccomp.load(profile(deny(MKDIR)), {})
            os._exit(0)
        except OCIError as e:
            os._exit(7 if "needs CAP_SYS_ADMIN or noNewPrivileges" in str(e) else 8)
        except BaseException:
            os._exit(9)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7


def test_supported_reports_this_host():
    s = seccomp.supported()
    assert s["enabled"] is True
    assert "SCMP_ACT_NOTIFY" in s["actions"] and "SCMP_ACT_KILL_PROCESS" in s["actions"]
    assert "SCMP_ARCH_X86_64" in s["archs"] and "SCMP_CMP_MASKED_EQ" in s["operators"]
    assert set(s["supportedFlags"]) <= set(s["knownFlags"])
    assert "SECCOMP_FILTER_FLAG_TSYNC" in s["supportedFlags"]


def test_compile_cache_and_load_precompiled(tmp_path):
    sc = profile(deny(MKDIR, errnoRet=errno.EROFS), architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
    cache = tmp_path / "cache"
    prog = seccomp.compile(sc, str(cache))
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].read_bytes() == prog and oct(files[0].stat().st_mode & 0o777) == "0o600"
    # a hit returns what is stored (proved by planting a different valid program)
    other = seccomp.compile(profile(deny(MKDIR, errnoRet=errno.EDOM)))
    files[0].write_bytes(other)
    assert seccomp.compile(sc, str(cache)) == other != prog
    pid = os.fork()
    if pid == 0:
        try:
            seccomp.load(sc, {}, prog=prog)
            os.mkdir(str(tmp_path / "d"))
            os._exit(0)
        except OSError as e:
            os._exit(e.errno)
        except BaseException:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == errno.EROFS


def _syscall_results(sc, nrs):
    """Load sc (with no_new_privs) in a forked child, then call each raw syscall number with
    zero args and return the errnos (0 on success)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(38, 1, 0, 0, 0)
            seccomp.load(sc, {})
            res = []
            for nr in nrs:
                ret = libc.syscall(nr, 0, 0, 0)
                res.append(ctypes.get_errno() if ret == -1 else 0)
            os.write(w, json.dumps(res).encode())
            os._exit(0)
        except BaseException as e:
            os.write(w, json.dumps(str(e)).encode())
            os._exit(1)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(out)


def test_enosys_above_the_profile_like_runc():
    # allow-list every native syscall numbered up to 300, except getpriority (140)
    allowed = [n for n in native_syscalls() if seccomp_nr(n) <= 300 and n != "getpriority"]
    sc = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
          "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]}
    top = max(seccomp_nr(n) for n in allowed)
    # getpriority: listed below the top, not allowed -> the default errno (EPERM)
    # getrandom (318), and 1000 (no such syscall): above the top -> ENOSYS, as with runc
    # getppid (110): allowed -> succeeds
    assert _syscall_results(sc, [140, 318, 1000, 110]) == [errno.EPERM, errno.ENOSYS, errno.ENOSYS, 0]
    assert top == 300
    # with an allow-like default no stub is added: the unknown syscall gets the kernel's ENOSYS
    # and an unlisted one is simply allowed
    sc2 = profile(deny(["getppid"]))
    assert _syscall_results(sc2, [110, 1000]) == [errno.EPERM, errno.ENOSYS]


def seccomp_nr(name):
    from pyrunc import libseccomp
    return libseccomp.resolve_syscall(name)
