"""pybuild as an image tool, end to end through the installed command: images, tag, rmi,
inspect, history, import, save, load, prune, gc, fsck; with podman and skopeo as the other
side of save/load, gc racing a build, fsck finding damage, and a full disk during load."""
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from build_e2e import busybox_base, env, pybuild_cmd  # noqa: F401  (env is a fixture)

COPY_ONLY = "FROM scratch\nCOPY busybox /bin/busybox\n"


def _files(root: str, sub: str) -> list[str]:
    base = os.path.join(root, sub)
    try:
        return sorted(n for n in os.listdir(base) if not n.startswith("."))
    except FileNotFoundError:
        return []


def _du(path: str) -> int:
    total = 0
    for dp, dns, fns in os.walk(path):
        for n in fns:
            total += os.lstat(os.path.join(dp, n)).st_size
    return total


def _one_line_error(p) -> str:
    err = p.stderr.strip()
    assert p.returncode != 0
    assert "Traceback" not in p.stderr and len(err.splitlines()) == 1, p.stderr
    return err


def _build_two(env):
    """a:1 = busybox + install (RUN: its layers get extracted); b:1 = a's steps + one more
    layer of its own. They share the first two layers."""
    base = busybox_base(env)
    env.dockerfile(base)
    env.build(tag="a:1")
    env.dockerfile(base + "RUN echo only-b > /only-b\n", name="Dockerfile.b")
    env.build("-f", os.path.join(env.ctx, "Dockerfile.b"), tag="b:1")


# -- images, tag, inspect, history ----------------------------------------------------------

def test_images_tag_inspect_history(env):
    env.busybox()
    env.dockerfile(COPY_ONLY + 'LABEL x=y\nCMD ["/bin/busybox", "true"]\n')
    env.build(tag="one:v1")
    man, cfg = env.manifest("one:v1")
    env.pybuild("tag", "one:v1", "two", "reg.example:5000/team/three:rc")
    p = env.pybuild("images")
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    short = man["config"]["digest"].split(":")[1][:12]
    rows = [line.split() for line in lines[1:]]
    assert [r[:3] for r in rows] == [["one", "v1", short], ["reg.example:5000/team/three", "rc", short],
                                     ["two", "latest", short]]
    size = man["config"]["size"] + sum(d["size"] for d in man["layers"])
    js = json.loads(env.pybuild("images", "--format", "json").stdout)
    assert {(r["Repository"], r["Tag"]) for r in js} == {("one", "v1"), ("two", "latest"),
                                                         ("reg.example:5000/team/three", "rc")}
    assert all(r["Id"] == man["config"]["digest"] and r["Digest"] == man["_digest"]
               and r["Size"] == size and r["Created"] == cfg["created"] for r in js)
    assert man["_digest"] in env.pybuild("images", "--digests").stdout
    assert env.pybuild("images", "-q").stdout.split() == [short]
    # tag by image ID; an unknown source is a one-line error
    env.pybuild("tag", short, "four:x")
    assert env.manifest("four:x")[0]["_digest"] == man["_digest"]
    assert "does not exist" in _one_line_error(env.pybuild("tag", "nope:1", "x", ok=None))

    doc = json.loads(env.pybuild("inspect", "two").stdout)
    assert isinstance(doc, list) and len(doc) == 1
    d = doc[0]
    assert d["Id"] == man["config"]["digest"] and d["Digest"] == man["_digest"]
    assert sorted(d["RepoTags"]) == sorted(["one:v1", "two:latest", "four:x",
                                            "reg.example:5000/team/three:rc"])
    assert d["Manifest"]["layers"] == man["layers"] and d["Config"] == cfg
    assert d["History"] == cfg["history"] and d["Config"]["config"]["Labels"] == {"x": "y"}

    h = json.loads(env.pybuild("history", "--format", "json", "one:v1").stdout)
    by = [r["CreatedBy"] for r in h]
    assert "CMD" in by[0] and "LABEL" in by[1] and "COPY busybox" in by[2]
    assert h[2]["Layer"] == man["layers"][0]["digest"] and h[2]["Size"] == man["layers"][0]["size"]
    assert h[0]["Size"] == 0 and h[0]["Layer"] is None  # empty_layer entries made none
    table = env.pybuild("history", "one:v1").stdout.splitlines()
    assert table[0].split()[:4] == ["IMAGE", "CREATED", "CREATED", "BY"] and len(table) == 4
    assert table[1].startswith(short)


