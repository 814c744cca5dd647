"""Bridge networking and published ports through the CNI plugins, end to end: `pybuild
unpack --network bridge -p` + a plain `pyrunc run -d` answers on 127.0.0.1, `pyrunc delete`
removes its veth, address and port rules; `pybuild run --network`; a port in use, a missing
plugin, an attach that fails; podman's `run -d -p` lifecycle on an image pybuild built; the
seed's walk-through.

Each test's network is a bridge of its own on a private 10.213.x.0/24 that exists only on
this host; containers are reached through 127.0.0.1 only. Links and iptables rules are
compared before and after."""
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from build_e2e import busybox_base, env, pybuild_cmd  # noqa: F401  (fixture)
from conftest import mounts_under
from registry_fixtures import Registry

CNI = "/usr/lib/cni"
PLUGINS = ("bridge", "host-local", "portmap", "firewall", "loopback")


def _missing():
    miss = [p for p in PLUGINS if not os.access(os.path.join(CNI, p), os.X_OK)]
    if miss:
        return f"CNI plugins {miss} missing in {CNI} (apt-get install containernetworking-plugins)"
    if not shutil.which("iptables"):
        return "iptables is not installed"
    if subprocess.run(["iptables", "-S"], capture_output=True).returncode:
        return "iptables cannot read the rules here"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def _links() -> set:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _rules() -> set:
    out = set()
    for t in ("filter", "nat"):
        out |= {f"{t} {r}" for r in subprocess.run(["iptables", "-t", t, "-S"], capture_output=True,
                                                   text=True).stdout.splitlines()}
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# shared CNI chains the portmap and firewall plugins make once, as with podman; per-container
# rules and chains must go
_SHARED = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK", "CNI-FORWARD",
           "CNI-ADMIN")


def _ours(rule: str) -> bool:
    return not any(f" {c}" in rule and not any(x in rule for x in ("CNI-DN-", "CNI-SN-"))
                   for c in _SHARED) or "10.213." in rule


@pytest.fixture
def net(env):
    """The test's network: a bridge and subnet of its own in the test's store."""
    n = random.randrange(10, 250)
    bridge = f"pbt{os.getpid() % 10000}{n}"[:15]
    subnet = f"10.213.{n}.0/24"
    d = os.path.join(env.root, "cni", "net.d")
    os.makedirs(d)
    conf = {"cniVersion": "1.0.0", "name": "pybuild", "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": os.path.join(env.root, "cni", "ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall", "backend": "iptables"}]}
    with open(os.path.join(d, "pybuild.conflist"), "w") as f:
        json.dump(conf, f)
    links, rules = _links(), _rules()
    env.state = os.path.join(env.base, "state")
    env.net = type("Net", (), {"bridge": bridge, "prefix": f"10.213.{n}.", "links": links,
                               "rules": rules})
    yield env
    for cid in os.listdir(env.state) if os.path.isdir(env.state) else ():
        _pyrunc(env, "delete", "-f", cid)
    left_links = _links() - links
    left_rules = {r for r in _rules() - rules if _ours(r)}
    if bridge in _links():
        subprocess.run(["ip", "link", "del", bridge], check=False)
    assert not left_links and not left_rules, (left_links, left_rules)


