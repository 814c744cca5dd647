"""The harness itself: TAP and tables, host probes behind skips, and cleanup that leaves
no container, process, mount or cgroup behind, even when a case fails or hangs."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from ociconformance import cgroupfs, cleanup, host, report, runner
from ociconformance.registry import Case, all_cases

RUNC = shutil.which("runc")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def R(name, status, reason=""):
    return runner.Result(name, status, reason)


def test_every_upstream_name_has_one_case():
    names = set(all_cases())
    areas = ("blkio", "cpus", "devices", "hugetlb", "memory", "network", "pids")
    upstream = {
        "default", "create", "start", "state", "kill", "kill_no_effect", "killsig", "delete",
        "delete_only_create_resources", "delete_resources", "config_updates_without_affect",
        "hooks", "hooks_stdin", "prestart", "prestart_fail", "poststart", "poststart_fail",
        "poststop", "poststop_fail", "hostname", "mounts", "pidfile", "process",
        "process_capabilities", "process_capabilities_fail", "process_oom_score_adj",
        "process_rlimits", "process_rlimits_fail", "process_user", "root_readonly_true",
        "misc_props", "linux_devices", "linux_masked_paths", "linux_mount_label",
        "linux_ns_itype", "linux_ns_nopath", "linux_ns_path", "linux_ns_path_type",
        "linux_process_apparmor_profile", "linux_readonly_paths", "linux_rootfs_propagation",
        "linux_seccomp", "linux_sysctl", "linux_uid_mappings",
        *(f"linux_cgroups_{a}" for a in areas), *(f"linux_cgroups_relative_{a}" for a in areas)}
    assert names == upstream
    assert all(c.description for c in all_cases().values())


def test_tap_lines():
    assert report.tap_line(1, R("a", runner.OK)) == "ok 1 - a"
    assert report.tap_line(2, R("b", runner.FAIL, "why")) == "not ok 2 - b # why"
    assert report.tap_line(3, R("c", runner.SKIP, "no X")) == "ok 3 - c # SKIP no X"


def test_comparison_flags_only_regressions():
    a = [R("x", runner.FAIL, "broke"), R("y", runner.FAIL, "both"), R("z", runner.OK)]
    b = [R("x", runner.OK), R("y", runner.FAIL, "both"), R("z", runner.FAIL, "b only")]
    assert report.regressions(a, b) == ["x"]
    table = report.comparison(a, b, "A-rt", "B-rt")
    assert "REGRESSION: broke" in table
    lines = table.splitlines()
    assert lines[0] == "# A = A-rt: 1 ok, 2 not ok, 0 skipped"
    assert lines[2].split()[:3] == ["case", "A", "B"]


def test_skip_probes_name_the_missing_feature():
    # Each probe answers from the host itself: None where present, a reason naming it.
    if os.path.exists("/sys/fs/selinux/enforce"):
        assert host.selinux() is None
    else:
        assert "SELinux" in host.selinux()
    for ctrl in ("memory", "pids", "net_cls", "hugetlb"):
        reason = host.controller(ctrl)
        if cgroupfs.hierarchy_for(ctrl):
            assert reason is None
        else:
            assert ctrl in reason
    assert host.controller("occ_no_such_controller") is not None


@needs_root
@pytest.mark.skipif(not RUNC, reason="runc is not installed")
def test_cli_reports_host_skip(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ociconformance", "--runtime", RUNC,
                          "--root", str(tmp_path), "linux_mount_label", "process"],
                         capture_output=True, text=True, timeout=120)
    assert "1..2" in out.stdout
    if host.selinux():
        assert "ok 1 - linux_mount_label # SKIP no SELinux" in out.stdout
    assert "ok 2 - process" in out.stdout.splitlines()
    assert out.returncode == 0, out.stdout + out.stderr


def _litter(ctx):
    """A case that makes one of everything, then fails (or hangs)."""
    b = ctx.bundle()
    b.config["process"]["args"] = ["/bin/sh", "-c", "sleep 600"]
    cid = ctx.create(b)
    ctx.rt.ok("start", cid)
    mnt = ctx.path("mnt")
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "occ-test", mnt], check=True)
    os.makedirs(os.path.join(mnt, "x"))
    pids = cgroupfs.hierarchy_for("pids")
    cg = os.path.join(pids.mountpoint, ctx.token + "-extra")
    os.mkdir(cg)
    sleeper = subprocess.Popen(["sleep", "600"])
    with open(os.path.join(cg, "cgroup.procs"), "w") as f:
        f.write(str(sleeper.pid))
    with open(os.path.join(ctx.workdir, "..", "litter.pids"), "w") as f:
        f.write(f"{sleeper.pid} {ctx.rt.state(cid)['pid']}")
    if ctx.token.endswith("hang"):
        time.sleep(600)
    ctx.check(False, "failing on purpose")


@needs_root
@pytest.mark.skipif(not RUNC, reason="runc is not installed")
@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_cleanup_leaves_nothing(mode):
    base = tempfile.mkdtemp(prefix="occ-test-")
    try:
        token = f"occ-test{os.getpid()}-{mode}"
        case = Case("litter", _litter, "")
        r = runner.run_case(case, RUNC, base, token, timeout=5 if mode == "hang" else 30)
        assert r.status == runner.FAIL
        assert ("timed out" in r.reason) if mode == "hang" else r.reason == "failing on purpose"
        assert r.leftovers == ""
        workdir = os.path.join(base, "litter")
        assert not os.path.exists(workdir)
        assert cleanup.mounts_under(base) == []
        assert cgroupfs.find_named(token) == []
        with open(os.path.join(base, "litter.pids")) as f:
            pids = [int(p) for p in f.read().split()]
        time.sleep(0.1)
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}") or open(
                f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z", pid
    finally:
        cleanup.unmount_under(base)
        cleanup.remove_tree(base)


@needs_root
def test_remove_tree_never_crosses_a_mount():
    outside = tempfile.mkdtemp(prefix="occ-test-outside-")
    inside = tempfile.mkdtemp(prefix="occ-test-tree-")
    try:
        with open(os.path.join(outside, "keep"), "w") as f:
            f.write("precious")
        os.makedirs(os.path.join(inside, "a", "mnt"))
        os.symlink(outside, os.path.join(inside, "a", "link"))
        subprocess.run(["mount", "--bind", outside, os.path.join(inside, "a", "mnt")],
                       check=True)
        cleanup.remove_tree(inside)
        assert os.path.exists(os.path.join(outside, "keep"))
        assert cleanup.mounts_under(inside) == [os.path.realpath(os.path.join(inside, "a",
                                                                                "mnt"))]
        assert cleanup.unmount_under(inside) == []
        cleanup.remove_tree(inside)
        assert not os.path.exists(inside)
        assert os.path.exists(os.path.join(outside, "keep"))
    finally:
        cleanup.unmount_under(inside)
        shutil.rmtree(outside)
        if os.path.exists(inside):
            cleanup.remove_tree(inside)


@needs_root
@pytest.mark.skipif(not RUNC, reason="runc is not installed")
def test_compare_exit_status_and_json(tmp_path):
    # /bin/false is a "runtime" that fails every command: a regression against runc.
    js = tmp_path / "r.json"
    cp = subprocess.run([sys.executable, "-m", "ociconformance", "--compare", "/bin/false", RUNC,
                         "--root", str(tmp_path), "--json", str(js), "process", "create"],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "Traceback" not in cp.stderr
    assert "A fails 2 case(s) that B passes: process, create" in cp.stdout
    import json
    doc = json.loads(js.read_text())
    assert [r["runtime"] for r in doc["runs"]] == ["/bin/false", RUNC]
    assert [r["status"] for r in doc["runs"][1]["results"]] == ["ok", "ok"]
    assert doc["host"]["cgroup_mode"] in ("v1", "v2")
    cp = subprocess.run([sys.executable, "-m", "ociconformance", "--compare", RUNC, RUNC,
                         "--root", str(tmp_path), "process"],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert cp.stdout.rstrip().splitlines()[-1].split() == ["process", "ok", "ok"]


@needs_root
@pytest.mark.skipif(not shutil.which("crun"), reason="crun is not installed")
def test_a_runtime_refusing_the_host_is_reported_not_crashed(tmp_path):
    # crun 1.8 refuses hybrid cgroup hosts: each case must say why, as a TAP line.
    cp = subprocess.run([sys.executable, "-m", "ociconformance", "--runtime",
                         shutil.which("crun"), "--root", str(tmp_path), "default"],
                        capture_output=True, text=True, timeout=120)
    assert "Traceback" not in cp.stderr + cp.stdout
    line = next(ln for ln in cp.stdout.splitlines() if ln.endswith("- default")
                or " - default # " in ln)
    assert line == "ok 1 - default" or line.startswith("not ok 1 - default # create exited")
    assert cp.returncode == (0 if line.startswith("ok") else 1)
