"""The build memo: a no-change rebuild answered without parsing the Dockerfile or importing
the executor, and never a stale image when the context or a base image changed."""

import os
import subprocess
import sys
import time

import pytest

from build_e2e import BUSYBOX, pybuild_cmd, remove_tree

RUNTIME = os.environ.get("PYBUILD_TEST_RUNTIME", "pyrunc")


@pytest.fixture
def env(tmp_path):
    store, ctx = str(tmp_path / "store"), tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app").mkdir()
    (ctx / "app" / "a.txt").write_text("aaaa\n")
    yield store, ctx
    remove_tree(str(tmp_path))


def build(store, ctx, *extra, importtime=False):
    cmd = [pybuild_cmd(), "--root", store, "build", "-q", "--runtime", RUNTIME, "-t", "memo:1",
           *extra, str(ctx)]
    if importtime:  # the launcher is a Python script: run it under -X importtime
        cmd = [sys.executable, "-X", "importtime"] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()[0], p.stderr


def cat(store, path):
    p = subprocess.run([pybuild_cmd(), "--root", store, "from", "--name", "memo-c", "memo:1"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    try:
        p = subprocess.run([pybuild_cmd(), "--root", store, "run", "--runtime", RUNTIME, "memo-c",
                            "--", "/bin/busybox", "cat", path], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout
    finally:
        subprocess.run([pybuild_cmd(), "--root", store, "rm", "memo-c"], capture_output=True)


def aged():
    time.sleep(2.1)  # the memo (like the stat cache) trusts only stats older than 2 s


def test_no_change_rebuild_skips_the_executor(env):
    store, ctx = env
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY app/ /app/\nCMD [\"/x\"]\n")
    aged()
    first, _ = build(store, ctx)
    again, imports = build(store, ctx, importtime=True)
    assert again == first
    assert "pybuild.buildcmd" in imports  # sanity: the import log is there
    assert "pybuild.build.executor" not in imports and "typer" not in imports
    # a different option is another memo: the build runs
    labelled, imports = build(store, ctx, "--label", "x=y", importtime=True)
    assert labelled != first and "pybuild.build.executor" in imports


def test_changes_are_seen(env):
    store, ctx = env
    shutil_busybox = ctx / "busybox"
    shutil_busybox.write_bytes(open(BUSYBOX, "rb").read())
    os.chmod(shutil_busybox, 0o755)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\nCOPY app/ /app/\n")
    aged()
    d1, _ = build(store, ctx)
    assert build(store, ctx)[0] == d1
    # same size, mtime put back: only ctime (and content) tell
    a = ctx / "app" / "a.txt"
    st = os.stat(a)
    a.write_text("bbbb\n")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    d2, _ = build(store, ctx)  # within 2 s of the change: no memo kept for it
    assert d2 != d1
    assert cat(store, "/app/a.txt") == "bbbb\n"
    a.write_text("cccc\n")  # changed again at once, still same size and mtime
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    aged()
    d3, _ = build(store, ctx)
    assert d3 not in (d1, d2)
    assert cat(store, "/app/a.txt") == "cccc\n"
    # a new file in a copied directory
    (ctx / "app" / "new.txt").write_text("new\n")
    aged()
    d4, _ = build(store, ctx)
    assert d4 != d3 and cat(store, "/app/new.txt") == "new\n"


def test_base_image_retag_is_seen(env, tmp_path):
    store, ctx = env
    for n in ("1", "2"):
        b = tmp_path / f"base{n}"
        b.mkdir()
        (b / "v").write_text(n)
        (b / "Dockerfile").write_text("FROM scratch\nCOPY v /v\n")
        p = subprocess.run([pybuild_cmd(), "--root", store, "build", "-q", "-t", f"memo-base:{n}",
                            str(b)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    subprocess.run([pybuild_cmd(), "--root", store, "tag", "memo-base:1", "memo-base:cur"],
                   check=True, capture_output=True)
    (ctx / "Dockerfile").write_text("FROM memo-base:cur\nCOPY app/ /app/\n")
    aged()
    d1, _ = build(store, ctx)
    assert build(store, ctx)[0] == d1
    subprocess.run([pybuild_cmd(), "--root", store, "tag", "memo-base:2", "memo-base:cur"],
                   check=True, capture_output=True)
    d2, _ = build(store, ctx)
    assert d2 != d1
