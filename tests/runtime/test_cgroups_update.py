"""`pyrunc update` flags and `pyrunc features` facts, applied to a real cgroup."""

import pytest

from cgroup_helpers import cg, procs  # noqa: F401
from ocispec.errors import OCIError
from pyrunc.cgroups import host_facts, paths, resources_from_update_flags
from pyrunc.cgroups.update import ram_in_bytes


def read(d, name):
    with open(f"{d}/{name}") as f:
        return f.read().strip()


@pytest.mark.parametrize("text, value", [
    ("10M", 10 << 20), ("10m", 10 << 20), ("10MB", 10 << 20), ("10MiB", 10 << 20),
    ("512k", 512 << 10), ("1g", 1 << 30), ("1.5G", 3 << 29), ("4096", 4096), ("2 T", 2 << 40),
    ("100b", 100),
])
def test_memory_sizes_use_runc_syntax(text, value):
    assert ram_in_bytes(text) == value


def test_update_flags_map_to_resources():
    r = resources_from_update_flags(
        memory="10M", memory_reservation="5M", memory_swap="-1", kernel_memory=None,
        kernel_memory_tcp="", cpu_shares="512", cpu_quota="-1", cpu_period=100000,
        cpu_rt_runtime="1000", cpu_rt_period="1000000", cpuset_cpus="0", cpuset_mems="0",
        pids_limit="20", blkio_weight="300")
    assert r == {"memory": {"limit": 10 << 20, "reservation": 5 << 20, "swap": -1},
                 "cpu": {"shares": 512, "quota": -1, "period": 100000,
                         "realtimeRuntime": 1000, "realtimePeriod": 1000000,
                         "cpus": "0", "mems": "0"},
                 "pids": {"limit": 20}, "blockIO": {"weight": 300}}
    assert resources_from_update_flags() == {}
    assert resources_from_update_flags(**{"kernel-memory-tcp": "1M"}) == \
        {"memory": {"kernelTCP": 1 << 20}}


@pytest.mark.parametrize("flags, match", [
    ({"memory": "ten"}, r"--memory: 'ten'"),
    ({"cpu_shares": "-5"}, r"--cpu-shares: '-5'"),
    ({"blkio_weight": "70000"}, r"--blkio-weight: '70000'"),
    ({"pids_limit": "x"}, r"--pids-limit: 'x'"),
    ({"nonesuch": "1"}, r"unknown flag --nonesuch"),
])
def test_bad_update_flags(flags, match):
    with pytest.raises(OCIError, match="update: .*" + match):
        resources_from_update_flags(**flags)


def test_update_flags_apply_to_a_live_cgroup(cg, procs):
    m = cg()
    p = procs.sleeper()
    m.add(p.pid)
    m.set({"memory": {"limit": 64 << 20, "swap": 64 << 20}, "pids": {"limit": 5}})
    # growing memory past the old memsw needs memsw written first: the manager orders it
    m.set(resources_from_update_flags(memory="200M", memory_swap="300M", pids_limit="9",
                                      cpu_quota="30000", cpu_period="60000"))
    assert read(m.v1["memory"], "memory.limit_in_bytes") == str(200 << 20)
    assert read(m.v1["memory"], "memory.memsw.limit_in_bytes") == str(300 << 20)
    assert read(m.v1["pids"], "pids.max") == "9"
    assert read(m.v1["cpu"], "cpu.cfs_quota_us") == "30000"
    assert read(m.v1["cpu"], "cpu.cfs_period_us") == "60000"


def test_host_facts_describe_this_host():
    f = host_facts()
    v1, v2 = paths.mounts()
    assert f["layout"] == paths.layout()
    assert set(f["v1_controllers"]) == {c for c in v1 if not c.startswith("name=")}
    if v2:
        assert f["v2_controllers"] == sorted(read(v2[0], "cgroup.controllers").split())
    assert f["v1"] == bool(v1) and f["v2"] == bool(v2)
    assert f["devices"] in ("v1", "ebpf")
    assert f["features"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                             "rdma": True}


@pytest.mark.parametrize("res, match", [
    ({"memory": {"limit": "1G"}}, r"config.json: linux.resources.memory.limit: '1G' is not"),
    ({"memory": {"swappiness": 200}}, r"linux.resources.memory.swappiness: 200 is outside"),
    ({"memory": {"limit": 100, "swap": 50}}, r"linux.resources.memory.swap: 50 is below"),
    ({"memory": {"disableOOMKiller": 1}}, r"linux.resources.memory.disableOOMKiller: 1 is not"),
    ({"cpu": {"cpus": 3}}, r"linux.resources.cpu.cpus: 3 is not a string"),
    ({"cpu": {"quota": 1.5}}, r"linux.resources.cpu.quota: 1.5 is not an integer"),
    ({"pids": "x"}, r"linux.resources.pids: must be an object"),
    ({"blockIO": {"weightDevice": [{"major": 8}]}},
     r"linux.resources.blockIO.weightDevice\[0\]: needs integer major and minor"),
    ({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]},
     r"linux.resources.hugepageLimits\[0\].pageSize: this host has no 3MB huge pages"),
    ({"hugepageLimits": [{"limit": 1}]}, r"linux.resources.hugepageLimits\[0\].pageSize"),
    ({"network": {"priorities": [{"name": "eth0"}]}},
     r"linux.resources.network.priorities\[0\]: needs a name and an integer priority"),
    ({"unified": {"a/b": "1"}}, r"linux.resources.unified.a/b: needs a cgroup file name"),
    ({"unified": {"pids.max": 5}}, r"linux.resources.unified.pids.max: needs a cgroup file"),
    ({"devices": [{"allow": "yes"}]}, r"linux.resources.devices\[0\].allow: must be true"),
    ({"devices": {}}, r"linux.resources.devices: must be a list"),
])
def test_validate_resources_names_the_field(res, match):
    from ocispec.errors import SpecError
    from pyrunc.cgroups import validate_resources
    with pytest.raises(SpecError, match=match):
        validate_resources(res)


def test_validate_resources_refuses_missing_controllers_only_on_such_hosts():
    from ocispec.errors import SpecError
    from pyrunc.cgroups import validate_resources
    v1, _ = paths.mounts()
    res = {"network": {"classID": 1048577}}
    validate_resources(res, host=False)
    if "net_cls" in v1:
        validate_resources(res)
    else:
        with pytest.raises(SpecError, match="linux.resources.network.classID: the net_cls "
                                            "controller is not available on this host"):
            validate_resources(res)
    validate_resources({"memory": {"limit": 1 << 30, "swap": -1, "swappiness": -1},
                        "cpu": {"shares": 2, "cpus": "0"}, "pids": {"limit": 1},
                        "devices": [{"allow": False, "access": "rwm"}],
                        "unified": {"pids.max": "5"}})
