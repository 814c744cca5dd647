"""Hooks, terminal and netDevices end to end through the installed `pyrunc` command:
busybox bundles, a --root of our own, the real kernel. Observed from outside (hook
records, the console socket listener, nsenter) and from inside (the container's output)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYRUNC = os.environ.get("PYRUNC") or shutil.which("pyrunc")
APPLETS = ("sh", "cat", "echo", "true", "false", "tty", "stty", "readlink", "sleep", "ls", "ip",
           "stat")

pytestmark = pytest.mark.skipif(PYRUNC is None, reason="the pyrunc command is not installed")


@pytest.fixture
def env():
    top = tempfile.mkdtemp(prefix="pyrunc-hooks-e2e-")
    bundle = os.path.join(top, "bundle")
    bindir = os.path.join(bundle, "rootfs", "bin")
    os.makedirs(bindir)
    shutil.copy2("/bin/busybox", os.path.join(bindir, "busybox"))
    for a in APPLETS:
        os.symlink("busybox", os.path.join(bindir, a))
    subprocess.run([PYRUNC, "spec"], cwd=bundle, check=True)
    e = Env(top, bundle)
    yield e
    for cid in os.listdir(e.root) if os.path.isdir(e.root) else ():
        e.pyrunc("delete", "--force", cid, check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", top], check=True)
    with open("/proc/self/mountinfo") as f:
        assert top not in f.read()


class Env:
    def __init__(self, top, bundle):
        self.top, self.bundle = top, bundle
        self.root = os.path.join(top, "state")
        self.log = os.path.join(top, "hooklog")
        os.mkdir(self.log)
        with open(os.path.join(bundle, "config.json")) as f:
            self.cfg = json.load(f)
        self.cfg["process"]["terminal"] = False
        self.cfg["process"]["args"] = ["true"]
        self.n = 0

    def write(self):
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump(self.cfg, f)

    def new_id(self):
        self.n += 1
        return f"hooks-e2e-{os.getpid()}-{self.n}"

    def pyrunc(self, *args, check=True):
        # Files, not pipes: a created container inherits pyrunc's stdio and would keep a
        # pipe open long after pyrunc exits.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            p = subprocess.run([PYRUNC, "--root", self.root, *args], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=err, timeout=60)
            out.seek(0)
            err.seek(0)
            p.stdout, p.stderr = out.read(), err.read()
        if check:
            assert p.returncode == 0, f"pyrunc {args}: {p.stderr}"
        return p

    def recorder(self, name, fail=0, in_container=False):
        """A hook that records its stdin and namespaces under NAME, and its turn in `order`."""
        d = "/" if in_container else self.log + "/"
        script = (f"cat > {d}{name}.json; readlink /proc/self/ns/mnt > {d}{name}.mnt; "
                  f"readlink /proc/self/ns/pid > {d}{name}.pid; echo {name} >> {d}order; "
                  + (f"echo {name} failed on purpose >&2; exit {fail}" if fail else "exit 0"))
        return {"path": "/bin/busybox", "args": ["sh", "-c", script]}

    def read(self, name, ext="json"):
        with open(os.path.join(self.log, f"{name}.{ext}")) as f:
            return json.load(f) if ext == "json" else f.read().strip()

    def order(self):
        path = os.path.join(self.log, "order")
        return open(path).read().split() if os.path.exists(path) else []


def test_all_hooks_run_in_order_in_their_namespaces_with_state(env):
    names = ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
    env.cfg["hooks"] = {n: [env.recorder(n)] for n in names}
    env.cfg["hooks"]["startContainer"] = [env.recorder("startContainer", in_container=True)]
    env.cfg["root"]["readonly"] = False  # startContainer writes its record into the rootfs
    env.write()
    cid = env.new_id()
    env.pyrunc("create", "--bundle", env.bundle, cid)
    assert env.order() == ["prestart", "createRuntime", "createContainer"]
    state = json.loads(env.pyrunc("state", cid).stdout)
    pid = state["pid"]
    host_mnt = os.readlink("/proc/self/ns/mnt")
    ctr_mnt = os.readlink(f"/proc/{pid}/ns/mnt")
    ctr_pid_ns = os.readlink(f"/proc/{pid}/ns/pid")
    for n in ("prestart", "createRuntime"):  # the runtime's namespaces
        assert env.read(n, "mnt") == host_mnt
        assert env.read(n, "pid") == os.readlink("/proc/self/ns/pid")
    assert env.read("createContainer", "mnt") == ctr_mnt  # the container's namespaces
    assert env.read("createContainer", "pid") == ctr_pid_ns
    for n in ("prestart", "createRuntime", "createContainer"):
        st = env.read(n)
        assert (st["id"], st["pid"], st["bundle"], st["status"]) == (
            cid, pid, env.bundle, "creating"), n
    env.pyrunc("start", cid)
    deadline = time.monotonic() + 20
    while json.loads(env.pyrunc("state", cid).stdout)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    rootfs = os.path.join(env.bundle, "rootfs")
    # startContainer: in the container, its path resolved in the container's rootfs.
    with open(os.path.join(rootfs, "startContainer.json")) as f:
        st = json.load(f)
    assert (st["id"], st["pid"]) == (cid, pid)
    with open(os.path.join(rootfs, "startContainer.mnt")) as f:
        assert f.read().strip() == ctr_mnt
    assert env.read("poststart")["status"] == "running"
    assert env.read("poststart", "mnt") == host_mnt
    env.pyrunc("delete", cid)
    st = env.read("poststop")
    assert (st["id"], st["status"], st["bundle"]) == (cid, "stopped", env.bundle)
    assert env.order() == ["prestart", "createRuntime", "createContainer", "poststart",
                           "poststop"]


@pytest.mark.parametrize("hook", ["prestart", "createRuntime", "createContainer"])
def test_failing_create_hook_fails_create_and_leaves_nothing(env, hook):
    env.cfg["hooks"] = {hook: [env.recorder(hook, fail=3), env.recorder("never")]}
    env.write()
    cid = env.new_id()
    p = env.pyrunc("create", "--bundle", env.bundle, cid, check=False)
    assert p.returncode == 1
    assert f"hooks.{hook}[0] (/bin/busybox): exit status 3: {hook} failed on purpose" in p.stderr
    assert "never" not in env.order()
    assert not os.path.exists(os.path.join(env.root, cid))


def test_failing_start_container_hook_stops_the_process(env):
    env.cfg["hooks"] = {"startContainer": [{"path": "/bin/false"}]}
    env.cfg["process"]["args"] = ["sh", "-c", f"echo ran > /ran"]
    env.cfg["root"]["readonly"] = False
    env.write()
    cid = env.new_id()
    env.pyrunc("run", "--bundle", env.bundle, cid, check=False)
    assert not os.path.exists(os.path.join(env.bundle, "rootfs", "ran"))


def test_failing_poststart_is_an_error_and_stops_the_container(env):
    # runtime-spec (config.md lifecycle, since 1.0.2): a failing poststart hook generates an
    # error and the container is stopped; the later poststart hooks do not run.
    env.cfg["hooks"] = {"poststart": [{"path": "/bin/false"}, env.recorder("poststart")]}
    env.write()
    cid = env.new_id()
    env.pyrunc("create", "--bundle", env.bundle, cid)
    p = env.pyrunc("start", cid, check=False)
    assert p.returncode == 1 and "hooks.poststart[0] (/bin/false): exit status 1" in p.stderr
    assert env.order() == []


def test_failing_poststop_warns_and_the_rest_still_run(env):
    env.cfg["hooks"] = {"poststop": [{"path": "/bin/false"}, env.recorder("poststop")]}
    env.write()
    cid = env.new_id()
    env.pyrunc("run", "--bundle", env.bundle, cid)
    assert env.order() == ["poststop"]


def test_failing_poststop_only_warns(env):
    env.cfg["hooks"] = {"poststop": [env.recorder("poststop", fail=5)]}
    env.write()
    cid = env.new_id()
    env.pyrunc("create", "--bundle", env.bundle, cid)
    env.pyrunc("start", cid)
    p = env.pyrunc("delete", "--force", cid)
    assert "warning" in p.stderr and "exit status 5" in p.stderr
    assert not os.path.exists(os.path.join(env.root, cid))


CHECK = r"""
tty
stty size
echo ctty-ok > /dev/tty
[ /dev/console -ef /proc/self/fd/0 ] && echo console-ok
for f in /proc/$$/fd/*; do readlink $f; done | grep -q ptmx && echo master-leaked
read line
echo "got:$line"
"""


def test_console_socket_gets_the_master_and_the_container_a_tty(env):
    env.cfg["process"]["terminal"] = True
    env.cfg["process"]["consoleSize"] = {"height": 41, "width": 123}
    env.cfg["process"]["args"] = ["sh", "-c", CHECK]
    env.write()
    sock = os.path.join(env.top, "console.sock")
    listener = subprocess.Popen([sys.executable, os.path.join(HERE, "recvtty.py"), sock,
                                 "--input", "typed in\n"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert listener.stdout.readline() == b"listening\n"
        cid = env.new_id()
        env.pyrunc("create", "--bundle", env.bundle, "--console-socket", sock, cid)
        env.pyrunc("start", cid)
        out, err = listener.communicate(timeout=30)
    finally:
        listener.kill()
        listener.wait()
    assert listener.returncode == 0, err.decode()
    assert err.decode().strip() == "name=/dev/pts/0"
    lines = out.decode().replace("\r\n", "\n").splitlines()
    assert "/dev/pts/0" in lines and "41 123" in lines
    assert "ctty-ok" in lines and "console-ok" in lines and "master-leaked" not in lines
    assert "got:typed in" in lines
    env.pyrunc("delete", "--force", cid)


def test_unreachable_console_socket_is_a_create_error(env):
    env.cfg["process"]["terminal"] = True
    env.write()
    cid = env.new_id()
    sock = os.path.join(env.top, "nobody.sock")
    p = env.pyrunc("create", "--bundle", env.bundle, "--console-socket", sock, cid, check=False)
    assert p.returncode == 1
    assert f"--console-socket {sock}: cannot connect: No such file or directory" in p.stderr
    assert not os.path.exists(os.path.join(env.root, cid))


def on_a_terminal(argv, rows, cols, typed):
    """Run argv with a terminal of ours (rows x cols) as its stdio, type `typed`, and
    return what it printed, as lines, once it has exited with status 0."""
    from pyrunc import console

    master, slave = os.openpty()
    console.set_size(slave, rows, cols)
    try:
        p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                             start_new_session=True)
        os.close(slave)
        os.write(master, typed)
        out = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every slave fd is closed
                break
            if not data:
                break
            out += data
        assert p.wait(timeout=30) == 0, out
    finally:
        os.close(master)
    return out.decode().replace("\r\n", "\n").splitlines()


def test_run_in_the_foreground_with_a_terminal(env):
    env.cfg["process"]["terminal"] = True
    env.cfg["process"]["args"] = ["sh", "-c", CHECK]
    env.write()
    lines = on_a_terminal([PYRUNC, "--root", env.root, "run", "--bundle", env.bundle,
                           env.new_id()], 29, 97, b"from the caller\n")
    assert "29 97" in lines and "console-ok" in lines and "got:from the caller" in lines


NETDEV = r"""
import json, os, subprocess, sys
pyrunc, root, bundle, cid = sys.argv[1:5]
def ip(*a):
    subprocess.run(["ip", *a], check=True)
ip("link", "add", "pyrhe2e0", "mtu", "1300", "type", "veth", "peer", "name", "pyrhe2e1")
ip("addr", "add", "127.3.4.5/8", "dev", "pyrhe2e0", "scope", "global")
subprocess.run([pyrunc, "--root", root, "create", "--bundle", bundle, cid], check=True)
pid = json.loads(subprocess.run([pyrunc, "--root", root, "state", cid], check=True,
                                capture_output=True, text=True).stdout)["pid"]
ns = ["nsenter", "--net", "--target", str(pid), "ip", "-j"]
out = {"ctr": json.loads(subprocess.run(ns + ["addr", "show"], check=True,
                                        capture_output=True, text=True).stdout),
       "host": [l["ifname"] for l in json.loads(subprocess.run(
           ["ip", "-j", "link", "show"], check=True, capture_output=True, text=True).stdout)]}
subprocess.run([pyrunc, "--root", root, "delete", "--force", cid], check=True)
print(json.dumps(out))
"""


def test_net_devices_move_into_the_container(env):
    """pyrunc itself runs in a network namespace of the test's own (unshare --net), so the
    'host' interface it moves is a veth that exists nowhere else."""
    env.cfg["linux"]["netDevices"] = {"pyrhe2e0": {"name": "eth7"}}
    env.write()
    p = subprocess.run(["unshare", "--net", sys.executable, "-c", NETDEV, PYRUNC, env.root,
                        env.bundle, env.new_id()], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    links = {l["ifname"]: l for l in out["ctr"]}
    assert "pyrhe2e0" not in out["host"] and "pyrhe2e1" in out["host"]
    eth7 = links["eth7"]
    assert "UP" in eth7["flags"] and eth7["mtu"] == 1300
    assert [(a["local"], a["prefixlen"]) for a in eth7["addr_info"] if a["family"] == "inet"] \
        == [("127.3.4.5", 8)]
    assert "UP" in links["lo"]["flags"]  # a new network namespace gets its loopback up


def test_missing_net_device_is_a_create_error(env):
    env.cfg["linux"]["netDevices"] = {"pyrh-nosuch9": {}}
    env.write()
    cid = env.new_id()
    p = env.pyrunc("create", "--bundle", env.bundle, cid, check=False)
    assert p.returncode == 1
    assert "linux.netDevices.pyrh-nosuch9: no such network interface on the host" in p.stderr
    assert not os.path.exists(os.path.join(env.root, cid))


def test_hook_timeout_fails_create_within_the_timeout(env):
    env.cfg["hooks"] = {"createRuntime": [{"path": "/bin/busybox", "args": ["sleep", "30"],
                                           "timeout": 1}]}
    env.write()
    cid = env.new_id()
    t0 = time.monotonic()
    p = env.pyrunc("create", "--bundle", env.bundle, cid, check=False)
    assert time.monotonic() - t0 < 15
    assert p.returncode == 1
    assert "hooks.createRuntime[0] (/bin/busybox): timed out after 1s, killed" in p.stderr
    assert not os.path.exists(os.path.join(env.root, cid))


EXEC_CHECK = r"""
tty
stty size
echo ctty-ok > /dev/tty
read line
echo "got:$line"
"""


def _running(env, cid):
    env.cfg["process"]["args"] = ["sleep", "60"]
    env.write()
    env.pyrunc("create", "--bundle", env.bundle, cid)
    env.pyrunc("start", cid)


def test_exec_tty_with_console_socket(env):
    cid = env.new_id()
    _running(env, cid)
    sock = os.path.join(env.top, "exec.sock")
    listener = subprocess.Popen([sys.executable, os.path.join(HERE, "recvtty.py"), sock,
                                 "--input", "to exec\n"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert listener.stdout.readline() == b"listening\n"
        env.pyrunc("exec", "--tty", "--detach", "--console-socket", sock, cid,
                   "sh", "-c", EXEC_CHECK)
        out, err = listener.communicate(timeout=30)
    finally:
        listener.kill()
        listener.wait()
    assert listener.returncode == 0, err.decode()
    assert err.decode().startswith("name=/dev/pts/")
    lines = out.decode().replace("\r\n", "\n").splitlines()
    assert "ctty-ok" in lines and "got:to exec" in lines
    assert any(line.startswith("/dev/pts/") for line in lines)


def test_exec_tty_in_the_foreground(env):
    cid = env.new_id()
    _running(env, cid)
    lines = on_a_terminal([PYRUNC, "--root", env.root, "exec", "--tty", cid,
                           "sh", "-c", EXEC_CHECK], 17, 71, b"typed at exec\n")
    assert "17 71" in lines and "ctty-ok" in lines and "got:typed at exec" in lines


def test_idmapped_bind_mount_through_pyrunc(env):
    src = os.path.join(env.top, "idmap-src")
    os.mkdir(src)
    f = os.path.join(src, "owned-by-1000")
    open(f, "w").close()
    os.chown(f, 1000, 1000)
    one = [{"containerID": 1000, "hostID": 0, "size": 1}]
    env.cfg["mounts"].append({"destination": "/idm", "type": "bind", "source": src,
                              "options": ["bind", "idmap"], "uidMappings": one,
                              "gidMappings": one})
    assert owner_inside(env, "/idm", "owned-by-1000") == ["0", "0"]  # 1000 on disk shows as 0
    assert os.stat(f).st_uid == 1000


def test_idmapped_bind_mount_in_a_user_namespace_container(env):
    """runc's `simple idmap mount [userns]`: a host-root-owned file seen through a mount
    idmapped like the container's own mapping is owned by the container's root."""
    src = os.path.join(env.top, "idmap-src")
    os.mkdir(src)
    open(os.path.join(src, "owned-by-host-root"), "w").close()
    big = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    lcfg = env.cfg["linux"]
    lcfg["namespaces"].append({"type": "user"})
    lcfg["uidMappings"] = lcfg["gidMappings"] = big
    env.cfg["mounts"].append({"destination": "/idm", "type": "bind", "source": src,
                              "options": ["bind"], "uidMappings": big, "gidMappings": big})
    # The container's root is host uid 100000: it owns the rootfs, and may reach it.
    os.chmod(env.top, 0o755)
    rootfs = os.path.join(env.bundle, "rootfs")
    for d in ("proc", "sys", "dev", "tmp", "idm"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    subprocess.run(["chown", "-R", "-h", "100000:100000", rootfs], check=True)
    assert owner_inside(env, "/idm", "owned-by-host-root") == ["0", "0"]


def owner_inside(env, directory, name):
    """[uid, gid] of directory/name as the container sees it (`pyrunc run ... ls -ln`)."""
    env.cfg["process"]["args"] = ["sh", "-c", f"ls -ln {directory}"]
    env.write()
    out = os.path.join(env.top, "out")
    with open(out, "w") as o:
        p = subprocess.run([PYRUNC, "--root", env.root, "run", "--bundle", env.bundle,
                            env.new_id()], stdin=subprocess.DEVNULL, stdout=o,
                           stderr=subprocess.STDOUT, timeout=60)
    text = open(out).read()
    assert p.returncode == 0, text
    return [line.split() for line in text.splitlines() if name in line][0][2:4]


NETDEV_FAIL = r"""
import json, subprocess, sys
pyrunc, root, bundle, cid = sys.argv[1:5]
subprocess.run(["ip", "link", "add", "pyrhe2e0", "type", "veth", "peer", "name", "pyrhe2e1"],
               check=True)
subprocess.run(["ip", "addr", "add", "127.3.4.5/8", "dev", "pyrhe2e0", "scope", "global"],
               check=True)
p = subprocess.run([pyrunc, "--root", root, "create", "--bundle", bundle, cid],
                   capture_output=True, text=True)
link = json.loads(subprocess.run(["ip", "-j", "addr", "show", "pyrhe2e0"], check=True,
                                 capture_output=True, text=True).stdout)[0]
print(json.dumps({"rc": p.returncode, "stderr": p.stderr,
                  "addrs": [a["local"] for a in link["addr_info"] if a["family"] == "inet"]}))
"""


def test_failed_create_leaves_net_devices_on_the_host(env):
    env.cfg["linux"]["netDevices"] = {"pyrhe2e0": {"name": "eth7"}, "pyrh-nosuch8": {}}
    env.write()
    cid = env.new_id()
    p = subprocess.run(["unshare", "--net", sys.executable, "-c", NETDEV_FAIL, PYRUNC, env.root,
                        env.bundle, cid], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["rc"] == 1
    assert "linux.netDevices.pyrh-nosuch8: no such network interface on the host" in out["stderr"]
    assert out["addrs"] == ["127.3.4.5"]  # pyrhe2e0 is back where it was, address and all
    assert not os.path.exists(os.path.join(env.root, cid))


def test_terminal_of_a_non_root_process_is_its_own(env):
    env.cfg["process"]["terminal"] = True
    env.cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    env.cfg["process"]["args"] = ["sh", "-c", 't=$(tty); stat -c owner=%u "$t"; '
                                  'echo by-name > "$t" && echo write-ok']
    env.write()
    lines = on_a_terminal([PYRUNC, "--root", env.root, "run", "--bundle", env.bundle,
                           env.new_id()], 24, 80, b"")
    assert "owner=1000" in lines and "write-ok" in lines


NETDEV_JOIN = r"""
import json, subprocess, sys
pyrunc, root, bundle, cid = sys.argv[1:5]
subprocess.run(["ip", "link", "add", "pyrhe2e0", "type", "veth", "peer", "name", "pyrhe2e1"],
               check=True)
# A network namespace prepared beforehand, as containerd's sandbox would have it.
holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
import os
while os.readlink(f"/proc/{holder.pid}/exe").endswith("unshare"):
    pass
cfg = json.load(open(bundle + "/config.json"))
for ns in cfg["linux"]["namespaces"]:
    if ns["type"] == "network":
        ns["path"] = f"/proc/{holder.pid}/ns/net"
json.dump(cfg, open(bundle + "/config.json", "w"))
try:
    subprocess.run([pyrunc, "--root", root, "create", "--bundle", bundle, cid], check=True)
    links = json.loads(subprocess.run(["nsenter", "--net", "--target", str(holder.pid), "ip",
                                       "-j", "link", "show"], check=True, capture_output=True,
                                      text=True).stdout)
    subprocess.run([pyrunc, "--root", root, "delete", "--force", cid], check=True)
    print(json.dumps([l["ifname"] for l in links]))
finally:
    holder.kill()
    holder.wait()
"""


def test_net_devices_move_into_a_joined_network_namespace(env):
    env.cfg["linux"]["netDevices"] = {"pyrhe2e0": {"name": "eth5"}}
    env.write()
    p = subprocess.run(["unshare", "--net", sys.executable, "-c", NETDEV_JOIN, PYRUNC, env.root,
                        env.bundle, env.new_id()], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "eth5" in json.loads(p.stdout)
