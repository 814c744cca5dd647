"""bench/runtime_bench.py runs end to end against the real runtimes and cleans up after itself."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "runtime_bench.py")


@pytest.fixture
def tmpdir_env():
    d = tempfile.mkdtemp(prefix="pyrunc-benchtest-")
    yield d
    with open("/proc/self/mountinfo") as f:
        assert d not in f.read()
    assert os.listdir(d) == []  # the bench removed its bundle and --root dirs
    os.rmdir(d)


def bench(tmpdir_env, *args):
    p = subprocess.run([sys.executable, BENCH, "--json", *args], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "TMPDIR": tmpdir_env})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_bench_runc_and_crun(tmpdir_env):
    r = bench(tmpdir_env, "-n", "2", "--runtimes", "runc,crun,pyrunc-bench-nosuch")
    runc = r["runtimes"]["runc"]
    assert runc["version"].startswith("runc version")
    assert "refused" not in runc
    for op in ("run", "lifecycle", "create", "start", "wait", "delete", "state"):
        s = runc["ops"][op]
        assert s["n"] == 2 and 0 < s["median_ms"] <= s["p90_ms"] < 10_000, (op, s)
    assert runc["ops"]["lifecycle"]["median_ms"] >= runc["ops"]["create"]["median_ms"]
    crun = r["runtimes"]["crun"]
    # crun 1.8 refuses this host's hybrid cgroups; elsewhere it runs and gets figures.
    assert crun.get("refused", "").startswith("`crun run` exit status") or \
        crun["ops"]["run"]["n"] == 2
    assert r["runtimes"]["pyrunc-bench-nosuch"] == {
        "refused": "pyrunc-bench-nosuch not found on PATH"}
    assert r["ratios"] == {}  # no pyrunc in this run


def test_bench_table_output(tmpdir_env):
    p = subprocess.run([sys.executable, BENCH, "-n", "1", "--runtimes", "runc"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TMPDIR": tmpdir_env})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("runtime bench: busybox /bin/true, 1 rounds")
    assert any(l.startswith("run ") for l in lines) and any(l.startswith("state ") for l in lines)
    assert any(l.startswith("runc: runc version") for l in lines)


def test_bench_pyrunc_against_runc(tmpdir_env):
    r = bench(tmpdir_env, "-n", "2", "--runtimes", "pyrunc,runc")
    py = r["runtimes"]["pyrunc"]
    assert "refused" not in py, py.get("refused")
    assert py["version"].startswith("pyrunc version")
    for op in ("run", "lifecycle", "state"):
        assert py["ops"][op]["n"] == 2
        assert r["ratios"][op] > 0
    it = r["importtime"]
    assert "error" not in it, it
    assert it["total_ms"] > 0 and it["interpreter_ms"] > 0
    for cmd in ("create", "state"):  # the real commands' imports, not just the entry module
        assert it["commands"][cmd]["total_ms"] > it["total_ms"] / 2, it["commands"]
    assert "pyroute2" not in it["heavy_modules"] and "jsonschema" not in it["heavy_modules"]


def test_floor_runs_the_default_bundle_in_its_cgroups(tmpdir_env):
    """The floor does the default bundle's kernel work: its init is born in new namespaces and
    in the container's cgroup in every hierarchy, and delete leaves nothing."""
    r = bench(tmpdir_env, "-n", "2", "--runtimes", "floor")
    fl = r["runtimes"]["floor"]
    assert "refused" not in fl, fl.get("refused")
    for op in ("run", "lifecycle", "state"):
        assert fl["ops"][op]["n"] == 2
    floor = os.path.join(os.path.dirname(BENCH), "floor_runtime.py")
    root, bundle = os.path.join(tmpdir_env, "root"), os.path.join(tmpdir_env, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    os.symlink("busybox", os.path.join(rootfs, "bin", "sleep"))
    subprocess.run(["runc", "spec", "-b", bundle], check=True)
    with open(os.path.join(bundle, "config.json")) as f:
        cfg = json.load(f)
    cfg["process"].update(terminal=False, args=["/bin/sleep", "30"])
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f)
    cid = f"floortest{os.getpid()}"
    py = [sys.executable, "-S", floor, "--root", root]
    try:
        subprocess.run([*py, "create", "--bundle", bundle, cid], check=True, timeout=30,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(os.path.join(root, cid, "state")) as f:
            pid = int(f.read().split()[0])
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().split()
        assert lines and all(l.endswith(f"/floor/{cid}") for l in lines), lines
        for ns in ("pid", "mnt", "net", "ipc", "uts"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    finally:
        subprocess.run([*py, "delete", cid], timeout=30)
    assert not os.path.exists(os.path.join(root, cid))
    shutil.rmtree(bundle)
    os.rmdir(root)