def _pyrunc(env, *args):
    # files, not pipes: a detached container keeps its stdio open
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.run([os.environ.get("PYRUNC", "pyrunc"), "--root", env.state, *args],
                           text=True, timeout=60, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read(), err.read()
    return p


def _web_image(env, tag="web:1"):
    env.dockerfile(busybox_base(env, "RUN mkdir -p /www && echo hello from pybuild > /www/index.html\n"
                                     "EXPOSE 80\n"
                                     'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]\n'))
    env.build(tag=tag)


def _get(port: int, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        p = subprocess.run(["wget", "-qO-", "-T", "2", f"http://127.0.0.1:{port}/"],
                           capture_output=True, text=True)
        if p.returncode == 0 or time.monotonic() > deadline:
            return p.stdout
        time.sleep(0.2)


def _ipam_reservations(env) -> list:
    d = os.path.join(env.root, "cni", "ipam", "pybuild")
    return [n for n in os.listdir(d) if n[0].isdigit()] if os.path.isdir(d) else []


def test_unpack_bridge_published_port_with_pyrunc(net):
    env = net
    _web_image(env)
    port = _free_port()
    b = os.path.join(env.base, "bundle")
    env.pybuild("unpack", "--network", "bridge", "-p", f"127.0.0.1:{port}:80", "web:1", b)
    with open(os.path.join(b, "config.json")) as f:
        spec = json.load(f)
    assert spec["hooks"]["createRuntime"] and spec["hooks"]["poststop"]
    p = _pyrunc(env, "run", "-d", "--bundle", b, "web")
    assert p.returncode == 0, p.stderr
    assert _get(port) == "hello from pybuild\n"
    ex = _pyrunc(env, "exec", "web", "ip", "-4", "-o", "addr", "show", "eth0")
    assert env.net.prefix in ex.stdout, ex
    assert env.net.bridge in _links() and any(str(port) in r for r in _rules())
    assert len(_ipam_reservations(env)) == 1
    assert _pyrunc(env, "delete", "-f", "web").returncode == 0
    # its veth, address, port rules and the bridge it was the last user of are gone
    assert _links() - env.net.links == set()
    assert not any(str(port) in r or env.net.prefix in r for r in _rules())
    assert _ipam_reservations(env) == []
    assert _get(port, timeout=0) == ""
    env.pybuild("rm", b)


def test_run_networks(net):
    env = net
    _web_image(env)
    c = env.pybuild("from", "web:1").stdout.strip()
    p = env.pybuild("run", "--network", "bridge", c, "--", "ip", "-4", "-o", "addr")
    assert env.net.prefix in p.stdout and " lo " in p.stdout, p.stdout
    p = env.pybuild("run", "--network", "none", c, "--", "ip", "-o", "link")
    assert [ln.split(":")[1].strip() for ln in p.stdout.splitlines()] == ["lo"], p.stdout
    host_links = _links()
    p = env.pybuild("run", c, "--", "ip", "-o", "link")  # host, as buildah's default
    assert {ln.split(":")[1].strip().split("@")[0] for ln in p.stdout.splitlines()} & host_links - {"lo"}
    # a published port through `pybuild run`
    port = _free_port()
    p = env.pybuild("run", "--network", "bridge", "-p", f"127.0.0.1:{port}:80", c, "--", "sh", "-c",
                    "httpd -p 80 -h /www && sleep 0.3 && "
                    f"echo up", ok=None)
    assert p.returncode == 0 and p.stdout == "up\n", p.stderr
    assert env.net.bridge not in _links() and _ipam_reservations(env) == []
    env.pybuild("rm", c)


def test_port_in_use_and_missing_plugin_leave_nothing(net):
    env = net
    _web_image(env)
    port = _free_port()
    b1, b2 = os.path.join(env.base, "b1"), os.path.join(env.base, "b2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        p = env.pybuild("unpack", "--network", "bridge", "-p", f"127.0.0.1:{port}:80", "web:1", b1, ok=False)
        assert f"port 127.0.0.1:{port}/tcp is already in use" in p.stderr and p.stderr.count("\n") == 1
    assert not os.path.exists(b1) and env.pybuild("containers", "-q").stdout == ""
    # a port another running container publishes
    env.pybuild("unpack", "--network", "bridge", "-p", f"{port}:80", "web:1", b1)
    assert _pyrunc(env, "run", "-d", "--bundle", b1, "one").returncode == 0
    p = env.pybuild("unpack", "--network", "bridge", "-p", f"127.0.0.1:{port}:80", "web:1", b2, ok=False)
    assert f"port {port}/tcp is already published by container one" in p.stderr
    assert not os.path.exists(b2)
    _pyrunc(env, "delete", "-f", "one")
    # the port is taken between unpack and run: the attach hook fails, create fails, and
    # nothing of the half attach stays (veth, address, rules)
    env.pybuild("unpack", "--network", "bridge", "-p", f"127.0.0.1:{port}:80", "web:1", b2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        p = _pyrunc(env, "run", "-d", "--bundle", b2, "two")
        assert p.returncode != 0 and "already in use" in p.stderr, p.stderr
    assert _links() - env.net.links == set() and _ipam_reservations(env) == []
    assert not any(str(port) in r for r in _rules())
    # a missing plugin is named before anything is made
    partial = os.path.join(env.base, "cni")
    os.mkdir(partial)
    for name in ("bridge", "host-local", "loopback", "firewall"):
        os.symlink(os.path.join(CNI, name), os.path.join(partial, name))
    b3 = os.path.join(env.base, "b3")
    p = env.pybuild("unpack", "--network", "bridge", "-p", f"{port}:80", "web:1", b3, ok=False,
                    env={"PYBUILD_CNI_PATH": partial})
    assert "CNI plugin 'portmap' not found" in p.stderr and p.stderr.count("\n") == 1
    assert not os.path.exists(b3)
    env.pybuild("rm", b1, b2)
    assert not mounts_under(env.base + "/b")


def test_seed_walkthrough(net):
    """The seed's walk-through: build -> push to a registry -> rmi -> pull -> from -> run a
    change -> commit -> unpack with a published port -> pyrunc run -d -> wget on 127.0.0.1
    -> delete."""
    env = net
    _web_image(env, tag="seed:1")
    # push to a registry on 127.0.0.1, remove the image, pull it back
    reg = Registry(env.base)
    try:
        remote = f"{reg.host}/team/seed:1"
        env.pybuild("push", "seed:1", remote)
        env.pybuild("rmi", "seed:1")
        env.pybuild("pull", remote)
    finally:
        reg.stop()
    c = env.pybuild("from", remote).stdout.strip()
    env.pybuild("run", c, "--", "sh", "-c", "echo changed by a container > /www/index.html")
    env.pybuild("config", c, "--label", "step=commit")
    env.pybuild("commit", c, "seed:2")
    port = _free_port()
    b = os.path.join(env.base, "bundle")
    env.pybuild("unpack", "--network", "bridge", "-p", f"127.0.0.1:{port}:80", "seed:2", b)
    assert _pyrunc(env, "run", "-d", "--bundle", b, "seed").returncode == 0
    assert _get(port) == "changed by a container\n"
    assert _pyrunc(env, "delete", "-f", "seed").returncode == 0
    env.pybuild("rm", b, c)
    assert env.rootfs(remote)["www/index.html"].data == b"hello from pybuild\n"


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")
def test_podman_run_d_publish_lifecycle(net, pyrunc_bin):
    """The seed's `docker run -d -p` lifecycle with podman --runtime pyrunc on a pybuild
    image: run -d, ps, logs, stop, restart, rm; on a podman network of the test's own."""
    env = net
    _web_image(env)
    runroot = tempfile.mkdtemp(prefix="pm-")
    netdir = os.path.join(env.base, "podman-net")
    os.mkdir(netdir)
    n = int(env.net.prefix.split(".")[2])
    base = ["podman", "--root", os.path.join(env.base, "podman"), "--runroot", runroot,
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--runtime", pyrunc_bin,
            "--network-config-dir", netdir]

    def pm(*args, check=True):
        p = subprocess.run(base + list(args), capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        if check and p.returncode:
            raise AssertionError(f"podman {' '.join(args)}: {p.returncode}: {p.stderr}")
        return p
    bridge = f"pbp{os.getpid() % 10000}{n}"[:15]
    try:
        image = pm("pull", "-q", f"oci:{env.root}:web:1").stdout.strip().splitlines()[-1]
        # podman 4.3 (CNI backend) takes the test's network as a conflist in its config dir
        with open(os.path.join(netdir, "pbtest.conflist"), "w") as f:
            json.dump({"cniVersion": "0.4.0", "name": "pbtest", "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
                 "hairpinMode": True, "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                                               "ranges": [[{"subnet": f"10.213.{(n + 1) % 250 or 1}.0/24"}]]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "firewall", "backend": ""}]}, f)
        port = _free_port()
        limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
        pm("run", "-d", "--name", "web", *limits, "--network", "pbtest", "-p", f"127.0.0.1:{port}:80",
           image, "sh", "-c", "echo serving; exec httpd -f -p 80 -h /www")
        assert _get(port) == "hello from pybuild\n"
        assert "web" in pm("ps", "--format", "{{.Names}} {{.Status}}").stdout
        assert "serving" in pm("logs", "web").stdout
        pm("stop", "-t", "5", "web")
        assert "Exited" in pm("ps", "-a", "--format", "{{.Status}}").stdout
        pm("restart", "web")
        assert _get(port) == "hello from pybuild\n"
        pm("rm", "-f", "web")
        assert pm("ps", "-aq").stdout.strip() == ""
        assert _get(port, timeout=0) == ""
    finally:
        pm("rm", "-af", check=False)
        pm("network", "rm", "-f", "pbtest", check=False)
        subprocess.run(base + ["system", "reset", "-f"], capture_output=True, timeout=60)
        if bridge in _links():
            subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(runroot, ignore_errors=True)