# -- rmi ----------------------------------------------------------------------------------

def _image_blobs(env, name) -> set:
    man, _ = env.manifest(name)
    return {man["_digest"], man["config"]["digest"], *(d["digest"] for d in man["layers"])}


def test_rmi_frees_what_only_that_image_used(env):
    _build_two(env)
    a, b = _image_blobs(env, "a:1"), _image_blobs(env, "b:1")
    a_diffs = {x.split(":")[1] for x in env.config("a:1")["rootfs"]["diff_ids"]}
    layers_before = set(_files(env.root, "layers"))
    assert a_diffs & layers_before, "the build extracted no layer: nothing to test"
    env.pybuild("tag", "b:1", "b:2")
    p = env.pybuild("rmi", "b:1")  # b:2 still has the image: untag only
    assert p.stdout.strip() == "Untagged: b:1"
    assert all(os.path.exists(env.blob(d)) for d in b)
    p = env.pybuild("rmi", "b:2")
    only_b = b - a
    assert only_b and {f"Deleted: {d}" for d in only_b} <= set(p.stdout.splitlines())
    assert "Freed" in p.stdout
    assert not any(os.path.exists(env.blob(d)) for d in only_b)
    assert all(os.path.exists(env.blob(d)) for d in a)
    # extracted layers: a's stay
    assert a_diffs & layers_before <= set(_files(env.root, "layers"))
    # no cache entry names a removed blob: the same build makes b again, and it is whole
    env.build("-f", os.path.join(env.ctx, "Dockerfile.b"), tag="b:1")
    assert all(os.path.exists(env.blob(d)) for d in _image_blobs(env, "b:1"))
    env.pybuild("fsck")
    # the issue: a store of a few builds, everything removed, nearly nothing left
    for n in ("a:1", "b:1"):
        env.pybuild("rmi", n)
    assert _files(env.root, "blobs/sha256") == [] and _files(env.root, "layers") == []
    assert _du(env.root) < 64 * 1024, _du(env.root)
    assert env.index()["manifests"] == []


def test_rmi_by_id_and_errors(env):
    env.busybox()
    env.dockerfile(COPY_ONLY)
    env.build(tag="x:1")
    env.pybuild("tag", "x:1", "y:1")
    cid = env.manifest("x:1")[0]["config"]["digest"].split(":")[1][:12]
    err = _one_line_error(env.pybuild("rmi", cid, ok=False))
    assert "2 tags" in err and "--force" in err
    err = _one_line_error(env.pybuild("rmi", "nope:1", ok=False))
    assert "nope:1" in err and "does not exist" in err
    p = env.pybuild("rmi", "--force", cid)
    assert "Untagged: x:1" in p.stdout and "Untagged: y:1" in p.stdout
    assert _files(env.root, "blobs/sha256") == []


def _store_api(env, code: str) -> None:
    """Run store API code (what a container command does) in its own process."""
    src = f"from pybuild.image.store import Store\ns = Store({env.root!r})\n{code}\ns.close()\n"
    subprocess.run([sys.executable, "-c", src], check=True, env=dict(os.environ))


def test_rmi_refuses_an_image_a_container_uses(env):
    """The in-use hook: refs/<kind>/<id> keeps an image from rmi (unless --force) and its
    data from gc until the user is removed."""
    env.busybox()
    env.dockerfile(COPY_ONLY)
    env.build(tag="used:1")
    blobs = _image_blobs(env, "used:1")
    _store_api(env, "s.add_user('containers', 'c1', 'used:1')")
    err = _one_line_error(env.pybuild("rmi", "used:1", ok=False))
    assert "in use by container c1" in err
    assert env.manifest("used:1")
    p = env.pybuild("rmi", "--force", "used:1")
    assert "Untagged: used:1" in p.stdout and "Deleted" not in p.stdout
    env.pybuild("gc")
    assert all(os.path.exists(env.blob(d)) for d in blobs)  # the container still has it
    env.pybuild("fsck")
    _store_api(env, "s.remove_user('containers', 'c1')")
    p = env.pybuild("gc")
    assert f"removed {len(blobs)} blobs" in p.stdout
    assert not any(os.path.exists(env.blob(d)) for d in blobs)


# -- import ---------------------------------------------------------------------------------

def _rootfs_tar(path: str, compress=None) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for d in ("bin", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        tf.add("/bin/busybox", "bin/busybox")
        ti = tarfile.TarInfo("bin/sh")
        ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
        tf.addfile(ti)
        data = b"imported\n"
        ti = tarfile.TarInfo("etc/marker")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if compress == "gzip" else raw)


