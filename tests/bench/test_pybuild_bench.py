"""bench/pybuild_bench.py runs end to end: pybuild beside BuildKit (a private dockerd) and
buildah (overlay storage), its table printed, missing peers skipped with the reason, and
nothing left behind (no temp dirs, mounts, or daemons)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "builder"))
from build_e2e import pybuild_cmd  # noqa: E402

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "pybuild_bench.py")
RUNTIME = os.environ.get("PYBUILD_TEST_RUNTIME", "pyrunc")


@pytest.fixture
def tmpdir_env():
    d = tempfile.mkdtemp(prefix="pybuild-benchtest-")
    yield d
    with open("/proc/self/mountinfo") as f:
        assert d not in f.read()
    assert os.listdir(d) == []  # the bench removed its stores, roots and daemon dirs
    os.rmdir(d)


def _daemons(tmp: str) -> list:
    p = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True)
    return [l for l in p.stdout.splitlines() if tmp in l]


def bench(tmpdir_env, *args):
    p = subprocess.run([sys.executable, BENCH, "--pybuild", pybuild_cmd(), "--runtime", RUNTIME,
                        "-n", "1", "--only", "a", "--no-throughput", "--no-warm", *args],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "TMPDIR": tmpdir_env})
    assert p.returncode == 0, p.stderr
    assert _daemons(tmpdir_env) == []  # the private dockerd and containerd were stopped
    return p


def test_bench_table_with_peers(tmpdir_env):
    """The table: one row per case and measure, a column per builder, ratios to each peer
    that runs here; a peer that cannot run is named with the reason."""
    p = bench(tmpdir_env)
    lines = p.stdout.splitlines()
    assert lines[0].startswith("pybuild bench: n=1 rounds (medians)")
    header = next(l for l in lines if l.startswith("case measure"))
    cold = next(l for l in lines if l.startswith("(a)  cold"))
    rebuild = next(l for l in lines if l.startswith("(a)  rebuild"))
    assert "pybuild s" in header
    peers = []
    for peer, probe in (("buildkit", "dockerd"), ("buildah", "buildah")):
        line = next(l for l in lines if l.startswith(f"  {peer}: "))
        if "skipped: " in line:
            assert shutil.which(probe) is None or "did not start" in line, line
        else:
            peers.append(peer)
            assert f"{peer} s" in header and f"pybuil/{peer[:6]}" in header
    if shutil.which("dockerd"):
        assert "buildkit" in peers, p.stdout  # docker.io is there: BuildKit must run
    cols = cold.split()
    assert len(cols) == 2 + 1 + len(peers) + len(peers)  # case, measure, builders, ratios
    for v in cols[2:3 + len(peers)]:
        assert 0 < float(v) < 300
    for v in cols[3 + len(peers):]:
        assert v.endswith("x") and float(v[:-1]) > 0
    assert len(rebuild.split()) == len(cols)


def test_bench_skips_missing_peers(tmpdir_env):
    p = bench(tmpdir_env, "--json", "--peers", "buildkit,buildah,nosuch",
              "--dockerd", "/nonexistent/dockerd", "--buildah", "/nonexistent/buildah")
    r = json.loads(p.stdout)
    assert r["skipped"] == {
        "nosuch": "unknown peer (want buildkit or buildah)",
        "buildkit": "/nonexistent/dockerd not found (apt-get install docker.io)",
        "buildah": "/nonexistent/buildah not found on PATH"}
    med = r["cases"]["a"]["cold"]["median"]
    assert list(med) == ["pybuild"] and 0 < med["pybuild"] < 300
    assert "skipped: /nonexistent/buildah not found on PATH" in p.stderr
