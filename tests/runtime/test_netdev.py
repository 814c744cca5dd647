"""pyrunc.netdev end to end on the real kernel.

Nothing touches the host's network: each test runs pyrunc code in a network namespace of
its own ("the runtime's", made with util-linux unshare), where it creates a veth pair
(this kernel has no dummy driver) with loopback-range addresses only, and moves one end
into the network namespace of a second process ("the container"). Both namespaces die
with their processes, and the veth pair with them.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pyrunc import netdev

HOST = f"pyrh{os.getpid() % 100000}a"  # unique per test run; lives only in our netns
PEER = f"pyrh{os.getpid() % 100000}b"

RUNTIME = """
import json, os, subprocess, sys
from pyrunc import netdev
from ocispec.errors import OCIError

def ip(*args, ns=None):
    pre = ["nsenter", "--net", "--target", str(ns)] if ns else []
    return subprocess.run(pre + ["ip", *args], check=True, capture_output=True, text=True).stdout

def links(ns=None):
    return {l["ifname"]: l for l in json.loads(ip("-j", "link", "show", ns=ns))}

ip("link", "add", HOST, "mtu", "1400", "type", "veth", "peer", "name", PEER)
ip("addr", "add", "127.1.2.3/8", "dev", HOST, "scope", "global")  # moves
ip("addr", "add", "127.9.9.9/32", "dev", HOST)  # host scope: stays behind
ip("addr", "add", "127.5.5.5/8", "dev", HOST, "scope", "global",
   "valid_lft", "300", "preferred_lft", "300")  # not permanent: stays behind
ctr = subprocess.Popen(["unshare", "--net", "sleep", "60"])
try:
    # unshare(1) execs sleep once the namespace exists: wait for that.
    while os.readlink(f"/proc/{ctr.pid}/ns/net") == os.readlink("/proc/self/ns/net") or \\
            os.readlink(f"/proc/{ctr.pid}/exe").endswith("unshare"):
        pass
    out = {}
    try:
        BODY
    except OCIError as e:
        out["error"] = str(e)
    out["host_links"] = sorted(links())
    out["ctr_links"] = links(ctr.pid)
    out["ctr_addrs"] = json.loads(ip("-j", "addr", "show", ns=ctr.pid))
    print(json.dumps(out))
finally:
    ctr.kill()
    ctr.wait()
"""


def run_in_own_netns(body: str) -> dict:
    code = f"HOST = {HOST!r}\nPEER = {PEER!r}\n" + RUNTIME.replace(
        "BODY", textwrap.indent(textwrap.dedent(body), " " * 8).strip())
    p = subprocess.run(["unshare", "--net", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def addrs_of(out, name):
    for link in out["ctr_addrs"]:
        if link["ifname"] == name:
            return {(a["local"], a["prefixlen"], a["scope"]) for a in link["addr_info"]
                    if a["family"] == "inet"}
    raise AssertionError(f"{name} not in the container: {out['ctr_links']}")


def test_move_renames_keeps_permanent_global_addresses_and_sets_up():
    out = run_in_own_netns(f'netdev.move({{HOST: {{"name": "ctr0"}}}}, ctr.pid)')
    assert "error" not in out, out["error"]
    assert HOST not in out["host_links"] and PEER in out["host_links"]
    ctr0 = out["ctr_links"]["ctr0"]
    assert "UP" in ctr0["flags"]
    assert ctr0["mtu"] == 1400  # attributes other than addresses travel with the device
    assert addrs_of(out, "ctr0") == {("127.1.2.3", 8, "global")}


def test_move_without_name_keeps_the_host_name():
    out = run_in_own_netns("netdev.move({HOST: {}}, ctr.pid)")
    assert "error" not in out, out["error"]
    assert HOST in out["ctr_links"] and HOST not in out["host_links"]


def test_missing_host_interface_is_an_error_naming_the_field():
    out = run_in_own_netns('netdev.move({"pyrh-nosuch0": {"name": "x"}}, ctr.pid)')
    assert out["error"] == "linux.netDevices.pyrh-nosuch0: no such network interface on the host"


def test_name_taken_in_container_is_an_error_but_a_template_is_not():
    out = run_in_own_netns(f'''
        ip("link", "add", "ctr0", "type", "veth", "peer", "name", "ctr0p", ns=ctr.pid)
        netdev.move({{HOST: {{"name": "ctr0"}}}}, ctr.pid)
    ''')
    assert out["error"] == (f"linux.netDevices.{HOST}.name: 'ctr0' already exists in the "
                            "container's network namespace")
    assert HOST in out["host_links"]  # nothing moved

    out = run_in_own_netns(f'''
        ip("link", "add", "ctr0", "type", "veth", "peer", "name", "ctr1", ns=ctr.pid)
        netdev.move({{HOST: {{"name": "ctr%d"}}}}, ctr.pid)
    ''')
    assert "error" not in out, out["error"]
    assert "ctr2" in out["ctr_links"]  # the kernel picked the first free name
    assert addrs_of(out, "ctr2") == {("127.1.2.3", 8, "global")}


def test_loopback_up_in_a_new_network_namespace():
    code = textwrap.dedent("""
        import json, socket, subprocess
        from pyrunc import netdev
        def lo():
            return json.loads(subprocess.run(["ip", "-j", "link", "show", "lo"], check=True,
                              capture_output=True, text=True).stdout)[0]["flags"]
        def connects():
            srv = socket.socket()
            try:
                srv.bind(("127.0.0.1", 0)); srv.listen(1)
                socket.create_connection(srv.getsockname(), timeout=5).close()
                return True
            except OSError:
                return False
            finally:
                srv.close()
        out = {"before": [lo(), connects()]}
        netdev.loopback_up()
        netdev.loopback_up()  # idempotent
        out["after"] = [lo(), connects()]
        print(json.dumps(out))
    """)
    p = subprocess.run(["unshare", "--net", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert "UP" not in out["before"][0] and out["before"][1] is False
    assert "UP" in out["after"][0] and out["after"][1] is True


def test_netdev_module_does_not_import_pyroute2():
    code = "import sys, pyrunc.netdev; print('pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
