"""pyrunc.cgroups on the real kernel: real processes in real cgroups, host files read back."""

import os
import time

import pytest

from cgroup_helpers import BLKIO_WEIGHT, NO_WEIGHT, cg, go, leftovers, procs, unique  # noqa: F401
from ocispec.errors import OCIError
from pyrunc.cgroups import Manager, paths


def read(d, name):
    with open(f"{d}/{name}") as f:
        return f.read().strip()


def own(ctrl):
    return paths.own_cgroups()[ctrl]


def proc_cgroups(pid):
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            out[ctrls or ""] = path
    return out


def test_layout_is_detected_from_mountinfo():
    v1, v2 = paths.mounts()
    assert paths.layout() == ("hybrid" if v1 and v2 else "v1" if v1 else "v2")
    assert paths.mounts() is paths.mounts()  # parsed once


def test_relative_path_is_below_own_cgroup_in_every_hierarchy(cg, procs):
    m = cg("{name}/inner")
    p = procs.sleeper()
    m.add(p.pid)
    got = proc_cgroups(p.pid)
    for line, path in got.items():
        ctrl = line.split(",")[0]
        base = paths.own_cgroups()[ctrl]
        assert path == os.path.join(base, m.test_name, "inner"), line
        d = m.path("" if line == "" else ctrl)
        assert str(p.pid) in read(d, "cgroup.procs").split()
    assert "" in got and m.v2  # the 0:: line is the container's on this host


def test_absolute_path_is_below_each_hierarchy_root(cg, procs):
    m = cg("/{name}/abs")
    p = procs.sleeper()
    m.add(p.pid)
    for line, path in proc_cgroups(p.pid).items():
        assert path == f"/{m.test_name}/abs", line


def test_default_path_is_the_id_below_own_cgroup(cg):
    name = unique()
    m = Manager.for_container(name, None)
    assert m.v1["memory"].endswith(os.path.join(own("memory"), name))
    assert m.v2 == os.path.join(paths.mounts()[1][0], own("").lstrip("/"), name).rstrip("/")


def test_path_cannot_climb_above_the_root():
    m = Manager.for_container("x", "/../../etc/cgtest")
    assert m.v1["memory"] == paths.mounts()[0]["memory"][0] + "/etc/cgtest"
    m = Manager.for_container("x", "../../cgtest")
    assert m.v1["pids"].endswith("/cgtest") and "/.." not in m.v1["pids"]


def test_systemd_paths_map_like_runc():
    m = Manager.for_container("abc", "machine-foo.slice:libpod:abc", systemd=True)
    assert m.v1["pids"] == paths.mounts()[0]["pids"][0] + \
        "/machine.slice/machine-foo.slice/libpod-abc.scope"
    m = Manager.for_container("abc", None, systemd=True)
    assert m.v1["pids"].endswith("/system.slice/runc-abc.scope")
    m = Manager.for_container("abc", ":p:abc", systemd=True)
    assert m.v1["pids"].endswith("/system.slice/p-abc.scope")
    # a plain path with --systemd-cgroup is taken as a cgroupfs path
    m = Manager.for_container("abc", "/plain/x", systemd=True)
    assert m.v1["pids"].endswith("/plain/x")
    with pytest.raises(OCIError, match="linux.cgroupsPath"):
        Manager.for_container("abc", "bad-.slice:p:abc", systemd=True)


def test_for_container_writes_nothing():
    name = unique()
    Manager.for_container(name, f"/{name}")
    Manager.for_container(name, None)
    assert leftovers(name) == []


def test_destroy_removes_everything_and_is_idempotent(procs):
    name = unique()
    m = Manager.for_container(name, f"{name}/a/b")
    m.create()
    p = procs.sleeper()
    m.add(p.pid)
    os.mkdir(m.v1["pids"] + "/sub")  # a sub-cgroup the container made
    assert len(leftovers(name)) == len(m.dirs())
    procs.kill_all()
    m.destroy()
    assert leftovers(name) == []
    m.destroy()
    # and from a state round trip, as `pyrunc delete` does
    m2 = Manager.for_container(name, f"/{name}")
    m2.create()
    Manager.from_state(m2.to_state()).destroy()
    assert leftovers(name) == []


