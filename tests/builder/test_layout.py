"""pybuild.image.layout/unpack: images our code writes are accepted by the ecosystem's own tools."""
import json
import os
import shutil
import subprocess
import uuid

import pytest

from ocispec.schema import validate_document
from pybuild.image.layer import LayerWriter
from pybuild.image.imagewriter import write_image
from pybuild.image.layout import (export_image, import_image, parse_destination, write_oci_layout)
from pybuild.image.store import Store
from pybuild.image.unpack import cleanup_bundle, unpack

BUSYBOX = shutil.which("busybox")
SDE = 1_700_000_000


def _busybox_image(store, tag, compression="gzip", text="hello from pybuild"):
    """A two-layer busybox image: base rootfs + a layer adding /msg and deleting /etc/motd."""
    with LayerWriter(store, compression, source_date_epoch=SDE) as base:
        for d in ("bin", "etc", "tmp", "root"):
            base.add_dir(d, 0o1777 if d == "tmp" else 0o755)
        base.add_path(BUSYBOX, "bin/busybox", uid=0, gid=0)
        for applet in ("sh", "echo", "cat", "ls", "id", "true"):
            base.add_symlink(f"bin/{applet}", "busybox")
        base.add_file_bytes("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
        base.add_file_bytes("etc/group", b"root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
        base.add_file_bytes("etc/motd", b"gone later\n")
    with LayerWriter(store, compression, source_date_epoch=SDE) as top:
        top.add_file_bytes("msg", (text + "\n").encode())
        top.add_whiteout("etc/motd")
    history = [{"created_by": "base", "created": "2023-11-14T22:13:20Z"},
               {"created_by": "msg", "created": "2023-11-14T22:13:20Z"}]
    return write_image(store, [base.result, top.result], history=history, created="2023-11-14T22:13:20Z",
                       config={"Cmd": ["cat", "/msg"], "Env": ["A=1"], "WorkingDir": "/tmp",
                               "Labels": {"org.example": "yes"}, "User": "app"}, tag=tag)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


def test_parse_destination():
    assert parse_destination("oci:/x/y:v1") == ("oci", "/x/y", "v1")
    assert parse_destination("docker-archive:/f.tar:a/b:v2") == ("docker-archive", "/f.tar", "a/b:v2")
    assert parse_destination("oci-archive:f.tar") == ("oci-archive", "f.tar", None)
    with pytest.raises(Exception, match="invalid image location"):
        parse_destination("dir:/x")


def test_reproducible_manifest(tmp_path):
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    assert _busybox_image(a, "x")["digest"] == _busybox_image(b, "x")["digest"]


def test_oci_layout_validates_and_umoci_unpacks(store, tmp_path):
    _busybox_image(store, "bb:v1")
    lay = tmp_path / "layout"
    export_image(store, "bb:v1", f"oci:{lay}:v1")
    export_image(store, "bb:v1", f"oci:{lay}:v2")  # merge into the existing layout
    idx = json.loads((lay / "index.json").read_text())
    man = json.loads((lay / "blobs" / "sha256" / idx["manifests"][0]["digest"][7:]).read_text())
    validate_document(man, "manifest")
    validate_document(json.loads((lay / "blobs" / "sha256" / man["config"]["digest"][7:]).read_text()),
                      "image-config")
    validate_document(json.loads((lay / "oci-layout").read_text()), "oci-layout")
    assert sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in idx["manifests"]) == ["v1", "v2"]
    validate_document(idx, "index")
    r = subprocess.run(["oci-image-tool", "validate", "--type", "image", "--ref", "name=v1", str(lay)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    bundle = tmp_path / "umoci-bundle"
    r = subprocess.run(["umoci", "unpack", "--image", f"{lay}:v1", str(bundle)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (bundle / "rootfs" / "msg").read_text() == "hello from pybuild\n"
    assert not (bundle / "rootfs" / "etc" / "motd").exists()
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["process"]["args"] == ["cat", "/msg"]
    # the store itself is an OCI layout skopeo reads; round-trip through an oci-archive
    arch = tmp_path / "skopeo.tar"
    r = subprocess.run(["skopeo", "copy", f"oci:{lay}:v1", f"oci-archive:{arch}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["skopeo", "copy", f"oci:{store.root}:bb:v1", f"oci:{tmp_path / 'copy'}:z"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # and we import what skopeo wrote
    s2 = Store(tmp_path / "store2")
    desc = import_image(s2, f"oci-archive:{arch}", store_tag="back:in")
    assert s2.resolve("back:in")["digest"] == desc["digest"]
    desc2 = import_image(s2, f"oci:{lay}:v2")
    assert desc2["digest"] == store.resolve("bb:v1")["digest"]


def test_import_errors(store, tmp_path):
    _busybox_image(store, "bb")
    lay = tmp_path / "l"
    write_oci_layout(store, "bb", lay, "t1")
    with pytest.raises(Exception, match="no image tagged 'nope'"):
        import_image(Store(tmp_path / "s2"), f"oci:{lay}:nope")
    # a corrupted blob is refused and nothing is tagged
    man = json.loads((lay / "index.json").read_text())["manifests"][0]
    mdoc = json.loads((lay / "blobs" / "sha256" / man["digest"][7:]).read_text())
    victim = lay / "blobs" / "sha256" / mdoc["layers"][1]["digest"][7:]
    victim.unlink()
    victim.write_bytes(b"tampered")
    s3 = Store(tmp_path / "s3")
    with pytest.raises(Exception, match="does not match"):
        import_image(s3, f"oci:{lay}:t1", store_tag="x")
    assert s3.list_images() == []


@pytest.fixture
def podman(tmp_path):
    """podman on a private vfs store (never the default one); cleaned up after."""
    import tempfile
    run = tempfile.mkdtemp(prefix="pyoci-pm-")  # runroot must be short
    root = tmp_path / "podman-root"
    # every piece of podman state private to this test: root, runroot, libpod tmpdir,
    # volumes and the image temp dir, so parallel podman users never meet ours
    vartmp = tmp_path / "podman-vartmp"
    vartmp.mkdir()
    base = ["podman", "--root", str(root), "--runroot", run, "--tmpdir", os.path.join(run, "libpod"),
            "--volumepath", str(root / "volumes"), "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "none", "--runtime", "runc"]
    env = dict(os.environ, TMPDIR=str(vartmp))

    def call(*args, check=True):
        r = subprocess.run([*base, *args], capture_output=True, text=True, timeout=180, env=env)
        if check:
            assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
        return r
    yield call
    call("system", "reset", "--force", check=False)
    with open("/proc/self/mountinfo") as f:
        leftovers = [line.split()[4] for line in f if str(tmp_path) in line or run in line]
    for m in sorted(leftovers, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", run], check=False)
    assert not leftovers, leftovers


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_podman_loads_and_runs(store, tmp_path, fmt, podman):
    name = f"localhost/pyoci-layout-{uuid.uuid4().hex[:8]}"
    _busybox_image(store, f"{name}:v1", compression="gzip" if fmt == "docker-archive" else "zstd",
                   text=f"hello via {fmt}")
    arch = tmp_path / f"img-{fmt}.tar"
    ref = f"{name}:v1" if fmt == "docker-archive" else "v1"
    export_image(store, f"{name}:v1", f"{fmt}:{arch}:{ref}")
    r = podman("load", "-i", str(arch))
    if fmt == "docker-archive":
        assert f"{name}:v1" in r.stdout
        image = f"{name}:v1"
    else:
        image = r.stdout.strip().split()[-1]
    r = podman("run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", image)
    assert r.stdout == f"hello via {fmt}\n"
    r = podman("run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", image, "id")
    assert r.stdout.startswith("uid=1000(app) gid=1000(app)")


def test_unpack_plain_and_overlay(store, tmp_path):
    _busybox_image(store, "bb")
    b1 = tmp_path / "bundle-plain"
    spec = unpack(store, "bb", b1)
    validate_document(spec, "config")
    from ocispec.runtime_config import validate_config
    validate_config(spec)
    assert spec["process"]["args"] == ["cat", "/msg"] and spec["process"]["cwd"] == "/tmp"
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [2000]}
    assert spec["annotations"]["org.example"] == "yes"
    assert spec["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert "A=1" in spec["process"]["env"] and any(e.startswith("PATH=") for e in spec["process"]["env"])
    assert (b1 / "rootfs" / "msg").read_text() == "hello from pybuild\n"
    assert not (b1 / "rootfs" / "etc" / "motd").exists()
    assert b1.stat().st_mode & 0o777 == 0o700
    b2 = tmp_path / "bundle-ovl"
    try:
        unpack(store, "bb", b2, overlay=True)
        assert os.stat(os.path.join(store.root, "layers")).st_mode & 0o777 == 0o700
        assert (b2 / "rootfs" / "msg").read_text() == "hello from pybuild\n"
        assert not (b2 / "rootfs" / "etc" / "motd").exists()  # whiteout honoured by overlayfs
        (b2 / "rootfs" / "new").write_text("n")
        assert (b2 / "upper" / "new").exists()
        r = subprocess.run(["runc", "--root", str(tmp_path / "runc-state"), "run", "--bundle", str(b2),
                            f"pyoci-layout-{uuid.uuid4().hex[:8]}"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "hello from pybuild\n"
    finally:
        cleanup_bundle(b2)
    assert not b2.exists()
    with open("/proc/self/mountinfo") as f:
        assert str(b2) not in f.read()


def test_podman_generated_config_validates(store, tmp_path, podman):
    """The config.json podman writes for conmon (seccomp profile, mounts, sysctls) passes
    both our schema and the fast validator pyrunc's create runs."""
    import glob
    from ocispec.runtime_config import validate_config
    name = f"localhost/pyoci-layout-{uuid.uuid4().hex[:8]}:v1"
    _busybox_image(store, name)
    arch = tmp_path / "img.tar"
    export_image(store, name, f"docker-archive:{arch}:{name}")
    podman("load", "-i", str(arch))
    cid = podman("create", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--cap-add", "SYS_ADMIN", "--sysctl",
                 "net.ipv4.ip_forward=1", "-v", f"{tmp_path}:/host:ro", name).stdout.strip()
    podman("init", cid)
    try:
        [path] = glob.glob(str(tmp_path / "podman-root" / "**" / cid / "userdata" / "config.json"), recursive=True)
        doc = json.loads(open(path).read())
        assert doc["linux"]["seccomp"]["syscalls"]
        validate_document(doc, "config")
        validate_config(doc)
    finally:
        podman("rm", "-f", cid)


def test_podman_save_imports_and_runs(store, tmp_path, podman):
    """podman save (docker-archive and oci-archive) -> our import -> unpack -> runc run."""
    name = f"localhost/pyoci-layout-{uuid.uuid4().hex[:8]}:v1"
    _busybox_image(store, name, text="round trip")
    arch = tmp_path / "ours.tar"
    export_image(store, name, f"docker-archive:{arch}:{name}")
    podman("load", "-i", str(arch))
    for fmt in ("docker-archive", "oci-archive"):
        saved = tmp_path / f"saved-{fmt}.tar"
        podman("save", "--format", fmt, "-o", str(saved), name)
        s2 = Store(tmp_path / f"store-{fmt}")
        src = f"{fmt}:{saved}:{name}" if fmt == "docker-archive" else f"{fmt}:{saved}"
        desc = import_image(s2, src, store_tag="back:v1")
        assert s2.resolve("back:v1")["digest"] == desc["digest"]
        bundle = tmp_path / f"bundle-{fmt}"
        unpack(s2, "back:v1", bundle)
        assert (bundle / "rootfs" / "msg").read_text() == "round trip\n"
        assert not (bundle / "rootfs" / "etc" / "motd").exists()
        r = subprocess.run(["runc", "--root", str(tmp_path / "runc-state"), "run", "--bundle", str(bundle),
                            f"pyoci-layout-{uuid.uuid4().hex[:8]}"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout == "round trip\n", r.stderr
    with pytest.raises(Exception, match="no image tagged"):
        import_image(Store(tmp_path / "s3"), f"docker-archive:{tmp_path / 'saved-docker-archive.tar'}:other:v9")


def test_unpack_failure_leaves_nothing(store, tmp_path):
    from pybuild.image.imagewriter import write_image
    with LayerWriter(store, "gzip") as lw:
        lw.add_file_bytes("etc/passwd", b"root:x:0:0::/:/bin/sh\n")
    write_image(store, [lw.result], config={"Cmd": ["true"], "User": "nobody"}, tag="nouser")
    for overlay in (False, True):
        b = tmp_path / f"b-{overlay}"
        with pytest.raises(Exception, match="unable to find user nobody"):
            unpack(store, "nouser", b, overlay=overlay)
        assert not b.exists()
        with open("/proc/self/mountinfo") as f:
            assert str(b) not in f.read()