@pytest.mark.parametrize("compress", [None, "gzip"])
def test_import_rootfs_then_build_and_run_from_it(env, compress):
    tar = os.path.join(env.base, "rootfs.tar")
    _rootfs_tar(tar, compress)
    p = env.pybuild("import", "-m", "from a tarball", tar, "imported:1")
    man, cfg = env.manifest("imported:1")
    assert p.stdout.strip() == man["_digest"] and len(man["layers"]) == 1
    assert man["layers"][0]["mediaType"].endswith("tar+gzip" if compress else "tar")
    assert cfg["history"][0]["comment"] == "from a tarball"
    # a real consumer: a build on top of it runs its shell
    env.dockerfile("FROM imported:1\nRUN cat /etc/marker > /copied\n")
    env.build(tag="on-top:1")
    assert env.rootfs("on-top:1")["copied"].data == b"imported\n"
    env.pybuild("fsck")


def test_import_refuses_what_is_not_a_tar(env):
    bad = env.write("notatar.tar", b"hello, this is not a tar archive" * 100)
    err = _one_line_error(env.pybuild("import", bad, "bad:1", ok=False))
    assert "notatar.tar" in err and "tar" in err
    evil = os.path.join(env.base, "evil.tar")
    with tarfile.open(evil, "w") as tf:
        ti = tarfile.TarInfo("../escape")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    err = _one_line_error(env.pybuild("import", evil, "bad:1", ok=False))
    assert ".." in err
    assert _files(env.root, "blobs/sha256") == [] and _files(env.root, ".tmp") == []
    assert env.index()["manifests"] == []


# -- save / load: pybuild, podman, skopeo --------------------------------------------------

def _podman(env):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    pr = os.path.join(env.base, "podman")
    return ["podman", "--root", f"{pr}/root", "--runroot", f"{pr}/run", "--storage-driver", "vfs",
            "--events-backend", "none", "--cgroup-manager", "cgroupfs"]


def _run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert p.returncode == 0, f"{cmd}: {p.stderr}"
    return p


def test_save_load_roundtrip_and_pipes(env):
    env.busybox()
    env.dockerfile(COPY_ONLY + 'ENV K=V\n')
    env.build(tag="rt:1")
    man, cfg = env.manifest("rt:1")
    for fmt in ("docker-archive", "oci-archive"):
        out = os.path.join(env.base, f"{fmt}.tar")
        env.pybuild("save", "--format", fmt, "-o", out, "rt:1")
        root2 = os.path.join(env.base, f"store-{fmt}")
        p = env.pybuild("load", "-i", out, root=root2)
        assert p.stdout.strip() == "Loaded image: rt:1"
        man2, cfg2 = env.manifest("rt:1", root=root2)
        assert man2["config"]["digest"] == man["config"]["digest"]  # config byte for byte
        if fmt == "oci-archive":
            assert man2["_digest"] == man["_digest"]
        env.pybuild("fsck", root=root2)
    # stdout | stdin
    root3 = os.path.join(env.base, "store-pipe")
    save = subprocess.Popen([pybuild_cmd(), "--root", env.root, "save", "rt:1"], stdout=subprocess.PIPE)
    load = subprocess.run([pybuild_cmd(), "--root", root3, "load"], stdin=save.stdout,
                          capture_output=True, text=True, timeout=120)
    save.stdout.close()
    assert save.wait(60) == 0 and load.returncode == 0, load.stderr
    assert env.manifest("rt:1", root=root3)[0]["config"]["digest"] == man["config"]["digest"]
    assert _files(root3, ".tmp") == []
    # one-line errors: not an archive, an archive of neither format
    junk = env.write("junk.tar", b"junk" * 300)
    assert "cannot read the archive" in _one_line_error(env.pybuild("load", "-i", junk, ok=False))
    empty = os.path.join(env.base, "empty.tar")
    with tarfile.open(empty, "w"):
        pass
    assert "neither" in _one_line_error(env.pybuild("load", "-i", empty, ok=False))


