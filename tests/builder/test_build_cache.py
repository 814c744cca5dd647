"""The layer cache and reproducibility, end to end."""
import json
import os
import time

from build_e2e import env  # noqa: F401  (fixture)
from build_e2e import busybox_base

SDE = {"SOURCE_DATE_EPOCH": "1700000000"}


def _events(env, *args, root=None):
    p = env.pybuild("build", "--progress", "json", "-t", "test:latest", *args, env.ctx,
                    env=SDE, root=root)
    events = [json.loads(line) for line in p.stdout.splitlines()]
    steps = {e["text"]: e for e in events if e["event"] == "step" and e["status"] != "running"}
    return steps, events[-1]["digest"]


def _dockerfile(env):
    env.write("app/main.txt", "v1\n")
    env.write("app/other.txt", "o\n")
    env.dockerfile(busybox_base(env, """\
COPY app /app/
RUN cat /app/main.txt > /copied && cat /proc/sys/kernel/random/uuid > /stamp
"""))


def test_rebuild_hits_and_content_change_misses(env):
    _dockerfile(env)
    s1, d1 = _events(env)
    assert not any(e["cached"] for e in s1.values() if not e["text"].startswith("FROM"))
    s2, d2 = _events(env)
    layer_steps = [t for t in s2 if t.startswith(("COPY", "RUN"))]
    assert layer_steps and all(s2[t]["cached"] for t in layer_steps)
    assert d1 == d2
    stamp = env.rootfs()["stamp"].data

    # mtime-only change: still a hit, same image
    p = os.path.join(env.ctx, "app", "main.txt")
    future = time.time() + 1000
    os.utime(p, (future, future))
    s3, d3 = _events(env)
    assert s3["COPY app /app/"]["cached"] and d3 == d1

    # content change: the COPY and everything after it rebuild
    env.write("app/main.txt", "v2\n")
    s4, d4 = _events(env)
    assert not s4["COPY app /app/"]["cached"]
    assert not any(e["cached"] for t, e in s4.items() if t.startswith("RUN cat"))
    assert s4['RUN ["/bin/busybox", "--install", "-s", "/bin"]']["cached"]
    assert d4 != d1
    assert env.rootfs()["copied"].data == b"v2\n"
    assert env.rootfs()["stamp"].data != stamp

    # --no-cache runs everything again
    s5, _ = _events(env, "--no-cache")
    assert not any(e["cached"] for e in s5.values())


def test_stat_cache_avoids_rehashing(env):
    _dockerfile(env)
    time.sleep(2.1)  # files changed in the last 2 s are never trusted to the stat cache
    _events(env)
    with open(os.path.join(env.root, "statcache.json")) as f:
        sc = json.load(f)
    key = os.path.realpath(os.path.join(env.ctx, "app", "main.txt"))
    assert key in sc and sc[key][4].startswith("sha256:")
    # a forged entry with the file's current stat is trusted: proof no re-read happens
    sc[key][4] = "sha256:" + "1" * 64
    with open(os.path.join(env.root, "statcache.json"), "w") as f:
        json.dump(sc, f)
    # (another label: the build memo, which answers an unchanged build whole, misses)
    s, _ = _events(env, "--label", "other=1")
    assert not s["COPY app /app/"]["cached"]  # the (forged) digest changed the key


def test_reproducible_digest_in_fresh_stores(env):
    _dockerfile(env)
    env.dockerfile(busybox_base(env, """\
COPY app /app/
RUN cat /app/main.txt > /copied && mkdir -p /var && echo made > /var/x
ENV A=1
CMD ["sh"]
"""))
    digests = []
    for n in range(2):
        root = os.path.join(env.base, f"fresh{n}")
        _, d = _events(env, root=root)
        digests.append(d)
        os.utime(os.path.join(env.ctx, "app", "main.txt"))
    assert digests[0] == digests[1]
    _, cfg = env.manifest(root=os.path.join(env.base, "fresh0"))
    assert cfg["created"] == "2023-11-14T22:13:20Z"
    assert all(h["created"] == "2023-11-14T22:13:20Z" for h in cfg["history"])
    man, _ = env.manifest(root=os.path.join(env.base, "fresh0"))
    for d in man["layers"]:
        for m in env.layer_members(d, root=os.path.join(env.base, "fresh0")).values():
            assert m.mtime <= 1700000000


