"""cgroups.mount into a temp dir, in a private mount namespace of a forked child (never
the host's), read back from the child's mountinfo and files."""

import ctypes
import json
import os
import tempfile

import pytest

from cgroup_helpers import cg, procs  # noqa: F401
from ocispec.tables import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, \
    NAMESPACES
from pyrunc import cgroups
from pyrunc.cgroups import paths

libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def in_private_ns(fn, *, cgroupns=False, join=None):
    """Run fn() in a forked child with its own mount (and cgroup) namespace; return its
    JSON result or raise with its error."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if join is not None:
                join.add(os.getpid())
            flags = NAMESPACES["mount"][0] | (NAMESPACES["cgroup"][0] if cgroupns else 0)
            if libc.unshare(flags) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "make-rprivate")
            out = {"ok": fn()}
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    out = json.loads(data)
    if "error" in out:
        raise AssertionError(out["error"])
    return out["ok"]


def look(dest, m):
    """What the container would see at dest; then unmount everything."""
    seen = {"entries": sorted(os.listdir(dest)), "mounts": []}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == dest or fields[4].startswith(dest + "/"):
                seen["mounts"].append([fields[4], fields[5], line.split(" - ")[1].split()[0]])
    seen["pids.max"] = open(f"{dest}/pids/pids.max").read().strip()
    seen["procs"] = open(f"{dest}/pids/cgroup.procs").read().split()
    try:
        with open(f"{dest}/pids/pids.max", "w") as f:
            f.write("9")
        seen["write"] = "ok"
    except OSError as e:
        seen["write"] = e.strerror
    seen["links"] = {e: os.readlink(f"{dest}/{e}") for e in seen["entries"]
                     if os.path.islink(f"{dest}/{e}")}
    if m.v2:
        seen["unified_procs"] = open(f"{dest}/unified/cgroup.procs").read().split()
    for mnt in sorted((x[0] for x in seen["mounts"]), key=len, reverse=True):
        libc.umount2(mnt.encode(), MNT_DETACH)
    return seen


@pytest.mark.parametrize("ro", [False, True])
def test_bind_mounts_show_the_containers_own_cgroups(cg, procs, ro):
    m = cg()
    p = procs.sleeper()
    m.add(p.pid)
    m.set({"pids": {"limit": 77}})
    flags = MS_NOSUID | MS_NOEXEC | MS_NODEV | (MS_RDONLY if ro else 0)
    with tempfile.TemporaryDirectory(prefix="cgtest-mnt-") as dest:
        def child():
            cgroups.mount(m, dest, flags, False)
            return look(dest, m)
        seen = in_private_ns(child)
        assert os.listdir(dest) == []  # nothing reached the host's namespace
    v1, v2 = paths.mounts()
    expected = {os.path.basename(mp) for mp, _, _ in v1.values()}
    if v2:
        expected.add("unified")
    assert set(seen["entries"]) >= expected
    assert seen["pids.max"] == "77" and seen["procs"] == [str(p.pid)]
    if m.v2:
        assert seen["unified_procs"] == [str(p.pid)]
    mounts = {mp: (opts, fs) for mp, opts, fs in seen["mounts"]}
    assert mounts[dest][1] == "tmpfs"
    assert mounts[f"{dest}/pids"][1] == "cgroup"
    for mp, (opts, _) in mounts.items():
        assert ("ro" in opts.split(",")) == ro, (mp, opts)
        assert {"nosuid", "nodev", "noexec"} <= set(opts.split(",")), (mp, opts)
    assert seen["write"] == ("Read-only file system" if ro else "ok")
    for link, target in seen["links"].items():  # co-mounted controllers, if any
        assert link in target.split(",")


def test_cgroupns_mounts_fresh_hierarchies_rooted_at_the_container(cg):
    m = cg()
    m.set({"pids": {"limit": 55}})
    with tempfile.TemporaryDirectory(prefix="cgtest-mnt-") as dest:
        def child():
            cgroups.mount(m, dest, MS_NOSUID | MS_NOEXEC | MS_NODEV, True)
            seen = look(dest, m)
            seen["self"] = open("/proc/self/cgroup").read().splitlines()
            return seen
        seen = in_private_ns(child, cgroupns=True, join=m)
    assert seen["pids.max"] == "55"
    # in its cgroup namespace the container's cgroup is the root
    assert all(line.endswith(":/") for line in seen["self"])
    assert len(seen["procs"]) == 1
    fstypes = {mp: fs for mp, _, fs in seen["mounts"]}
    assert fstypes[f"{dest}/pids"] == "cgroup"
    if m.v2:
        assert fstypes[f"{dest}/unified"] == "cgroup2"