def test_save_read_by_podman_and_skopeo_and_their_archives_loaded(env):
    podman = _podman(env)
    if not shutil.which("skopeo"):
        pytest.skip("skopeo is not installed")
    env.busybox()
    env.dockerfile(COPY_ONLY + 'CMD ["/bin/busybox", "echo", "hello"]\n')
    env.build(tag="interop:1")
    man, cfg = env.manifest("interop:1")
    da = os.path.join(env.base, "pb-docker.tar")
    oa = os.path.join(env.base, "pb-oci.tar")
    env.pybuild("save", "-o", da, "interop:1")
    env.pybuild("save", "--format", "oci-archive", "-o", oa, "interop:1")
    # skopeo reads both
    for ref in (f"docker-archive:{da}", f"oci-archive:{oa}"):
        info = json.loads(_run(["skopeo", "inspect", ref]).stdout)
        assert info["Layers"] and info["Architecture"] == cfg["architecture"], info
    cfgd = json.loads(_run(["skopeo", "inspect", "--config", f"oci-archive:{oa}"]).stdout)
    assert cfgd["config"]["Cmd"] == ["/bin/busybox", "echo", "hello"]
    # podman loads both; podman save output comes back into pybuild
    _run(podman + ["load", "-i", da])
    _run(podman + ["load", "-i", oa])
    ids = _run(podman + ["images", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"]).stdout
    assert man["config"]["digest"].split(":")[1][:12] in ids and "interop:1" in ids
    ps = os.path.join(env.base, "podman-save.tar")
    _run(podman + ["save", "-o", ps, "localhost/interop:1"])
    root2 = os.path.join(env.base, "store-from-podman")
    p = env.pybuild("load", "-i", ps, root=root2)
    assert p.stdout.strip() == "Loaded image: localhost/interop:1"
    cfg2 = env.manifest("localhost/interop:1", root=root2)[1]
    assert cfg2["config"]["Cmd"] == ["/bin/busybox", "echo", "hello"]
    assert cfg2["rootfs"]["diff_ids"] == cfg["rootfs"]["diff_ids"]
    # skopeo copy ... docker-archive: output
    sk = os.path.join(env.base, "skopeo.tar")
    _run(["skopeo", "copy", f"oci-archive:{oa}", f"docker-archive:{sk}:skopeo/img:v2"])
    p = env.pybuild("load", "-i", sk, root=root2)
    assert "Loaded image: docker.io/skopeo/img:v2" in p.stdout
    assert env.manifest("docker.io/skopeo/img:v2", root=root2)[1]["rootfs"]["diff_ids"] == \
        cfg["rootfs"]["diff_ids"]
    # and a build runs on what was loaded
    env.dockerfile("FROM localhost/interop:1\nRUN [\"/bin/busybox\", \"true\"]\n")
    env.build(tag="after:1", root=root2)
    env.pybuild("fsck", root=root2)


# -- prune and gc ---------------------------------------------------------------------------

def test_prune_removes_dead_builds_then_unreferenced_data(env):
    env.busybox()
    env.dockerfile(COPY_ONLY)
    env.build(tag="gone:1")
    blobs = _image_blobs(env, "gone:1")
    _store_api(env, "s.delete('gone:1')")  # untag only: the data is garbage now
    junk = os.path.join(env.root, ".tmp", "legacy-temp")  # a pre-session temp file, old
    with open(junk, "w") as f:
        f.write("x")
    os.utime(junk, (time.time() - 7200,) * 2)
    p = env.pybuild("prune")
    assert f"removed {junk}" in p.stdout
    assert f"removed {len(blobs)} blobs" in p.stdout and "freed" in p.stdout
    assert not any(os.path.exists(env.blob(d)) for d in blobs)
    p = env.pybuild("gc")
    assert "removed 0 blobs" in p.stdout


def _wait(cond, timeout, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def test_gc_racing_a_build(env):
    """A build reuses cached layers that no tag reaches while gc runs beside it: gc waits
    for the build (use lock), both succeed, and the image is whole (fsck)."""
    base = busybox_base(env)
    env.dockerfile(base + "RUN echo one > /one\n")
    env.build(tag="first:1")
    _store_api(env, "s.delete('first:1')")  # its layers now only live in the layer cache
    env.dockerfile(base + "RUN echo one > /one\nRUN sleep 2; echo two > /two\n")
    build = subprocess.Popen([pybuild_cmd(), "--root", env.root, "build", "--progress", "plain",
                              "--runtime", os.environ.get("PYBUILD_TEST_RUNTIME", "pyrunc"),
                              "-t", "second:1", env.ctx],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait(lambda: any(n.endswith(".lock") for n in _files(env.root, "build")), 60)
        gc = subprocess.run([pybuild_cmd(), "--root", env.root, "gc"], capture_output=True,
                            text=True, timeout=300)
        out, _ = build.communicate(timeout=300)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode == 0, out
    assert gc.returncode == 0, gc.stderr
    assert "CACHED" in out.upper()
    assert all(os.path.exists(env.blob(d)) for d in _image_blobs(env, "second:1"))
    env.pybuild("fsck")
    files = env.rootfs("second:1")
    assert files["one"].data == b"one\n" and files["two"].data == b"two\n"
    assert "waiting for the other pybuild processes" in gc.stderr


# -- fsck -----------------------------------------------------------------------------------

def test_fsck_finds_damage_and_repairs(env):
    _build_two(env)
    env.dockerfile(COPY_ONLY + "COPY Dockerfile /df\n", name="Dockerfile.c")
    env.build("-f", os.path.join(env.ctx, "Dockerfile.c"), tag="c:1")
    assert "no problems" in env.pybuild("fsck").stdout
    man_b, _ = env.manifest("b:1")
    man_c, _ = env.manifest("c:1")
    # 1. a corrupt blob: b's own last layer, one byte changed
    corrupt = man_b["layers"][-1]["digest"]
    with open(env.blob(corrupt), "r+b") as f:
        f.seek(40)
        c = f.read(1)
        f.seek(40)
        f.write(bytes([c[0] ^ 0xFF]))
    # 2. a missing blob: c's config
    os.unlink(env.blob(man_c["config"]["digest"]))
    # 3. a tampered extracted layer: a file changed, one planted
    tampered = None
    for hexd in _files(env.root, "layers"):
        d = os.path.join(env.root, "layers", hexd)
        if os.path.isfile(os.path.join(d, "bin", "busybox")) and \
                not os.path.islink(os.path.join(d, "bin", "busybox")):
            tampered = hexd
            with open(os.path.join(d, "bin", "busybox"), "r+b") as f:
                f.seek(100)
                f.write(b"TAMPERED")
            with open(os.path.join(d, "planted"), "w") as f:
                f.write("x")
    assert tampered, "no extracted layer holds busybox: nothing to tamper with"
    out = env.pybuild("fsck", ok=False).stdout
    assert f"blob {corrupt}: content hashes to" in out
    assert f"image b:1: corrupt layer {corrupt}" in out
    assert f"image c:1: missing config {man_c['config']['digest']}" in out
    assert f"extracted layer sha256:{tampered}" in out and "bin/busybox: content differs" in out
    assert "planted: not in the layer" in out
    assert "image a:1" not in out
    out = env.pybuild("fsck", "--repair").stdout
    assert f"repaired: removed blob {corrupt}" in out
    assert "repaired: untagged b:1" in out and "repaired: untagged c:1" in out
    assert f"repaired: removed extracted layer sha256:{tampered}" in out
    assert not os.path.exists(os.path.join(env.root, "layers", tampered))
    assert "no problems" in env.pybuild("fsck").stdout
    rows = json.loads(env.pybuild("images", "--format", "json").stdout)
    assert {r["Repository"] for r in rows} == {"a"}
    # the store works again: the damaged images build anew, the layer extracts anew
    env.build("-f", os.path.join(env.ctx, "Dockerfile.b"), tag="b:1")
    env.build("-f", os.path.join(env.ctx, "Dockerfile.c"), tag="c:1")
    assert "no problems" in env.pybuild("fsck").stdout
    assert env.rootfs("b:1")["only-b"].data == b"only-b\n"


# -- a full disk during load ---------------------------------------------------------------

def test_load_on_a_full_disk(env):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    env.write("big", os.urandom(6 << 20))
    env.busybox()
    env.dockerfile(COPY_ONLY + "COPY big /big\n")
    env.build(tag="big:1")
    arch = os.path.join(env.base, "big.tar")
    env.pybuild("save", "-o", arch, "big:1")
    small = os.path.join(env.base, "small")
    os.mkdir(small)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", small], check=True)
    try:
        root = os.path.join(small, "store")
        err = _one_line_error(env.pybuild("load", "-i", arch, root=root, ok=False))
        assert "No space left on device" in err and "load" in err, err
        assert env.index(root)["manifests"] == []
        assert _files(root, ".tmp") == [] and _files(root, "build") == []
        assert "no problems" in env.pybuild("fsck", root=root).stdout
        env.pybuild("gc", root=root)
        assert _files(root, "blobs/sha256") == []
    finally:
        subprocess.run(["umount", small], check=True)
