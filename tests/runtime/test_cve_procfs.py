"""Attacks on the runtime's own procfs writes and masks, through the installed pyrunc.

- CVE-2019-16884 / CVE-2025-52881: a mount destination that resolves into /proc (a rootfs
  symlink to /proc/self/oom_score_adj) or a fake /proc must not catch the runtime's writes;
- CVE-2025-31133: a /dev/null swapped for a file by a co-tenant of a shared /dev must never
  become what a masked path shows;
- CVE-2025-52565: a /dev/console swapped for a symlink must not carry the terminal's bind
  mount elsewhere;
- CVE-2023-28642: a rootfs whose /proc or /sys is a symlink is refused;
- --no-pivot leaves no fully visible host procfs from which a nested user namespace in the
  container could mount an unmasked one.

The co-tenants are forked processes of the test, racing on files in a scratch directory
that the container gets as its /dev; nothing here writes into a host file.
"""

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TRIES = 40


def _drop_dev_mounts(bundle, keep=()):
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if not m["destination"].startswith("/dev") or m["destination"] in keep]


def _shared_dev(bundle, workdir, keep=()):
    """The container's /dev: a bind of a scratch directory a co-tenant also writes to."""
    dev = os.path.join(workdir, "shared-dev")
    os.makedirs(dev)
    os.mknod(os.path.join(dev, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(os.path.join(dev, "null"), 0o666)
    _drop_dev_mounts(bundle, keep)
    bundle.config["mounts"].insert(1, {"destination": "/dev", "type": "bind", "source": dev,
                                       "options": ["rbind", "nosuid"]})
    return dev


class Racer:
    """A co-tenant: a forked process that swaps two names in a loop until stopped (by its
    pid), with renameat2(RENAME_EXCHANGE), one syscall a swap, so either name holds each
    of the two files about half of the time."""

    def __init__(self, a: str, b: str):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fa, fb = os.fsencode(a), os.fsencode(b)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - child
            try:
                while True:
                    libc.renameat2(-100, fa, -100, fb, 2)  # AT_FDCWD, RENAME_EXCHANGE
            finally:
                os._exit(0)

    def stop(self):
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


# --- 2: procfs writes land in procfs -------------------------------------------------------

@pytest.mark.parametrize("target, field", [
    ("/proc/self/oom_score_adj", ("process", "oomScoreAdj", 123)),
    ("/proc/sys/kernel/domainname", ("linux", "sysctl", {"kernel.domainname": "caught"})),
])
def test_bind_through_symlink_into_proc_is_refused(runtime, bundle, cid, workdir, target, field):
    # data -> /proc/self/oom_score_adj resolves, once /proc is mounted, to init's own
    # /proc/1/oom_score_adj: a bind there would take the runtime's write instead.
    scratch = os.path.join(workdir, "scratch")
    with open(scratch, "w") as f:
        f.write("untouched\n")
    os.symlink(target, os.path.join(bundle.rootfs, "data"))
    bundle.config["mounts"].append({"destination": "/data", "type": "bind", "source": scratch,
                                    "options": ["bind"]})
    section, key, value = field
    bundle.config[section][key] = value
    bundle.set_args("cat", "/proc/self/oom_score_adj")
    p = runtime("run", "-b", bundle.path, cid)
    assert open(scratch).read() == "untouched\n", "the runtime wrote into the bind-mounted file"
    assert p.returncode == 1, p.stdout
    assert "mounts[7] (/data): " in p.stderr, p.stderr
    assert "cannot be mounted because it is inside /proc" in p.stderr
    assert "Traceback" not in p.stderr
    assert runtime("list", "-q").stdout.split() == []


def test_lxcfs_style_bind_inside_proc_still_allowed(runtime, bundle, cid, workdir):
    # runc's list of /proc files that lxcfs emulates may still be bound over.
    fake = os.path.join(workdir, "uptime")
    with open(fake, "w") as f:
        f.write("4242.00 1.00\n")
    bundle.config["mounts"].append({"destination": "/proc/uptime", "type": "bind", "source": fake,
                                    "options": ["bind", "ro"]})
    bundle.config["process"]["oomScoreAdj"] = 77
    bundle.set_args("sh", "-c", "cat /proc/uptime /proc/self/oom_score_adj")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["4242.00", "1.00", "77"]


def test_tmpfs_over_proc_is_refused(runtime, bundle, cid):
    bundle.config["mounts"].append({"destination": "/proc", "type": "tmpfs", "source": "tmpfs"})
    bundle.set_args("true")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 1
    assert "/proc cannot be mounted because it is not of type proc" in p.stderr, p.stderr


def test_exec_oom_score_adj_not_written_into_a_fake_proc(runtime, bundle, cid):
    # A privileged container process puts a tmpfs with a fake self/oom_score_adj on /proc;
    # `exec` applies process.oomScoreAdj and must not write it there.
    caps = bundle.config["process"]["capabilities"]
    for s in ("bounding", "effective", "permitted"):
        caps[s] = sorted(set(caps.get(s, [])) | {"CAP_SYS_ADMIN"})
    bundle.config["process"]["oomScoreAdj"] = 321
    bundle.set_args("sh", "-c", "mount -t tmpfs fake /proc && mkdir /proc/self && "
                    "echo fake > /proc/self/oom_score_adj && touch /proc/ready && exec sleep 30")
    runtime("run", "-d", "-b", bundle.path, cid, check=True)
    pid = runtime.state(cid)["pid"]
    fake = f"/proc/{pid}/root/proc/self/oom_score_adj"
    for _ in range(200):
        if os.path.exists(f"/proc/{pid}/root/proc/ready"):
            break
        time.sleep(0.025)
    assert open(fake).read() == "fake\n"
    # exec pins the host's verified /proc before it joins the container: the value lands
    # in the real procfs of the exec'd process, and the fake file is never touched.
    pidfile = os.path.join(bundle.path, "exec.pid")
    p = runtime("exec", "-d", "--pid-file", pidfile, cid, "sleep", "30")
    assert open(fake).read() == "fake\n", "exec wrote oomScoreAdj into the container's fake /proc"
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    with open(f"/proc/{int(open(pidfile).read())}/oom_score_adj") as f:
        assert f.read().strip() == "321"


# --- 3: masking and /dev/console bind from verified fds --------------------------------------

def test_masked_paths_never_show_a_swapped_dev_null(runtime, bundle, workdir):
    masked = next((p for p in ("/proc/keys", "/proc/timer_list", "/proc/sched_debug")
                   if os.path.exists(p) and p in bundle.config["linux"]["maskedPaths"]), None)
    if masked is None:
        pytest.skip("none of /proc/keys, /proc/timer_list, /proc/sched_debug exists here")
    dev = _shared_dev(bundle, workdir)
    bundle.set_args("sh", "-c", f"if [ -f {masked} ]; then echo REGULAR; elif [ -c {masked} ]; "
                    "then echo NULLDEV; else echo OTHER; fi")
    fake = os.path.join(dev, ".fake")  # swapped with /dev/null, back and forth
    with open(fake, "w") as f:
        f.write("caught\n")
    os.chmod(fake, 0o666)
    racer = Racer(os.path.join(dev, "null"), fake)
    outcomes = []
    try:
        for i in range(TRIES):
            p = runtime("run", "-b", bundle.path, f"mask-race-{os.getpid()}-{i}")
            outcomes.append((p.returncode, p.stdout.strip(), p.stderr.strip()))
    finally:
        racer.stop()
    shown = [o for o in outcomes if o[0] == 0]
    assert not [o for o in shown if o[1] != "NULLDEV"], \
        f"{masked} showed the co-tenant's file: {[o[1] for o in shown]}"
    for rc, _, err in outcomes:  # refused: swapped before the check, or removed after it
        if rc != 0:
            assert ("linux.maskedPaths: the container's /dev/null is a regular file" in err
                    or "cannot bind the container's /dev/null onto it" in err), err
    assert shown, "no run got through: the race decided nothing"


def _console_run(runtime, bundle, cid, sock):
    listener = subprocess.Popen([sys.executable, os.path.join(HERE, "recvtty.py"), sock],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert listener.stdout.readline() == b"listening\n"
        p = runtime("run", "-b", bundle.path, "--console-socket", sock, cid)
        if p.returncode != 0:
            return p.returncode, p.stderr
        out, _ = listener.communicate(timeout=30)
        return 0, out.decode(errors="replace")
    finally:
        listener.kill()
        listener.wait()
        if os.path.exists(sock):
            os.unlink(sock)


def test_console_target_swapped_for_a_symlink(runtime, bundle, workdir):
    dev = _shared_dev(bundle, workdir, keep=("/dev/pts",))
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    with open(os.path.join(bundle.rootfs, "etc", "motd"), "w") as f:
        f.write("motd\n")
    bundle.config["process"]["terminal"] = True
    # (/dev/console itself is not checked: the co-tenant keeps renaming over it)
    bundle.set_args("sh", "-c", "[ -c /etc/motd ] && echo MOTD-IS-TTY; echo DONE")
    # /dev/console: an empty file, swapped back and forth with a symlink to /etc/motd
    open(os.path.join(dev, "console"), "w").close()
    os.symlink("/etc/motd", os.path.join(dev, ".lnk"))
    racer = Racer(os.path.join(dev, "console"), os.path.join(dev, ".lnk"))
    outcomes = []
    try:
        for i in range(30):
            outcomes.append(_console_run(runtime, bundle, f"console-race-{os.getpid()}-{i}",
                                         os.path.join(workdir, f"c{i}.sock")))
    finally:
        racer.stop()
    assert not [o for o in outcomes if "MOTD-IS-TTY" in o[1]], \
        "the terminal was mounted over the symlink's target"
    for rc, text in outcomes:
        if rc != 0:
            assert "process.terminal" in text and "/dev/console" in text, text
        else:
            assert "DONE" in text, text
    assert any(rc == 0 for rc, _ in outcomes), "no run got through: the race decided nothing"


# --- 4: /proc and /sys symlinks, --no-pivot ---------------------------------------------------

@pytest.mark.parametrize("name, fstype", [("proc", "proc"), ("sys", "sysfs")])
def test_rootfs_with_symlinked_proc_or_sys_is_refused(runtime, bundle, cid, name, fstype):
    path = os.path.join(bundle.rootfs, name)
    os.rmdir(path)
    os.makedirs(os.path.join(bundle.rootfs, "tmp", "elsewhere"))
    os.symlink("tmp/elsewhere", path)
    bundle.set_args("true")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 1
    assert f"/{name} is a symlink in the rootfs" in p.stderr, p.stderr
    assert f"{fstype} must be mounted on an ordinary directory" in p.stderr
    assert os.listdir(os.path.join(bundle.rootfs, "tmp", "elsewhere")) == []
    assert "Traceback" not in p.stderr


# As an unprivileged user of the container (no capability at all): a user namespace mapping
# it to root (mapping uid 0 itself would need CAP_SETFCAP), then pid and mount namespaces
# in the same process (-r maps before any exec, while it holds every capability there),
# then a fresh procfs on /proc. The kernel allows that only if a fully visible procfs is
# in the mount namespace: one without the container's masks on it.
NESTED_PROC = ("unshare -r true && echo USERNS-OK; "
               "unshare -r -p -f -m sh -c 'mount -t proc proc /proc && echo MOUNTED && "
               "[ ! -c /proc/keys ] && echo UNMASKED'; true")


def _nested_proc_bundle(bundle):
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.set_args("sh", "-c", NESTED_PROC)


def test_no_pivot_leaves_no_full_procfs_to_mount_from(runtime, bundle, cid):
    if not os.path.exists("/proc/keys"):
        pytest.skip("the kernel has no /proc/keys (CONFIG_KEYS) to check masking with")
    _nested_proc_bundle(bundle)
    p = runtime("run", "--no-pivot", "-b", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    if "USERNS-OK" not in p.stdout:
        pytest.skip("a process in a container cannot create a user namespace on this host")
    assert "MOUNTED" not in p.stdout and "UNMASKED" not in p.stdout, \
        "a nested user namespace mounted a procfs without the container's masks"


def test_pivot_root_also_refuses_the_nested_procfs(runtime, bundle, cid):
    # The same probe with pivot_root: the kernel's own check, which --no-pivot must match.
    _nested_proc_bundle(bundle)
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    if "USERNS-OK" not in p.stdout:
        pytest.skip("a process in a container cannot create a user namespace on this host")
    assert "MOUNTED" not in p.stdout, p.stdout