def test_create_failure_leaves_nothing(cg):
    # Make the unified hierarchy refuse the new cgroup (cgroup.max.depth) after the v1
    # directories exist: all of them must go.
    parent = cg("/{name}")
    if not parent.v2:
        pytest.skip("host has no cgroup2 hierarchy to make create fail in")
    with open(parent.v2 + "/cgroup.max.depth", "w") as f:
        f.write("0")
    name = parent.test_name
    m = Manager.for_container("x", f"/{name}/child/leaf")
    with pytest.raises(OCIError, match="linux.cgroupsPath: cannot create cgroup"):
        m.create()
    assert all(not os.path.exists(d) for d in m.dirs())
    assert all(not os.path.exists(os.path.dirname(d)) for d in m.dirs())


def test_memory_pids_cpu_are_written(cg, procs):
    m = cg()
    p = procs.sleeper()
    m.add(p.pid)
    m.set({"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20,
                      "swappiness": 10, "disableOOMKiller": True},
           "pids": {"limit": 42},
           "cpu": {"shares": 512, "quota": 20000, "period": 50000, "burst": 1000, "idle": 0,
                   "cpus": "0", "mems": "0"}})
    mem, cpu = m.v1["memory"], m.v1["cpu"]
    assert read(mem, "memory.limit_in_bytes") == str(64 << 20)
    assert read(mem, "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(mem, "memory.memsw.limit_in_bytes") == str(128 << 20)
    assert read(mem, "memory.swappiness") == "10"
    assert "oom_kill_disable 1" in read(mem, "memory.oom_control")
    assert read(m.v1["pids"], "pids.max") == "42"
    assert read(cpu, "cpu.shares") == "512"
    assert read(cpu, "cpu.cfs_quota_us") == "20000"
    assert read(cpu, "cpu.cfs_period_us") == "50000"
    assert read(cpu, "cpu.cfs_burst_us") == "1000"
    assert read(m.v1["cpuset"], "cpuset.cpus") == "0"
    assert read(m.v1["cpuset"], "cpuset.mems") == "0"
    # lowering memory below the old memsw must reorder the writes; -1 lifts both
    m.set({"memory": {"limit": 16 << 20, "swap": 16 << 20}})
    assert read(mem, "memory.memsw.limit_in_bytes") == str(16 << 20)
    m.set({"memory": {"limit": 256 << 20, "swap": 512 << 20}})
    assert read(mem, "memory.memsw.limit_in_bytes") == str(512 << 20)
    m.set({"memory": {"limit": -1}})
    assert int(read(mem, "memory.limit_in_bytes")) > 1 << 60
    assert int(read(mem, "memory.memsw.limit_in_bytes")) > 1 << 60
    m.set({"pids": {"limit": -1}})
    assert read(m.v1["pids"], "pids.max") == "max"


def test_pids_limit_is_enforced(cg, procs):
    m = cg()
    p = procs.gated("for i in 1 2 3 4 5 6; do sleep 100 & done; wait")
    m.add(p.pid)
    m.set({"pids": {"limit": 3}})
    go(p)
    deadline = time.monotonic() + 5
    while int(read(m.v1["pids"], "pids.current")) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert int(read(m.v1["pids"], "pids.current")) == 3
    assert "max" in read(m.v1["pids"], "pids.events") and \
        int(read(m.v1["pids"], "pids.events").split()[-1]) > 0


def test_unset_resources_are_not_written(cg):
    m = cg()
    before = read(m.v1["memory"], "memory.soft_limit_in_bytes")
    m.set({"memory": {"limit": 100 << 20}, "cpu": {}, "pids": {}})
    assert read(m.v1["memory"], "memory.soft_limit_in_bytes") == before
    assert read(m.v1["cpu"], "cpu.shares") == "1024"


def test_realtime_cpu(cg):
    m = cg()
    m.set({"cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 1000}})
    assert read(m.v1["cpu"], "cpu.rt_runtime_us") == "1000"
    assert read(m.v1["cpu"], "cpu.rt_period_us") == "1000000"
    # nested: the parents create() made get just the share the leaf needs
    n = cg("{name}/a/b")
    n.set({"cpu": {"realtimePeriod": 100000, "realtimeRuntime": 5000}})
    assert read(n.v1["cpu"], "cpu.rt_runtime_us") == "5000"
    assert read(os.path.dirname(n.v1["cpu"]), "cpu.rt_runtime_us") == "50000"
    assert read(os.path.dirname(os.path.dirname(n.v1["cpu"])), "cpu.rt_runtime_us") == "50000"
    with pytest.raises(OCIError, match=r"linux.resources.cpu.realtimeRuntime: cannot set "
                                       r"2000000: invalid argument"):
        m.set({"cpu": {"realtimeRuntime": 2000000}})


def test_cpuset_is_filled_from_parent(cg, procs):
    m = cg("{name}/a/b")
    for d in (m.v1["cpuset"], os.path.dirname(m.v1["cpuset"])):
        assert read(d, "cpuset.cpus") != ""
        assert read(d, "cpuset.mems") != ""
    p = procs.sleeper()
    m.add(p.pid)  # an empty cpuset would refuse the task


def test_memory_limit_below_usage_is_an_error(cg, procs):
    m = cg()
    # The shell allocates after it joins, so its pages are charged to the cgroup.
    # ~1.3 MB of anonymous memory held in a shell variable: nothing to reclaim it to (the
    # trailing command keeps ash from exec'ing sleep, which would drop the variable)
    p = procs.gated("x=$(busybox seq 1 200000); echo held; sleep 1000; echo ${#x}")
    m.add(p.pid)
    go(p)
    assert p.stdout.readline() == b"held\n"
    deadline = time.monotonic() + 20
    while int(read(m.v1["memory"], "memory.usage_in_bytes")) < 1_000_000:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(OCIError, match=r"linux.resources.memory.limit: cannot set 4096: "
                                       r"device or resource busy"):
        m.set({"memory": {"limit": 4096}})


@pytest.mark.parametrize("res, match", [
    ({"memory": {"swappiness": 101}}, r"linux.resources.memory.swappiness: 101 is outside"),
    ({"memory": {"limit": "1G"}}, r"linux.resources.memory.limit: '1G' is not an integer"),
    ({"memory": {"limit": 64 << 20, "swap": 32 << 20}},
     r"linux.resources.memory.(swap|limit): cannot set \d+: invalid argument"),
    ({"memory": {"kernel": 64 << 20}}, r"linux.resources.memory.kernel: .*kmem"),
    ({"cpu": {"cpus": "0-63"}},
     r"linux.resources.cpu.cpus: cannot set 0-63: (invalid argument|numerical result out "
     r"of range).*online CPUs are"),
    ({"cpu": {"mems": "7"}}, r"linux.resources.cpu.mems: cannot set 7: invalid argument.*memory nodes are 0"),
    ({"cpu": {"shares": 1 << 20}}, r"linux.resources.cpu.shares: cannot set 1048576: the "
                                   r"maximum allowed is 262144"),
    ({"cpu": {"quota": 10}}, r"linux.resources.cpu.quota: cannot set 10: invalid argument"),
    ({"cpu": {"period": 10}}, r"linux.resources.cpu.period: cannot set 10: invalid argument"),
    ({"pids": {"limit": "many"}}, r"linux.resources.pids.limit: 'many' is not an integer"),
    ({"blockIO": {"weight": 5000}}, r"linux.resources.blockIO.weight: cannot set 5000"),
    ({"blockIO": {"leafWeight": 500}}, r"linux.resources.blockIO.leafWeight: this host has no "
                                       r"blkio.leaf_weight"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 9999, "minor": 0, "rate": 1}]}},
     r"linux.resources.blockIO.throttleReadBpsDevice\[0\]: cannot set 9999:0 1"),
    ({"hugepageLimits": [{"pageSize": "3MB", "limit": 0}]},
     r"linux.resources.hugepageLimits\[0\].pageSize: this host has no 3MB huge pages"),
    ({"network": {"classID": 1}},
     r"linux.resources.network.classID: the net_cls controller is not available"),
    ({"network": {"priorities": [{"name": "lo", "priority": 1}]}},
     r"linux.resources.network.priorities: the net_prio controller is not available"),
    ({"unified": {"memory.nonesuch": "1"}},
     r"linux.resources.unified.memory.nonesuch: this host's cgroup v2 has no memory.nonesuch"),
    ({"rdma": {"mlx5_1": {"hcaHandles": 3}}},
     r"linux.resources.rdma: the rdma controller is not available"),
    ({"unified": {"../x": "1"}}, r"linux.resources.unified.../x: not a cgroup file name"),
    ({"devices": [{"allow": True, "type": "q", "access": "rwm"}]},
     r"linux.resources.devices\[0\].type: 'q' is not one of"),
    ({"devices": [{"allow": True, "type": "c", "access": "x"}]},
     r"linux.resources.devices\[0\].access: 'x'"),
    ({"devices": [{"allow": True, "type": "c", "major": "1"}]},
     r"linux.resources.devices\[0\].major: '1' is not a device number"),
])
def test_bad_values_name_the_field(cg, res, match):
    v1, v2 = paths.mounts()
    if "network" in res and any(c in v1 for c in ("net_cls", "net_prio")):
        pytest.skip("this host has net_cls/net_prio mounted")
    if "rdma" in res and ("rdma" in v1 or v2 and "rdma" in open(
            v2[0] + "/cgroup.controllers").read().split()):
        pytest.skip("this host has the rdma controller")
    if "weight" in res.get("blockIO", {}) and not BLKIO_WEIGHT:
        pytest.skip(NO_WEIGHT)
    m = cg()
    with pytest.raises(OCIError, match=match) as info:
        m.set(res)
    assert "\n" not in str(info.value)


