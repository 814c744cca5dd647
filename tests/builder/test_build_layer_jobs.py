"""RUN layers written in the background while the next steps run: the next RUN sees the
last one's files through its upper dir, the image and cache are as before, and a layer
write that fails is a one-line build error naming its RUN, with no blob half written."""
import hashlib
import json
import os
import subprocess

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
