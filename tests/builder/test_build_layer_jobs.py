"""RUN layers written in the background while the next steps run: the next RUN sees the
last one's files through its upper dir, the image and cache are as before, and a layer
write that fails is a one-line build error naming its RUN, with no blob half written."""
import hashlib
import json
import os
import subprocess

import pytest

from build_e2e import env  # noqa: F401  (fixture)
from build_e2e import busybox_base, mounts_under


def _steps(env, root=None, ok=True):
    p = env.pybuild("build", "--progress", "json", "-t", "test:latest", env.ctx, root=root,
                    ok=ok)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return p, {e["text"]: e for e in events if e["event"] == "step" and e["status"] != "running"}


def _store_consistent(root):
    """Every blob's content matches its name; no temp file or scratch dir is left."""
    base = os.path.join(root, "blobs", "sha256")
    for name in os.listdir(base):
        with open(os.path.join(base, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == name
    assert os.listdir(os.path.join(root, ".tmp")) == []
    build = os.path.join(root, "build")
    assert not os.path.exists(build) or all(
        os.listdir(os.path.join(build, d)) == [] for d in os.listdir(build)
        if os.path.isdir(os.path.join(build, d)))


def test_consecutive_runs_see_pending_layers(env):
    env.write("note.txt", "n\n")
    env.dockerfile(busybox_base(env, """\
RUN mkdir -p /d/keep /d/gone /o && echo 1 > /d/keep/a && echo x > /d/gone/x && echo old > /f \\
    && echo o > /o/1
RUN rm -rf /d/gone && echo 2 >> /d/keep/a && rm /f && rm -rf /o && mkdir /o && echo o2 > /o/2
RUN test ! -e /d/gone && test ! -e /f && test ! -e /o/1 && cat /d/keep/a /o/2 > /seen
WORKDIR /w
COPY note.txt .
RUN cat /seen /w/note.txt > /w/all
FROM scratch
COPY --from=0 /w/all /seen /
"""))
    p, s1 = _steps(env)
    assert not any(e["cached"] for t, e in s1.items() if t.startswith(("RUN", "COPY")))
    files = env.rootfs()
    assert files["all"].data == b"1\n2\no2\nn\n"
    assert files["seen"].data == b"1\n2\no2\n"
    man, cfg = env.manifest()
    assert len(man["layers"]) == len(cfg["rootfs"]["diff_ids"]) == 1
    _store_consistent(env.root)
    assert mounts_under(env.base) == []
    # every RUN layer was recorded in the cache and adopted as an extracted dir
    layers = os.path.join(env.root, "layers")
    extracted = {n for n in os.listdir(layers) if len(n) == 64}
    p, s2 = _steps(env)
    assert all(e["cached"] for t, e in s2.items() if t.startswith(("RUN", "COPY")))
    assert {n for n in os.listdir(layers) if len(n) == 64} == extracted
    # the same build with every RUN layer written before the next step (SOURCE_DATE_EPOCH)
    # gives the same files
    other = os.path.join(env.base, "sde")
    env.pybuild("build", "--progress", "plain", "-t", "test:latest", env.ctx, root=other,
                env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert {k: v.data for k, v in env.rootfs().items()} == \
        {k: v.data for k, v in files.items()}


def test_failed_background_layer_write_is_a_build_error(env):
    """The store on a small tmpfs: the RUN's 14 MB fit in its upper dir, but not again as
    the layer blob. The build fails naming that RUN, while a later RUN had started."""
    small = os.path.join(env.base, "small")
    os.makedirs(small)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", small], check=True)
    try:
        root = os.path.join(small, "store")
        env.dockerfile(busybox_base(env, """\
RUN head -c 14000000 /dev/urandom > /big
RUN echo next
"""))
        p, steps = _steps(env, root=root, ok=False)
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("Dockerfile:4: RUN: writing its layer:"), p.stderr
        assert "No space left on device" in last
        assert env.index(root)["manifests"] == []
        _store_consistent(root)
        assert mounts_under(env.base) == [small]
    finally:
        subprocess.run(["umount", small], check=True)


def _inotify_reads(path):
    """An inotify fd reporting opens and reads of the files in `path`, and its reader
    (names opened or read since the watch began)."""
    import ctypes
    import errno
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        pytest.skip(f"inotify: {os.strerror(ctypes.get_errno())}")
    in_access, in_open = 0x1, 0x20
    if libc.inotify_add_watch(fd, os.fsencode(path), in_access | in_open) < 0:
        os.close(fd)
        pytest.skip(f"inotify_add_watch: {os.strerror(ctypes.get_errno())}")

    def names():
        out = set()
        while True:
            try:
                buf = os.read(fd, 1 << 16)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    return out
                raise
            i = 0
            while i < len(buf):
                _, _, _, n = struct.unpack_from("iIII", buf, i)
                out.add(buf[i + 16:i + 16 + n].rstrip(b"\0").decode())
                i += 16 + n
    return fd, names


def test_step_after_run_does_not_read_its_layer_again(env):
    """The step after a RUN (here WORKDIR) uses the RUN's upper dir, adopted as the layer's
    extracted dir, without decompressing and hashing the blob this build has just written
    (the check waited for a record written by a background job: 0.4 s on an apt layer)."""
    env.dockerfile(busybox_base(env))
    env.build(tag="base:latest")
    blobs = os.path.join(env.root, "blobs", "sha256")
    env.dockerfile("""\
FROM base:latest
RUN head -c 24000000 /dev/urandom > /big && echo x > /small
WORKDIR /w
RUN test -f /small && echo y > /w/y
""")
    fd, names = _inotify_reads(blobs)
    try:
        env.build()
        read = names()
    finally:
        os.close(fd)
    man, _ = env.manifest()
    run_blob = man["layers"][2]["digest"].split(":", 1)[1]
    assert os.path.getsize(env.blob(man["layers"][2]["digest"])) > 24000000
    assert run_blob not in read
    files = env.rootfs()
    assert files["w/y"].data == b"y\n" and files["small"].data == b"x\n"


def test_steps_after_run_do_not_wait_for_its_layer(env, monkeypatch):
    """WORKDIR and COPY after a RUN run while the RUN's layer is still being written, over
    its upper dir: here (the build in this process) that layer's write waits until the COPY
    has written its own layer, which never comes if the COPY waits for the RUN's blob (then
    the write gives up after 60 s and the test fails); the image is as before."""
    import threading
    from pybuild import cli
    from pybuild.build import copy as copyop
    from pybuild.build import run as runop
    from build_e2e import RUNTIME
    copied, waited = threading.Event(), []
    real_write_layer, real_copy = runop.write_layer, copyop.write

    def write_layer(store, upper, **kw):
        if os.path.lexists(os.path.join(upper, "big")):
            waited.append(copied.wait(60))
        return real_write_layer(store, upper, **kw)

    def copy_write(*a, **kw):
        out = real_copy(*a, **kw)
        if kw.get("workdir") == "/w/sub":
            copied.set()
        return out

    monkeypatch.setattr(runop, "write_layer", write_layer)
    monkeypatch.setattr(copyop, "write", copy_write)
    env.write("note.txt", "n\n")
    env.dockerfile(busybox_base(env, """\
RUN head -c 3000000 /dev/urandom > /big && mkdir /w && echo a > /w/a
WORKDIR /w/sub
COPY note.txt .
RUN test -f /big && test -f /w/a && test -f /w/sub/note.txt && echo y > /y
"""))
    rc = cli._main(["--root", env.root, "build", "--runtime", RUNTIME, "--progress", "quiet",
                    "-t", "test:latest", env.ctx])
    assert rc == 0 and waited == [True]
    files = env.rootfs()
    assert files["w/sub/note.txt"].data == b"n\n" and files["y"].data == b"y\n"
    assert len(files["big"].data) == 3000000
    man, cfg = env.manifest()
    assert len(man["layers"]) == len(cfg["rootfs"]["diff_ids"]) == 6
    _store_consistent(env.root)
