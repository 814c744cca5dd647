"""ocispec.runtime_config: every rule, with a good and a bad document and the exact path."""
import copy
import json
import statistics
import subprocess
import time

import pytest

from ocispec.errors import SpecError
from ocispec.runtime_config import validate_config, validate_state


@pytest.fixture(scope="module")
def runc_spec(tmp_path_factory):
    d = tmp_path_factory.mktemp("ocispec-runcspec")
    subprocess.run(["runc", "spec"], cwd=d, check=True)
    return json.loads((d / "config.json").read_text())


def _set(doc, path, value):
    """Set doc[a][b][0]... from 'a.b.0'; value _DEL removes the key."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    cur = doc
    for k in keys[:-1]:
        if isinstance(k, str) and k not in cur:
            cur[k] = {}
        cur = cur[k]
    if value is _DEL:
        del cur[keys[-1]]
    else:
        cur[keys[-1]] = value


_DEL = object()
USERNS = {"linux.namespaces": [{"type": "user"}, {"type": "mount"}, {"type": "pid"}, {"type": "uts"}],
          "linux.uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
          "linux.gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}

# (id, {path: value} applied to the runc spec config, expected message or None for valid)
CASES = [
    ("ociVersion-ok", {"ociVersion": "1.2.0"}, None),
    ("ociVersion-missing", {"ociVersion": _DEL}, "ociVersion: required string is missing"),
    ("ociVersion-bad", {"ociVersion": "2.0.0"}, 'ociVersion: "2.0.0" is not a runtime-spec 1.x version'),
    ("ociVersion-type", {"ociVersion": 1}, "ociVersion: must be a string, not integer"),
    ("root-missing", {"root": _DEL}, "root: required object is missing"),
    ("root-path-missing", {"root.path": _DEL}, "root.path: required string is missing"),
    ("root-path-empty", {"root.path": ""}, "root.path: must not be empty"),
    ("root-readonly-type", {"root.readonly": "yes"}, "root.readonly: must be a boolean, not string"),
    ("unknown-props-ignored", {"vendorThing": {"x": 1}, "process.madeUp": 3, "linux.extra": []}, None),
    ("annotations-ok", {"annotations": {"a": "b"}}, None),
    ("annotations-bad", {"annotations": {"a": 1}}, "annotations.a: must be a string, not integer"),
    ("process-absent-ok", {"process": _DEL}, None),
    ("args-empty", {"process.args": []}, "process.args: must not be empty"),
    ("args-type", {"process.args": ["sh", 1]}, "process.args[1]: must be a string, not integer"),
    ("cwd-relative", {"process.cwd": "tmp"}, "process.cwd: 'tmp' must be an absolute path"),
    ("cwd-missing", {"process.cwd": _DEL}, "process.cwd: required string is missing"),
    ("env-bad", {"process.env": ["PATH=/bin", "NOEQUALS"]}, 'process.env[1]: "NOEQUALS" is not KEY=value'),
    ("terminal-type", {"process.terminal": 1}, "process.terminal: must be a boolean, not integer"),
    ("consoleSize-ok", {"process.consoleSize": {"height": 24, "width": 80}}, None),
    ("consoleSize-bad", {"process.consoleSize": {"height": -1, "width": 80}},
     "process.consoleSize.height: -1 is out of range for uint32"),
    ("uid-type", {"process.user.uid": "0"}, "process.user.uid: must be an uint32, not string"),
    ("gid-missing", {"process.user.gid": _DEL}, "process.user.gid: required uint32 is missing"),
    ("uid-float", {"process.user.uid": 1.5}, "process.user.uid: must be an uint32, not number"),
    ("additionalGids-ok", {"process.user.additionalGids": [1, 2], "process.user.umask": 18}, None),
    ("additionalGids-bad", {"process.user.additionalGids": [1, "x"]},
     "process.user.additionalGids[1]: must be an uint32, not string"),
    ("cap-unknown-bounding", {"process.capabilities.bounding": ["CAP_KILL", "CAP_FOO"]},
     'process.capabilities.bounding[1]: unknown capability "CAP_FOO"'),
    ("cap-unknown-inheritable", {"process.capabilities.inheritable": ["CAP_NOPE"]},
     'process.capabilities.inheritable[0]: unknown capability "CAP_NOPE"'),
    ("cap-unknown-effective", {"process.capabilities.effective": ["KILL"]},
     'process.capabilities.effective[0]: unknown capability "KILL"'),
    ("cap-unknown-permitted", {"process.capabilities.permitted": ["CAP_X"]},
     'process.capabilities.permitted[0]: unknown capability "CAP_X"'),
    ("cap-unknown-ambient", {"process.capabilities.ambient": ["CAP_Y"]},
     'process.capabilities.ambient[0]: unknown capability "CAP_Y"'),
    ("rlimit-unknown", {"process.rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1},
                                            {"type": "RLIMIT_CORE", "soft": 1, "hard": 1},
                                            {"type": "RLIMIT_FOO", "soft": 1, "hard": 1}]},
     'config.json: process.rlimits[2].type: unknown rlimit "RLIMIT_FOO"'),
    ("rlimit-dup", {"process.rlimits": [{"type": "RLIMIT_CORE", "soft": 1, "hard": 1},
                                        {"type": "RLIMIT_CORE", "soft": 1, "hard": 1}]},
     'process.rlimits[1].type: duplicate rlimit "RLIMIT_CORE"'),
    ("rlimit-soft-gt-hard", {"process.rlimits": [{"type": "RLIMIT_CORE", "soft": 2, "hard": 1}]},
     "process.rlimits[0].soft: soft limit 2 exceeds hard limit 1"),
    ("rlimit-hard-missing", {"process.rlimits": [{"type": "RLIMIT_CORE", "soft": 2}]},
     "process.rlimits[0].hard: required uint64 is missing"),
    ("oom-ok", {"process.oomScoreAdj": -1000}, None),
    ("oom-range", {"process.oomScoreAdj": 1001}, "process.oomScoreAdj: 1001 is out of range"),
    ("nnp-type", {"process.noNewPrivileges": "true"}, "process.noNewPrivileges: must be a boolean"),
    ("sched-ok", {"process.scheduler": {"policy": "SCHED_BATCH", "nice": 5, "flags": ["SCHED_FLAG_RECLAIM"]}}, None),
    ("sched-policy", {"process.scheduler": {"policy": "SCHED_FAST"}},
     'process.scheduler.policy: unknown scheduler policy "SCHED_FAST"'),
    ("sched-flag", {"process.scheduler": {"policy": "SCHED_OTHER", "flags": ["X"]}},
     'process.scheduler.flags[0]: unknown scheduler flag "X"'),
    ("ioprio-ok", {"process.ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4}}, None),
    ("ioprio-class", {"process.ioPriority": {"class": "IOPRIO_CLASS_NONE", "priority": 0}},
     'process.ioPriority.class: unknown ioprio class "IOPRIO_CLASS_NONE"'),
    ("ioprio-prio", {"process.ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 8}},
     "process.ioPriority.priority: 8 is out of range"),
    ("mount-dest-missing", {"mounts.1.destination": _DEL}, "mounts[1].destination: required string is missing"),
    ("mount-dest-empty", {"mounts.0.destination": ""}, "mounts[0].destination: must be a non-empty path"),
    ("mount-options-type", {"mounts.2.options": ["nosuid", 5]}, "mounts[2].options[1]: must be a string, not integer"),
    ("mount-option-comma", {"mounts.2.options": ["nosuid,nodev"]}, 'mounts[2].options[0]: invalid mount option "nosuid,nodev"'),
    ("mount-bind-ok", {"mounts.7": {"destination": "/data", "type": "bind", "source": "/tmp",
                                    "options": ["rbind", "rprivate", "ro", "rro"]}}, None),
    ("mount-bind-no-source", {"mounts.7": {"destination": "/data", "type": "none", "options": ["bind"]}},
     "mounts[7].source: a bind mount needs a source"),
    ("mount-idmap-not-bind", {"mounts.0.options": ["idmap"]}, "mounts[0].options: idmap is only supported on bind mounts"),
    ("mount-mapping-bad", {"mounts.7": {"destination": "/d", "type": "bind", "source": "/tmp",
                                        "uidMappings": [{"containerID": 0, "hostID": 1}]}},
     "mounts[7].uidMappings[0].size: required uint32 is missing"),
    ("hooks-ok", {"hooks": {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 5}],
                            "poststop": [{"path": "/bin/true"}]}}, None),
    ("hook-path-relative", {"hooks": {"createRuntime": [{"path": "bin/true"}]}},
     "hooks.createRuntime[0].path: 'bin/true' must be an absolute path"),
    ("hook-path-missing", {"hooks": {"poststart": [{"args": []}]}}, "hooks.poststart[0].path: required string is missing"),
    ("hook-timeout-zero", {"hooks": {"startContainer": [{"path": "/x", "timeout": 0}]}},
     "hooks.startContainer[0].timeout: 0 is out of range"),
    ("hook-env-type", {"hooks": {"createContainer": [{"path": "/x", "env": [1]}]}},
     "hooks.createContainer[0].env[0]: must be a string"),
    ("ns-unknown", {"linux.namespaces.1": {"type": "net"}}, 'linux.namespaces[1].type: unknown namespace type "net"'),
    ("ns-dup", {"linux.namespaces.1": {"type": "pid"}}, 'linux.namespaces[1].type: duplicate namespace "pid"'),
    ("ns-path-relative", {"linux.namespaces.1": {"type": "network", "path": "proc/1/ns/net"}},
     "linux.namespaces[1].path: 'proc/1/ns/net' must be an absolute path"),
    ("ns-empty-path-is-new", {"linux.namespaces.1": {"type": "network", "path": ""}, "linux.netDevices": {"e": {}}}, None),
    ("userns-ok", USERNS, None),
    ("mapping-without-userns", {"linux.uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]},
     'linux.uidMappings: mappings need a user namespace'),
    ("userns-without-mapping", {**USERNS, "linux.gidMappings": []},
     "linux.gidMappings: a new user namespace needs uidMappings and gidMappings"),
    ("mapping-type", {**USERNS, "linux.uidMappings": [{"containerID": 0, "hostID": -1, "size": 1}]},
     "linux.uidMappings[0].hostID: -1 is out of range for uint32"),
    ("time-ok", {"linux.namespaces.5": {"type": "time"}, "linux.timeOffsets": {"monotonic": {"secs": 10, "nanosecs": 5}}}, None),
    ("time-without-ns", {"linux.timeOffsets": {"boottime": {"secs": 1}}},
     "linux.timeOffsets: time offsets need a time namespace"),
    ("time-clock", {"linux.namespaces.5": {"type": "time"}, "linux.timeOffsets": {"realtime": {"secs": 1}}},
     'linux.timeOffsets.realtime: unknown clock "realtime"'),
    ("sysctl-ok", {"linux.sysctl": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "fs.mqueue.msg_max": "10"}}, None),
    ("sysctl-net-hostns", {"linux.namespaces": [{"type": "mount"}, {"type": "uts"}], "linux.sysctl": {"net.core.somaxconn": "1"}},
     'linux.sysctl.net.core.somaxconn: sysctl is not allowed in the host\'s network namespace'),
    ("sysctl-ipc-hostns", {"linux.namespaces": [{"type": "mount"}, {"type": "uts"}], "linux.sysctl": {"kernel.msgmax": "1"}},
     "linux.sysctl.kernel.msgmax: sysctl is not allowed in the host's ipc namespace"),
    ("sysctl-not-namespaced", {"linux.sysctl": {"vm.swappiness": "1"}},
     "linux.sysctl.vm.swappiness: sysctl is not namespaced"),
    ("sysctl-value-type", {"linux.sysctl": {"net.ipv4.ip_forward": 1}}, "linux.sysctl.net.ipv4.ip_forward: must be a string"),
    ("hostname-without-uts", {"linux.namespaces": [{"type": "mount"}]}, "hostname: setting the hostname needs a UTS namespace"),
    ("netdevices-ok", {"linux.netDevices": {"eth9": {"name": "eth0"}}}, None),
    ("netdevices-hostns", {"linux.namespaces.1": {"type": "cgroup"}, "linux.netDevices": {"eth9": {}}},
     "linux.netDevices: moving network devices needs a new network namespace"),
    ("netdevices-joined-ns", {"linux.namespaces.1": {"type": "network", "path": "/proc/1/ns/net"},
                              "linux.netDevices": {"eth9": {}}}, "linux.netDevices: moving network devices needs a new"),
    ("device-ok", {"linux.devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 438}]}, None),
    ("device-type", {"linux.devices": [{"type": "x", "path": "/dev/x", "major": 1, "minor": 1}]},
     'linux.devices[0].type: unknown device type "x"'),
    ("device-major-missing", {"linux.devices": [{"type": "c", "path": "/dev/x", "minor": 1}]},
     "linux.devices[0].major: required int64 is missing"),
    ("device-fifo-no-major-ok", {"linux.devices": [{"type": "p", "path": "/dev/fifo"}]}, None),
    ("device-path-relative", {"linux.devices": [{"type": "p", "path": "dev/fifo"}]},
     "linux.devices[0].path: 'dev/fifo' must be an absolute path"),
    ("propagation-ok", {"linux.rootfsPropagation": "rslave"}, None),
    ("propagation-bad", {"linux.rootfsPropagation": "sideways"}, 'linux.rootfsPropagation: unknown propagation "sideways"'),
    ("masked-relative", {"linux.maskedPaths": ["/proc/kcore", "proc/keys"]},
     "linux.maskedPaths[1]: 'proc/keys' must be an absolute path"),
    ("readonly-type", {"linux.readonlyPaths": [1]}, "linux.readonlyPaths[0]: must be a string"),
    ("personality-ok", {"linux.personality": {"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]}}, None),
    ("personality-flag", {"linux.personality": {"domain": "LINUX", "flags": ["FAST"]}},
     'linux.personality.flags[0]: unknown personality flag "FAST"'),
    ("personality-bad", {"linux.personality": {"domain": "BSD"}}, 'linux.personality.domain: unknown personality domain "BSD"'),
    ("seccomp-ok", {"linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                      "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                                      "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                                                    "args": [{"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]}]}}, None),
    ("seccomp-default", {"linux.seccomp": {"defaultAction": "SCMP_ACT_MAYBE"}},
     'linux.seccomp.defaultAction: unknown seccomp action "SCMP_ACT_MAYBE"'),
    ("seccomp-arch", {"linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}},
     'linux.seccomp.architectures[0]: unknown seccomp architecture "SCMP_ARCH_Z80"'),
    ("seccomp-flag", {"linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"]}},
     'linux.seccomp.flags[0]: unknown seccomp flag "SECCOMP_FILTER_FLAG_FAST"'),
    ("seccomp-op", {"linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}]}]}},
     'linux.seccomp.syscalls[0].args[0].op: unknown seccomp operator "SCMP_CMP_XX"'),
    ("seccomp-arg-index", {"linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}},
     "linux.seccomp.syscalls[0].args[0].index: 6 is out of range"),
    ("seccomp-names-empty", {"linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": [], "action": "SCMP_ACT_ERRNO"}]}}, "linux.seccomp.syscalls[0].names: must list at least one syscall"),
    ("seccomp-action", {"linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "ALLOW"}]}}, 'linux.seccomp.syscalls[0].action: unknown seccomp action "ALLOW"'),
    ("seccomp-errno-with-allow", {"linux.seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]}},
     "linux.seccomp.syscalls[0].errnoRet: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take errnoRet"),
    ("seccomp-notify-no-listener", {"linux.seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}}, "linux.seccomp.listenerPath: SCMP_ACT_NOTIFY needs a listenerPath"),
    ("resources-ok", {"linux.resources": {
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}],
        "memory": {"limit": 1 << 30, "swap": -1, "swappiness": 10, "disableOOMKiller": False},
        "cpu": {"shares": 1024, "quota": -1, "period": 100000, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 100}, "blockIO": {"weight": 100, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}], "network": {"classID": 1, "priorities": [{"name": "eth0", "priority": 1}]},
        "unified": {"memory.high": "max"}}}, None),
    ("res-device-access", {"linux.resources.devices": [{"allow": True, "access": "rwx"}]},
     'linux.resources.devices[0].access: "rwx" must be made of r, w and m'),
    ("res-device-allow", {"linux.resources.devices": [{"access": "r"}]},
     "linux.resources.devices[0].allow: required boolean is missing"),
    ("res-device-type", {"linux.resources.devices": [{"allow": True, "type": "q"}]},
     'linux.resources.devices[0].type: unknown device type "q"'),
    ("res-memory-type", {"linux.resources.memory": {"limit": "1G"}}, "linux.resources.memory.limit: must be an int64, not string"),
    ("res-cpu-shares", {"linux.resources.cpu": {"shares": -2}}, "linux.resources.cpu.shares: -2 is out of range for uint64"),
    ("res-cpu-cpus", {"linux.resources.cpu": {"cpus": 0}}, "linux.resources.cpu.cpus: must be a string, not integer"),
    ("res-pids", {"linux.resources.pids": {"limit": 1.5}}, "linux.resources.pids.limit: must be an int64, not number"),
    ("res-blkio-weight", {"linux.resources.blockIO": {"weight": 70000}}, "linux.resources.blockIO.weight: 70000 is out of range for uint16"),
    ("res-blkio-throttle", {"linux.resources.blockIO": {"throttleWriteIOPSDevice": [{"major": 8, "minor": 0}]}},
     "linux.resources.blockIO.throttleWriteIOPSDevice[0].rate: required uint64 is missing"),
    ("res-hugepage", {"linux.resources.hugepageLimits": [{"limit": 1}]}, "linux.resources.hugepageLimits[0].pageSize: required string is missing"),
    ("res-network", {"linux.resources.network": {"priorities": [{"name": "eth0", "priority": -1}]}},
     "linux.resources.network.priorities[0].priority: -1 is out of range"),
    ("res-unified", {"linux.resources.unified": {"memory.max": 5}}, "linux.resources.unified.memory.max: must be a string"),
    ("linux-type", {"linux": []}, "linux: must be an object, not array"),
]


@pytest.mark.parametrize("changes,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule(runc_spec, changes, expected):
    doc = copy.deepcopy(runc_spec)
    for path, value in changes.items():
        if path.startswith("mounts.") and path.split(".")[1] == "7" and len(path.split(".")) == 2:
            doc["mounts"].append(value)
            continue
        if path.startswith("linux.namespaces.") and path.count(".") == 2 and int(path.split(".")[2]) >= len(doc["linux"]["namespaces"]):
            doc["linux"]["namespaces"].append(value)
            continue
        _set(doc, path, value if value is _DEL else copy.deepcopy(value))
    if expected is None:
        validate_config(doc)
    else:
        with pytest.raises(SpecError) as ei:
            validate_config(doc)
        assert expected in str(ei.value)
        assert str(ei.value).startswith("config.json: ")


def test_runc_spec_is_valid(runc_spec):
    validate_config(runc_spec)


def test_message_shape_and_source(runc_spec):
    doc = copy.deepcopy(runc_spec)
    doc["process"]["rlimits"].append({"type": "RLIMIT_CORE", "soft": 0, "hard": 0})
    doc["process"]["rlimits"].append({"type": "RLIMIT_FOO", "soft": 0, "hard": 0})
    with pytest.raises(SpecError) as ei:
        validate_config(doc, source="/b/config.json")
    assert str(ei.value) == '/b/config.json: process.rlimits[2].type: unknown rlimit "RLIMIT_FOO"'
    assert ei.value.path == "process.rlimits[2].type"
    with pytest.raises(SpecError, match="must be a JSON object"):
        validate_config([])


def test_validate_state():
    good = {"ociVersion": "1.2.0", "id": "c1", "status": "running", "pid": 42, "bundle": "/b"}
    validate_state(good)
    validate_state({**good, "status": "stopped", "pid": 0})
    with pytest.raises(SpecError, match='status: unknown status "paused"'):
        validate_state({**good, "status": "paused"})
    with pytest.raises(SpecError, match="pid: required integer is missing"):
        validate_state({k: v for k, v in good.items() if k != "pid"})


def test_fast_enough(runc_spec):
    validate_config(runc_spec)
    times = []
    for _ in range(200):
        t = time.perf_counter()
        validate_config(runc_spec)
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.001, statistics.median(times)


def test_load_config(tmp_path, runc_spec):
    from ocispec.runtime_config import load_config
    p = tmp_path / "config.json"
    with pytest.raises(SpecError, match=r"config.json: does not exist"):
        load_config(p)
    p.write_text('{"ociVersion": "1.0.2",\n "root": }')
    with pytest.raises(SpecError, match=r"config.json: invalid JSON: Expecting value: line 2 column 10"):
        load_config(p)
    p.write_text(json.dumps(runc_spec))
    assert load_config(p) == runc_spec
    p.write_text(json.dumps({**runc_spec, "root": {"path": ""}}))
    with pytest.raises(SpecError, match=r"config.json: root.path: must not be empty"):
        load_config(p)


def test_validate_process_for_exec(runc_spec):
    from ocispec.runtime_config import validate_process
    proc = copy.deepcopy(runc_spec["process"])
    validate_process(proc)
    proc["rlimits"].append({"type": "RLIMIT_BAD", "soft": 1, "hard": 1})
    with pytest.raises(SpecError) as ei:
        validate_process(proc)
    assert str(ei.value) == 'process.json: rlimits[1].type: unknown rlimit "RLIMIT_BAD"'
    with pytest.raises(SpecError, match=r"^process.json: args: must not be empty$"):
        validate_process({**runc_spec["process"], "args": []})
    with pytest.raises(SpecError, match=r"^process.json: must be an object, not array$"):
        validate_process([])