def test_blkio_weight_and_throttle(cg):
    m = cg()
    with open("/sys/block/loop0/dev") as f:
        major, minor = (int(x) for x in f.read().split(":"))
    blkio = {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
             "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]}
    if BLKIO_WEIGHT:
        blkio["weight"] = 300
    m.set({"blockIO": blkio})
    d = m.v1["blkio"]
    if BLKIO_WEIGHT:
        assert read(d, BLKIO_WEIGHT).split()[-1] == "300"
    assert read(d, "blkio.throttle.read_bps_device") == f"{major}:{minor} 1048576"
    assert read(d, "blkio.throttle.write_iops_device") == f"{major}:{minor} 100"


def test_kernel_tcp_memory_where_the_kernel_has_it(cg):
    m = cg()
    name = "memory.kmem.tcp.limit_in_bytes"
    if not os.path.exists(f"{m.v1['memory']}/{name}"):
        with pytest.raises(OCIError, match="linux.resources.memory.kernelTCP"):
            m.set({"memory": {"kernelTCP": 64 << 20}})
        return
    m.set({"memory": {"kernelTCP": 64 << 20}})
    assert read(m.v1["memory"], name) == str(64 << 20)


def test_freeze_and_thaw_a_running_process(cg, procs):
    m = cg()
    p = procs.gated("while :; do :; done")
    m.add(p.pid)
    go(p)
    time.sleep(0.05)
    assert m.state() == "thawed"
    m.freeze()
    assert m.state() == "frozen"
    assert read(m.v1["freezer"], "freezer.state") == "FROZEN"

    def cpu_ticks():
        with open(f"/proc/{p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    t0 = cpu_ticks()
    time.sleep(0.3)
    assert cpu_ticks() == t0  # a frozen spinner does not run
    m.thaw()
    assert m.state() == "thawed"
    assert read(m.v1["freezer"], "freezer.state") == "THAWED"
    time.sleep(0.3)
    assert cpu_ticks() > t0


def test_pids_lists_forked_children_and_sub_cgroups(cg, procs):
    m = cg()
    p = procs.gated("sleep 1000 & sleep 1000 & wait")
    m.add(p.pid)
    go(p)
    deadline = time.monotonic() + 5
    while len(m.pids()) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    q = procs.sleeper()
    sub = m.v1["pids"] + "/nested"
    os.mkdir(sub)
    with open(sub + "/cgroup.procs", "w") as f:
        f.write(str(q.pid))
    got = set(m.pids())
    assert p.pid in got and q.pid in got and len(got) == 4
    children = {int(x) for x in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()}
    assert children <= got and len(children) == 2


# Devices outside runc's default allowed set (which set() always appends, as runc does).
OPEN_LOOP0 = "busybox dd if=/dev/loop0 of=/dev/null count=0 2>&1 && echo LOOP0"
OPEN_KMSG_W = "busybox dd if=/dev/zero of=/dev/kmsg count=0 2>&1 && echo KMSG"
OPEN_NULL_W = "busybox dd if=/dev/zero of=/dev/null count=1 2>&1 && echo NULL"


def test_devices_rules_are_enforced(cg, procs):
    m = cg()
    p = procs.gated(f"{OPEN_LOOP0}; {OPEN_KMSG_W}; {OPEN_NULL_W}")
    m.add(p.pid)
    m.set({"devices": [{"allow": False, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"}]})
    lines = read(m.v1["devices"], "devices.list").splitlines()
    assert "c 1:11 r" in lines and "a *:* rwm" not in lines
    assert "c 1:3 rwm" in lines and "c 136:* rwm" in lines  # runc's defaults follow
    go(p)
    out = p.communicate(timeout=10)[0].decode()
    assert "LOOP0" not in out and "KMSG" not in out and "NULL" in out
    assert out.count("Operation not permitted") == 2
    # allow loop0 for reading and kmsg rw, then take kmsg's write away again: in order
    m2 = cg()
    p2 = procs.gated(f"{OPEN_LOOP0}; {OPEN_KMSG_W}")
    m2.add(p2.pid)
    m2.set({"devices": [{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"},
                        {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "rw"},
                        {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "w"}]})
    lines = read(m2.v1["devices"], "devices.list").splitlines()
    assert "b 7:0 r" in lines and "c 1:11 r" in lines
    go(p2)
    out = p2.communicate(timeout=10)[0].decode()
    assert "LOOP0" in out and "KMSG" not in out


def test_stats_are_shaped_like_runc_events(cg, procs):
    m = cg()
    p = procs.gated("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000 & "
                    "echo ok; wait")
    m.add(p.pid)
    m.set({"pids": {"limit": 10}, "memory": {"limit": 100 << 20}})
    go(p)
    assert p.stdout.readline() == b"ok\n"
    s = m.stats()
    assert s["cpu"]["usage"]["total"] > 0
    assert len(s["cpu"]["usage"]["percpu"]) == os.cpu_count()
    assert s["cpu"]["usage"]["user"] + s["cpu"]["usage"]["kernel"] > 0
    assert set(s["cpu"]["throttling"]) == {"periods", "throttledPeriods", "throttledTime"}
    assert s["cpuset"]["cpus"] == list(range(os.cpu_count())) and s["cpuset"]["mems"] == [0]
    assert set(s) == {"cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt",
                      "network_interfaces"}  # runc's types.Stats
    assert s["memory"]["usage"]["usage"] > 0 and s["memory"]["usage"]["limit"] == 100 << 20
    assert s["memory"]["usage"]["max"] >= s["memory"]["usage"]["usage"]
    assert "failcnt" in s["memory"]["usage"] and "cache" in s["memory"]
    assert s["pids"] == {"current": 2, "limit": 10}
    assert isinstance(s["blkio"]["ioServiceBytesRecursive"], list)
    assert isinstance(s["hugetlb"], dict)


def test_state_round_trip_drives_a_live_cgroup(cg, procs):
    m = cg()
    p = procs.sleeper()
    m.add(p.pid)
    import json
    m2 = Manager.from_state(json.loads(json.dumps(m.to_state())))
    assert m2.pids() == [p.pid]
    m2.set({"pids": {"limit": 7}})
    assert read(m.v1["pids"], "pids.max") == "7"
    m2.freeze()
    assert m.state() == "frozen"
    m2.thaw()
    with pytest.raises(OCIError, match="cgroup state version"):
        Manager.from_state({"version": 99})


def test_hugetlb_limits_use_whichever_hierarchy_has_hugetlb(cg, procs):
    from pyrunc.cgroups.stats import hugepage_sizes
    sizes = hugepage_sizes()
    m = cg("{name}/nested")  # every level of the v2 path must enable hugetlb
    if not sizes or ("hugetlb" not in m.v1 and not m.v2):
        with pytest.raises(OCIError, match="linux.resources.hugepageLimits"):
            m.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}]})
        return
    p = procs.sleeper()
    m.add(p.pid)
    limits = [{"pageSize": s, "limit": (i + 1) << 30} for i, s in enumerate(sizes)]
    m.set({"hugepageLimits": limits})
    for lim in limits:
        if "hugetlb" in m.v1:
            got = read(m.v1["hugetlb"], f"hugetlb.{lim['pageSize']}.limit_in_bytes")
        else:  # hybrid: hugetlb sits on the cgroup2 mount (where crun 1.8 gives up)
            got = read(m.v2, f"hugetlb.{lim['pageSize']}.max")
        assert int(got) == lim["limit"]
    st = m.stats()["hugetlb"]
    assert set(st) == set(sizes) and all(v["usage"] == 0 for v in st.values())


def v2_only_manager(name):
    """The v2 driver on this host's cgroup2 mount, as on a pure v2 host (where the v1
    controllers are bound elsewhere, so v2 only has what its cgroup.controllers lists)."""
    mount = paths.mounts()[1][0]
    return Manager("v2", {}, f"{mount}/{name}", mount)


def test_v2_driver_freeze_pids_unified_and_missing_controllers(procs):
    if not paths.mounts()[1]:
        pytest.skip("host has no cgroup2 mount")
    name = unique("v2")
    m = v2_only_manager(name)
    m.create()
    try:
        p = procs.gated("sleep 1000 & while :; do :; done")
        m.add(p.pid)
        go(p)
        deadline = time.monotonic() + 5
        while len(m.pids()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        m.freeze()
        assert m.state() == "frozen"
        assert "frozen 1" in read(m.v2, "cgroup.events")
        m.thaw()
        assert m.state() == "thawed" and "frozen 0" in read(m.v2, "cgroup.events")
        ctrls = set(read(m.v2, "cgroup.controllers").split())
        if "memory" not in ctrls:
            with pytest.raises(OCIError, match="linux.resources.memory: the memory controller "
                                               "is not available on this host"):
                m.set({"memory": {"limit": 1 << 30}})
        m.set({"unified": {"cgroup.max.descendants": "5"}})
        assert read(m.v2, "cgroup.max.descendants") == "5"
        s = Manager.from_state(m.to_state()).stats()
        assert s["cpu"]["usage"]["total"] > 0  # from cpu.stat, which v2 always has
        procs.kill_all()
        for pid in m.pids():
            os.kill(pid, 9)
    finally:
        procs.kill_all()
        for pid in m.pids():
            os.kill(pid, 9)
        m.destroy()
    assert leftovers(name) == []


def test_v2_value_conversions():
    from pyrunc.cgroups import fs2
    assert fs2.shares_to_weight(2) == 1
    assert fs2.shares_to_weight(1024) == 39
    assert fs2.shares_to_weight(262144) == 10000
    assert fs2.blkio_to_io_weight(10) == 1 and fs2.blkio_to_io_weight(1000) == 10000
    assert fs2.swap_max(None, 100) is None
    assert fs2.swap_max(300, 100) == 200
    assert fs2.swap_max(-1, 100) == -1
    assert fs2.swap_max(None, -1) == -1
    with pytest.raises(OCIError, match="linux.resources.memory.swap"):
        fs2.swap_max(50, 100)
    with pytest.raises(OCIError, match="linux.resources.memory.swap"):
        fs2.swap_max(50, None)


def test_v2_devices_ebpf_program_is_enforced(procs):
    """On v2 the rules become a BPF cgroup-device program; the kernel runs it for a task in
    this host's cgroup2 tree as on a pure v2 host."""
    if not paths.mounts()[1]:
        pytest.skip("host has no cgroup2 mount")
    from pyrunc.cgroups import ebpf
    name = unique("bpf")
    m = v2_only_manager(name)
    m.create()
    script = f"{OPEN_LOOP0}; {OPEN_KMSG_W}; {OPEN_NULL_W}"
    try:
        m.set({"devices": [{"allow": False, "access": "rwm"},
                           {"allow": True, "type": "b", "major": 7, "minor": 0,
                            "access": "r"}]})
        p = procs.gated(script)
        m.add(p.pid)
        go(p)
        out = p.communicate(timeout=10)[0].decode()
        assert "LOOP0" in out and "KMSG" not in out and "NULL" in out  # null: a default
        assert "can't open '/dev/kmsg': Operation not permitted" in out
        # an update replaces the program: kmsg writable, loop0 (7:*) denied by a later rule
        m.set({"devices": [{"allow": True, "type": "a", "access": "rwm"},
                           {"allow": False, "type": "b", "major": 7, "access": "rwm"}]})
        fd = os.open(m.v2, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert len(ebpf.attached(fd)) == 1
        finally:
            os.close(fd)
        p = procs.gated(script)
        m.add(p.pid)
        go(p)
        out = p.communicate(timeout=10)[0].decode()
        assert "LOOP0" not in out and "KMSG" in out and "NULL" in out
        assert "can't open '/dev/loop0': Operation not permitted" in out
    finally:
        procs.kill_all()
        m.destroy()
    assert leftovers(name) == []


def test_linux_devices_nodes_get_only_what_resources_allow(cg, procs):
    """As runc 1.1: a linux.devices node is not allowed by itself (conformance's
    linux_cgroups_devices checks exactly this)."""
    from pyrunc.cgroups import create_resources
    linux = {"resources": {"devices": [{"allow": False, "access": "rwm"},
                                       {"allow": True, "type": "b", "major": 7, "minor": 0,
                                        "access": "r"}],
                           "pids": {"limit": 9}},
             "devices": [{"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0},
                         {"path": "/dev/loop1", "type": "b", "major": 7, "minor": 1}]}
    res = create_resources(linux)
    assert res == linux["resources"] and res is not linux["resources"]
    m = cg()
    p = procs.gated("busybox dd if=/dev/loop1 of=/dev/null count=0 2>&1 && echo LOOP1; "
                    f"{OPEN_LOOP0}")
    m.add(p.pid)
    m.set(res)
    listed = read(m.v1["devices"], "devices.list").splitlines()
    assert "b 7:0 r" in listed and "c 1:3 rwm" in listed and "c 136:* rwm" in listed
    assert "a *:* rwm" not in listed and not any(x.startswith("b 7:1") for x in listed)
    go(p)
    out = p.communicate(timeout=10)[0].decode()
    assert "LOOP0" in out and "LOOP1" not in out and "Operation not permitted" in out
    with pytest.raises(OCIError, match=r"linux.devices\[0\].type"):
        create_resources({"devices": [{"type": "x"}]})


def test_destroy_of_a_frozen_cgroup_with_killed_tasks(procs):
    name = unique()
    m = Manager.for_container(name, f"/{name}")
    m.create()
    p = procs.sleeper()
    m.add(p.pid)
    m.freeze()
    os.kill(p.pid, 9)  # delete -f of a paused container: the task cannot exit while frozen
    m.destroy()
    assert p.wait(timeout=5) == -9
    assert leftovers(name) == []


def test_oom_kills_are_counted(cg, procs):
    m = cg()
    m.set({"memory": {"limit": 8 << 20, "swap": 8 << 20}})
    assert m.oom_kills() == 0
    # a shell that grows a string past the limit is OOM-killed in the cgroup
    p = procs.gated("x=y; while :; do x=$x$x; done")
    m.add(p.pid)
    go(p)
    assert p.wait(timeout=20) == -9
    assert m.oom_kills() >= 1
    mem = m.stats()["memory"]
    assert mem["usage"]["max"] == mem["usage"]["limit"] == 8 << 20  # it hit the limit


def test_unified_keys_go_to_the_cgroup2_directory(cg):
    m = cg("{name}/nested")
    if not m.v2:
        with pytest.raises(OCIError, match="linux.resources.unified"):
            m.set({"unified": {"pids.max": "5"}})
        return
    m.set({"unified": {"cgroup.max.descendants": "3", "cgroup.max.depth": "2"}})
    assert read(m.v2, "cgroup.max.descendants") == "3"
    assert read(m.v2, "cgroup.max.depth") == "2"
    if "hugetlb" in read(paths.mounts()[1][0], "cgroup.controllers").split():
        # a controller's file appears once the parents enable it: set() does that
        m.set({"unified": {"hugetlb.2MB.max": str(4 << 20)}})
        assert read(m.v2, "hugetlb.2MB.max") == str(4 << 20)
