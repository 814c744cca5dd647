"""Namespaces (config-linux.md "Namespaces", "User namespace mappings"): new ones, joined
by path, inherited when absent, wrong types refused. Checked from outside through
/proc/PID/ns of the container's init."""

import os
import signal
import subprocess
import sys
import time

from ocispec.tables import NAMESPACES

from ..registry import case
from ..runtime import ns_inode, read

SLEEP = ["/bin/sh", "-c", "while :; do sleep 1; done"]

# A holder of fresh namespaces: unshares, makes its mount tree private (so nothing a
# runtime mounts in the joined mount namespace reaches the host), forks the pid
# namespace's init, prints its pid and waits to be killed.
HOLDER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
flags = int(sys.argv[1])
if libc.unshare(flags) != 0:
    sys.exit("unshare: " + os.strerror(ctypes.get_errno()))
if libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) != 0:
    sys.exit("mount --make-rprivate /: " + os.strerror(ctypes.get_errno()))
pid = os.fork()
if pid == 0:
    while True:
        time.sleep(60)
print(pid, flush=True)
os.waitpid(pid, 0)
"""

JOINABLE = ("pid", "network", "ipc", "uts", "mount", "cgroup")


def _holder(ctx):
    flags = 0
    for t in JOINABLE:
        flags |= NAMESPACES[t][0]
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(flags)], stdout=subprocess.PIPE,
                         text=True)
    line = p.stdout.readline().strip()
    ctx.check(line.isdigit(), f"harness: could not make namespaces to join ({line!r})")
    return int(line)


def _ns_of(pid):
    return {t: ns_inode(pid, NAMESPACES[t][1]) for t in NAMESPACES
            if os.path.exists(f"/proc/{pid}/ns/{NAMESPACES[t][1]}")}


@case("linux_ns_nopath")
def linux_ns_nopath(ctx):
    """Each namespace listed without a path is new: the init's /proc/PID/ns entries differ
    from the runtime's."""
    b = ctx.bundle()
    b.config["linux"]["namespaces"] = [{"type": t} for t in JOINABLE]
    b.config["process"]["args"] = SLEEP
    cid = ctx.create(b)
    pid = ctx.rt.state(cid)["pid"]
    ours, theirs = _ns_of(os.getpid()), _ns_of(pid)
    for t in JOINABLE:
        ctx.check(theirs[t] != ours[t], f"{t} namespace {theirs[t]} is the runtime's own")


@case("linux_ns_itype")
def linux_ns_itype(ctx):
    """A namespace type absent from the config is inherited from the runtime: pid,
    network, ipc, uts, cgroup and user are the runtime's. (The mount namespace stays in
    the config: without it the runtime would mount over the host's own tree.)"""
    b = ctx.bundle()
    b.config["linux"]["namespaces"] = [{"type": "mount"}]
    b.config.pop("hostname", None)
    b.config["process"]["args"] = SLEEP
    cid = ctx.create(b)
    pid = ctx.rt.state(cid)["pid"]
    ours, theirs = _ns_of(os.getpid()), _ns_of(pid)
    for t in ("pid", "network", "ipc", "uts", "cgroup", "user"):
        ctx.check(theirs.get(t) == ours.get(t),
                  f"{t} namespace {theirs.get(t)} is not the runtime's {ours.get(t)}")


@case("linux_ns_path")
def linux_ns_path(ctx):
    """A namespace with a path is joined: the init's /proc/PID/ns entries are those of the
    path (pid, network, ipc, uts, mount, cgroup held by a process of the harness)."""
    holder = _holder(ctx)
    b = ctx.bundle()
    b.config["linux"]["namespaces"] = [
        {"type": t, "path": f"/proc/{holder}/ns/{NAMESPACES[t][1]}"} for t in JOINABLE]
    b.config["process"]["args"] = SLEEP
    cid = ctx.create(b)
    pid = ctx.rt.state(cid)["pid"]
    want, theirs = _ns_of(holder), _ns_of(pid)
    for t in JOINABLE:
        ctx.check(theirs[t] == want[t], f"{t} namespace {theirs[t]}, expected the joined "
                                        f"{want[t]}")


@case("linux_ns_path_type")
def linux_ns_path_type(ctx):
    """A path that is not a namespace of the given type MUST be an error (a uts namespace
    given as the network namespace)."""
    ctx.control()
    holder = _holder(ctx)
    b = ctx.bundle()
    b.config["linux"]["namespaces"] = [
        {"type": t} for t in ("pid", "ipc", "uts", "mount")] + [
        {"type": "network", "path": f"/proc/{holder}/ns/uts"}]
    ctx.create_fails(b, "the network namespace path is a uts namespace")


@case("linux_uid_mappings")
def linux_uid_mappings(ctx):
    """With a user namespace, uidMappings and gidMappings are written to the init's
    uid_map and gid_map; inside, uid 0 maps to the configured host id."""
    b = ctx.bundle()
    hostid = 200000 + (os.getpid() % 1000) * 100
    b.config["linux"]["namespaces"].append({"type": "user"})
    b.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": hostid, "size": 65536}]
    b.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": hostid + 1, "size": 65536}]
    # devpts gid=5 and sysfs need nothing more; the rootfs must be readable by hostid.
    b.config["process"]["args"] = ["/bin/sh", "-c",
                                   "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
                                   "while :; do sleep 1; done"]
    cid = ctx.create(b)
    pid = ctx.rt.state(cid)["pid"]
    uid_map = read(f"/proc/{pid}/uid_map").split()
    gid_map = read(f"/proc/{pid}/gid_map").split()
    ctx.check(uid_map == ["0", str(hostid), "65536"], f"uid_map {uid_map}")
    ctx.check(gid_map == ["0", str(hostid + 1), "65536"], f"gid_map {gid_map}")
    ctx.check(ns_inode(pid, "user") != ns_inode(os.getpid(), "user"), "no new user namespace")
    ctx.rt.ok("start", cid)
    deadline = time.monotonic() + ctx.rt.timeout
    while len(ctx.output(cid).split()) < 7 and time.monotonic() < deadline:
        time.sleep(0.02)
    out = ctx.output(cid).split()
    ctx.check(out[:7] == ["0", str(hostid), "65536", "0", str(hostid + 1), "65536", "0"],
              f"inside: {out}")
    ctx.rt.ok("kill", cid, str(int(signal.SIGKILL)))
    ctx.rt.wait_status(cid, "stopped")
