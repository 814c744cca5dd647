"""process.capabilities/user/noNewPrivileges/rlimits/oomScoreAdj/scheduler/ioPriority,
linux.personality and the LSM labels, observed from inside a real exec'd busybox."""

import os
import resource

import pytest

from ocispec.errors import OCIError, SpecError
from pyrunc import privileges

from security_harness import capmask, run, sh, status_field

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: sets real credentials")

STATUS = sh("grep -E '^(Cap|NoNewPrivs)' /proc/self/status; id")
ALL = [f"CAP_{n}" for n in ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "NET_RAW", "SETUID",
                           "SETGID", "NET_BIND_SERVICE", "SYS_CHROOT", "AUDIT_WRITE", "SETFCAP")]


def test_five_sets_as_root():
    caps = {"bounding": ALL, "effective": ["CAP_CHOWN", "CAP_KILL"],
            "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "inheritable": ["CAP_KILL", "CAP_NET_RAW"], "ambient": ["CAP_KILL"]}
    r = run(STATUS, {"capabilities": caps})
    assert r.error is None and r.status == 0, r
    assert status_field(r.out, "CapBnd") == capmask(*ALL)
    assert status_field(r.out, "CapAmb") == capmask("CAP_KILL")
    assert status_field(r.out, "CapInh") == capmask("CAP_KILL", "CAP_NET_RAW")
    # root's execve recomputes permitted/effective from the bounding set (no file caps needed)
    assert status_field(r.out, "CapPrm") == capmask(*ALL)
    assert status_field(r.out, "NoNewPrivs") == "0"


def test_caps_kept_across_uid_switch_and_user_fields():
    caps = {"bounding": ["CAP_NET_RAW", "CAP_KILL", "CAP_CHOWN"],
            "effective": ["CAP_NET_RAW", "CAP_KILL"], "permitted": ["CAP_NET_RAW", "CAP_KILL"],
            "inheritable": ["CAP_NET_RAW", "CAP_KILL"], "ambient": ["CAP_NET_RAW", "CAP_KILL"]}
    proc = {"capabilities": caps, "noNewPrivileges": True,
            "user": {"uid": 1234, "gid": 2345, "additionalGids": [3456, 4567], "umask": 0o077}}
    r = run(sh("grep -E '^(Cap|NoNewPrivs)' /proc/self/status; id; umask"), proc)
    assert r.error is None and r.status == 0, r
    # a non-root process keeps exactly its ambient caps over execve: they survived setuid
    for f in ("CapEff", "CapPrm", "CapAmb", "CapInh"):
        assert status_field(r.out, f) == capmask("CAP_NET_RAW", "CAP_KILL"), (f, r.out)
    assert status_field(r.out, "CapBnd") == capmask("CAP_NET_RAW", "CAP_KILL", "CAP_CHOWN")
    assert status_field(r.out, "NoNewPrivs") == "1"
    assert "uid=1234 gid=2345 groups=3456,4567" in r.out
    assert r.out.strip().endswith("0077")


def test_ambient_not_in_inheritable_is_dropped_like_runc():
    caps = {"bounding": ["CAP_KILL", "CAP_NET_RAW"], "effective": ["CAP_KILL", "CAP_NET_RAW"],
            "permitted": ["CAP_KILL", "CAP_NET_RAW"], "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL", "CAP_NET_RAW"]}
    r = run(STATUS, {"capabilities": caps, "user": {"uid": 1000, "gid": 1000}})
    assert r.error is None and r.status == 0, r
    assert status_field(r.out, "CapAmb") == capmask("CAP_KILL")
    assert status_field(r.out, "CapEff") == capmask("CAP_KILL")