def test_zstd_compression(env):
    _dockerfile(env)
    env.pybuild("build", "--compression", "zstd", "-t", "z:1", env.ctx)
    man, _ = env.manifest("z:1")
    assert all(d["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
               for d in man["layers"])


def test_concurrent_builds_share_one_store(env):
    import subprocess

    from build_e2e import RUNTIME, pybuild_cmd
    env.busybox()
    procs = []
    for n in range(3):
        d = os.path.join(env.base, f"df{n}")
        with open(d, "w") as f:
            f.write("FROM scratch\nCOPY busybox /bin/busybox\n"
                    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                    f"RUN echo {n} > /n\n")
        procs.append(subprocess.Popen(
            [pybuild_cmd(), "--root", env.root, "build", "--runtime", RUNTIME, "--progress",
             "quiet", "-f", d, "-t", f"par:{n}", env.ctx],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for n in range(3):
        assert env.rootfs(f"par:{n}")["n"].data == f"{n}\n".encode()


def test_copy_link_layer_survives_parent_change(env):
    env.write("app/main.txt", "linked\n")
    env.busybox()

    def dockerfile(n):
        env.dockerfile("FROM scratch\nCOPY busybox /bin/busybox\n"
                       f'RUN ["/bin/busybox", "sh", "-c", "echo {n} > /parent"]\n'
                       "COPY --link app/ /app/\n")
    dockerfile(1)
    s1, _ = _events(env)
    man1, _ = env.manifest()
    dockerfile(2)
    s2, _ = _events(env)
    man2, _ = env.manifest()
    assert s2["COPY --link app/ /app/"]["cached"]  # the parent changed, the link layer did not
    assert man1["layers"][-1] == man2["layers"][-1]
    assert man1["layers"][1] != man2["layers"][1]
    assert env.rootfs()["app/main.txt"].data == b"linked\n"


def test_no_change_rebuild_gives_the_same_image_without_sde(env):
    _dockerfile(env)
    digests = []
    for _ in range(2):
        p = env.pybuild("build", "--progress", "quiet", "-t", "same:1", env.ctx)
        digests.append(p.stdout.strip())
    assert digests[0] == digests[1]
    p = env.pybuild("build", "--progress", "quiet", "--label", "x=y", "-t", "same:1", env.ctx)
    assert p.stdout.strip() != digests[0]


def test_copy_keys_follow_the_content_of_small_and_big_files(env):
    """COPY's key holds the content digest of every file it selects, whether small (read
    in one go) or over 1 MiB (streamed): from a stage, a same-size change misses; from the
    context, the stat cache records each file's sha256."""
    import hashlib
    env.write("small.txt", "s" * 100)
    env.write("edge.bin", b"e" * (1 << 20))
    env.write("big.bin", os.urandom((1 << 20) + 5))
    env.dockerfile(busybox_base(env, """\
ARG V=1
RUN mkdir /o && for i in 1 2 3; do echo "$V$V" > /o/f$i; done && \\
    head -c 1048577 /dev/zero | tr '\\0' "$V" > /o/big
FROM scratch
COPY --from=0 /o /o
COPY small.txt edge.bin big.bin /c/
"""))
    time.sleep(2.1)  # files changed in the last 2 s are never trusted to the stat cache

    def build(v):
        p = env.pybuild("build", "--progress", "json", "--build-arg", f"V={v}", "-t",
                        "test:latest", env.ctx)
        events = [json.loads(line) for line in p.stdout.splitlines()]
        return {e["text"]: e for e in events if e["event"] == "step" and e["status"] != "running"}

    s1 = build(1)
    assert not s1["COPY --from=0 /o /o"]["cached"]
    files = env.rootfs()
    assert files["o/f1"].data == b"11\n" and files["o/big"].data == b"1" * 1048577
    s2 = build(2)  # the stage's files change, not their sizes: the COPY misses
    assert not s2["COPY --from=0 /o /o"]["cached"]
    files = env.rootfs()
    assert files["o/f3"].data == b"22\n" and files["o/big"].data == b"2" * 1048577
    s3 = build(1)
    assert s3["COPY --from=0 /o /o"]["cached"]
    assert s3["COPY small.txt edge.bin big.bin /c/"]["cached"]
    assert env.rootfs()["o/f1"].data == b"11\n"
    with open(os.path.join(env.root, "statcache.json")) as f:
        sc = json.load(f)
    for name in ("small.txt", "edge.bin", "big.bin"):
        path = os.path.join(env.ctx, name)
        with open(path, "rb") as f:
            want = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        assert sc[os.path.realpath(path)][4] == want, name