def test_no_caps_for_non_root_without_ambient():
    caps = {"bounding": ALL, "effective": ALL, "permitted": ALL, "inheritable": [], "ambient": []}
    r = run(sh("grep -E '^Cap' /proc/self/status; mkdir /proc/x 2>&1; chown 0 /dev/null 2>&1"),
            {"capabilities": caps, "user": {"uid": 1000, "gid": 1000}})
    assert r.error is None, r
    assert status_field(r.out, "CapEff") == "0" * 16
    assert "Operation not permitted" in r.out


def test_denied_without_cap_chown_as_root(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    caps = {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")}
    r = run(sh(f"chown 1000 {f}"), {"capabilities": caps})
    assert r.status != 0 and "Operation not permitted" in r.err, r
    caps = {k: ["CAP_CHOWN"] for k in ("bounding", "effective", "permitted")}
    r = run(sh(f"chown 1000 {f}"), {"capabilities": caps})
    assert r.status == 0 and os.stat(f).st_uid == 1000, r


@pytest.mark.parametrize("s", ["bounding", "effective", "inheritable", "permitted", "ambient"])
def test_unknown_capability_names_are_left_out(s):
    # runtime-spec 1.1+: unknown names are warned about by the runtime, never granted.
    from pyrunc import capabilities

    caps = {"bounding": ["CAP_KILL", "CAP_CHOWN"], s: ["CAP_KILL", "CAP_CHOWN", "CAP_FOO"]}
    if s in ("effective", "inheritable", "ambient"):
        caps["permitted"] = ["CAP_KILL", "CAP_CHOWN"]
    if s == "ambient":
        caps["inheritable"] = ["CAP_KILL", "CAP_CHOWN"]
    masks = capabilities.parse(caps)
    assert masks[s] == (1 << 5) | (1 << 0)
    assert capabilities.unknown(caps) == ["CAP_FOO"]


def test_rlimits_set_and_seen():
    rl = [{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512},
          {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
          {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200}]
    r = run([ "/bin/busybox", "cat", "/proc/self/limits"], {"rlimits": rl})
    assert r.error is None and r.status == 0, r
    lines = {l[:26].strip(): l[26:].split() for l in r.out.splitlines()}
    assert lines["Max open files"][:2] == ["256", "512"]
    assert lines["Max core file size"][:2] == ["0", "0"]
    assert lines["Max processes"][:2] == ["100", "200"]


def test_rlimit_above_hard_without_cap_sys_resource_is_clear_error():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    caps = open("/proc/self/status").read()
    if int(caps.split("CapEff:")[1].split()[0], 16) >> 24 & 1:
        pytest.skip("this host grants CAP_SYS_RESOURCE, so raising the hard limit is allowed")
    rl = [{"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
          {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard + 1}]
    r = run(["/bin/busybox", "true"], {"rlimits": rl})
    assert r.status == 111
    assert r.error == (f"OCIError: process.rlimits[1]: RLIMIT_NOFILE hard limit {hard + 1} is above "
                       f"the runtime's own ({hard}) and raising it needs CAP_SYS_RESOURCE")


@pytest.mark.parametrize("rl, match", [
    ([{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}], r"process\.rlimits\[0\]\.type: unknown rlimit"),
    ([{"type": "RLIMIT_CORE", "soft": 2, "hard": 1}], r"process\.rlimits\[0\]: RLIMIT_CORE soft limit 2 is above"),
    ([{"type": "RLIMIT_CORE", "soft": -1, "hard": 1}], r"process\.rlimits\[0\]\.soft: must be"),
    ([{"type": "RLIMIT_CORE", "soft": 1, "hard": 1}, {"type": "RLIMIT_CORE", "soft": 1, "hard": 1}],
     r"process\.rlimits\[1\]\.type: RLIMIT_CORE is already set"),
])
def test_bad_rlimits(rl, match):
    with pytest.raises(SpecError, match=match):
        privileges.check({"rlimits": rl})


def test_oom_score_adj():
    r = run(["/bin/busybox", "cat", "/proc/self/oom_score_adj"], {"oomScoreAdj": 500})
    assert r.error is None and r.out.strip() == "500", r
    with pytest.raises(SpecError, match=r"process\.oomScoreAdj: must be"):
        privileges.check({"oomScoreAdj": 1001})


def test_oom_score_adj_lowering_without_cap_sys_resource():
    r = run(["/bin/busybox", "true"], {"oomScoreAdj": -900})
    # Lowering below the minimum needs CAP_SYS_RESOURCE; with it the value would be set.
    assert r.status == 111 and "process.oomScoreAdj: lowering" in r.error and "CAP_SYS_RESOURCE" in r.error, r


def test_personality():
    r = run(sh("uname -m; cat /proc/self/personality"), {},
            {"personality": {"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]}})
    assert r.error is None, r
    assert r.out.split() == ["i686", "00040008"]
    with pytest.raises(SpecError, match=r"linux\.personality\.domain: unknown domain 'LINUX64'"):
        privileges.check({}, {"personality": {"domain": "LINUX64"}})
    with pytest.raises(SpecError, match=r"linux\.personality\.flags\[0\]: unknown flag"):
        privileges.check({}, {"personality": {"domain": "LINUX", "flags": ["NOPE"]}})


def test_scheduler_batch_with_nice():
    r = run(sh("cat /proc/self/sched | grep -E '^policy'; cut -d' ' -f19 /proc/self/stat"),
            {"scheduler": {"policy": "SCHED_BATCH", "nice": 7}})
    assert r.error is None, r
    assert r.out.split() == ["policy", ":", "3", "7"], r.out


def test_scheduler_fifo_priority():
    r = run(sh("grep -E '^(policy|prio)' /proc/self/sched"),
            {"scheduler": {"policy": "SCHED_FIFO", "priority": 10}})
    if r.error and "Operation not permitted" in r.error:
        pytest.skip("real-time scheduling is not allowed in this cgroup (cpu.rt_runtime_us = 0)")
    assert r.error is None, r
    f = dict(l.replace(" ", "").split(":") for l in r.out.splitlines())
    assert f["policy"] == "1" and f["prio"] == str(99 - 10), r.out


@pytest.mark.parametrize("sched, match", [
    ({"policy": "SCHED_NOPE"}, r"process\.scheduler\.policy: unknown policy"),
    ({"policy": "SCHED_OTHER", "nice": 20}, r"process\.scheduler\.nice: must be"),
    ({"policy": "SCHED_OTHER", "priority": 3}, r"process\.scheduler\.priority: must be 0"),
    ({"policy": "SCHED_OTHER", "flags": ["X"]}, r"process\.scheduler\.flags\[0\]: unknown flag"),
    ({"policy": "SCHED_OTHER", "runtime": 5}, r"process\.scheduler\.runtime: is only valid"),
])
def test_bad_scheduler(sched, match):
    with pytest.raises(SpecError, match=match):
        privileges.check({"scheduler": sched})


def test_scheduler_kernel_refusal_names_field():
    # deadline parameters the kernel rejects (runtime > deadline)
    r = run(["/bin/busybox", "true"], {"scheduler": {"policy": "SCHED_DEADLINE", "runtime": 20_000_000,
                                                     "deadline": 10_000_000, "period": 30_000_000}})
    assert r.status == 111 and r.error.startswith("OCIError: process.scheduler: sched_setattr:"), r


def test_io_priority():
    r = run(sh("ionice -p $$"), {"ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0}})
    assert r.error is None and r.out.strip().startswith("idle"), r
    r = run(sh("ionice -p $$"), {"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 6}})
    assert r.error is None and r.out.strip() == "best-effort: prio 6", r
    with pytest.raises(SpecError, match=r"process\.ioPriority\.priority: must be"):
        privileges.check({"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 8}})
    with pytest.raises(SpecError, match=r"process\.ioPriority\.class: unknown class"):
        privileges.check({"ioPriority": {"class": "IOPRIO_CLASS_X", "priority": 1}})


@pytest.mark.skipif(os.path.exists("/sys/module/apparmor"), reason="host has AppArmor")
def test_apparmor_missing_is_clear_error():
    with pytest.raises(OCIError, match=r"^process\.apparmorProfile: AppArmor is not enabled on this host"):
        privileges.check({"apparmorProfile": "docker-default"})
    r = run(["/bin/busybox", "true"], {"apparmorProfile": "docker-default"})
    assert r.status == 111 and "process.apparmorProfile: AppArmor is not enabled" in r.error
    privileges.check({"apparmorProfile": ""})  # empty means unset


@pytest.mark.skipif(os.path.exists("/sys/fs/selinux/enforce"), reason="host has SELinux")
def test_selinux_missing_is_clear_error():
    with pytest.raises(OCIError, match=r"^process\.selinuxLabel: SELinux is not enabled on this host"):
        privileges.check({"selinuxLabel": "system_u:system_r:container_t:s0"})
    with pytest.raises(OCIError, match=r"^linux\.mountLabel: SELinux is not enabled on this host"):
        privileges.check({}, {"mountLabel": "system_u:object_r:container_file_t:s0"})


@pytest.mark.parametrize("proc, match", [
    ({"user": {"uid": -1, "gid": 0}}, r"process\.user\.uid: must be"),
    ({"user": {"uid": 0, "gid": "x"}}, r"process\.user\.gid: must be"),
    ({"user": {"uid": 0, "gid": 0, "additionalGids": [1, "a"]}}, r"process\.user\.additionalGids\[1\]"),
    ({"user": {"uid": 0, "gid": 0, "umask": 0o1000}}, r"process\.user\.umask: must be"),
    ({"noNewPrivileges": "yes"}, r"process\.noNewPrivileges: must be"),
    ({"capabilities": {"bounding": "CAP_KILL"}}, r"process\.capabilities\.bounding: must be an array"),
])
def test_bad_user_fields(proc, match):
    with pytest.raises(SpecError, match=match):
        privileges.check(proc)


def test_default_umask_is_runc_0022():
    old = os.umask(0o077)
    try:
        r = run(sh("umask"), {})
    finally:
        os.umask(old)
    assert r.out.strip() == "0022", r


def test_no_fd_leak_from_privileges():
    caps = {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    proc = {"capabilities": caps, "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 100}], "oomScoreAdj": 10,
            "scheduler": {"policy": "SCHED_BATCH"}, "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 1},
            "noNewPrivileges": True}
    r = run(["/bin/busybox", "ls", "/proc/self/fd"], proc, {"personality": {"domain": "LINUX"}})
    assert r.error is None, r
    assert sorted(r.out.split()) == ["0", "1", "2", "3"], r.out  # 3: ls's own directory fd


def test_no_capabilities_object_means_none_like_runc():
    r = run(STATUS, {"user": {"uid": 0, "gid": 0}})
    assert r.error is None, r
    for f in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status_field(r.out, f) == "0" * 16, (f, r.out)


@pytest.mark.parametrize("caps, match", [
    ({"bounding": ["CAP_KILL"], "effective": ["CAP_KILL", "CAP_CHOWN"], "permitted": ["CAP_KILL"]},
     r"process\.capabilities\.effective\[1\]: CAP_CHOWN is not in permitted"),
    ({"bounding": ["CAP_KILL"], "permitted": ["CAP_KILL"], "inheritable": ["CAP_NET_RAW"]},
     r"process\.capabilities\.inheritable\[0\]: CAP_NET_RAW is not in bounding"),
])
def test_sets_the_kernel_would_refuse(caps, match):
    with pytest.raises(SpecError, match=match):
        privileges.check({"capabilities": caps})
    r = run(STATUS, {"capabilities": caps})
    assert r.status == 111 and "is not in" in r.error, r

