"""Helpers for pybuild's end-to-end tests: run the installed `pybuild`, read the store.

Every test gets its own store root and context under a temp dir prefixed `pybuild-build-`,
and checks afterwards that no mount under it is left behind.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import uuid

import pytest

BUSYBOX = "/bin/busybox"
# RUN steps run in pyrunc, as pybuild's users get by default; PYBUILD_TEST_RUNTIME=runc
# runs the same tests with runc to tell a builder bug from a runtime one.
RUNTIME = os.environ.get("PYBUILD_TEST_RUNTIME", "pyrunc")


def pybuild_cmd() -> str:
    exe = os.environ.get("PYBUILD")
    if exe:
        return exe
    beside = os.path.join(os.path.dirname(sys.executable), "pybuild")
    if os.path.exists(beside):
        return beside
    found = shutil.which("pybuild")
    if not found:
        pytest.fail("the pybuild command is not installed (pip install -e .)")
    return found


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def remove_tree(path: str) -> None:
    left = mounts_under(path)
    for m in sorted(left, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)
    assert not left, f"mounts left behind: {left}"


class Env:
    def __init__(self, base: str):
        self.base = base
        self.root = os.path.join(base, "store")
        self.ctx = os.path.join(base, "ctx")
        os.makedirs(self.ctx)

    # -- context --------------------------------------------------------------------
    def write(self, rel: str, data, mode: int | None = None) -> str:
        path = os.path.join(self.ctx, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        if mode is not None:
            os.chmod(path, mode)
        return path

    def dockerfile(self, text: str, name: str = "Dockerfile") -> str:
        return self.write(name, text)

    def busybox(self, rel: str = "busybox") -> None:
        shutil.copy2(BUSYBOX, os.path.join(self.ctx, rel))

    # -- running --------------------------------------------------------------------
    def pybuild(self, *args, ok=True, env=None, root=None, runtime=True):
        cmd = [pybuild_cmd(), "--root", root or self.root, *args]
        if runtime and args and args[0] == "build":
            cmd[4:4] = ["--runtime", RUNTIME]
        e = dict(os.environ)
        e.pop("SOURCE_DATE_EPOCH", None)
        e.update(env or {})
        p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300)
        if ok and p.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        if ok is False and p.returncode == 0:
            pytest.fail(f"{' '.join(cmd)} succeeded but should have failed:\n{p.stderr}")
        return p

    def build(self, *args, tag="test:latest", **kw):
        extra = ["-t", tag] if tag else []
        return self.pybuild("build", "--progress", "plain", *extra, *args, self.ctx, **kw)

    # -- reading the store ------------------------------------------------------------
    def blob(self, digest: str, root=None) -> str:
        return os.path.join(root or self.root, "blobs", "sha256", digest.split(":", 1)[1])

    def index(self, root=None) -> dict:
        with open(os.path.join(root or self.root, "index.json")) as f:
            return json.load(f)

    def manifest(self, name="test:latest", root=None) -> tuple[dict, dict]:
        for m in self.index(root)["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
                with open(self.blob(m["digest"], root)) as f:
                    man = json.load(f)
                with open(self.blob(man["config"]["digest"], root)) as f:
                    cfg = json.load(f)
                man["_digest"] = m["digest"]
                return man, cfg
        raise AssertionError(f"{name} not in the store")

    def config(self, name="test:latest") -> dict:
        return self.manifest(name)[1]

    def layer_members(self, desc: dict, root=None) -> dict:
        """{name: TarInfo (with .data for regular files)} of one layer."""
        out = {}
        with tarfile.open(self.blob(desc["digest"], root)) as tf:
            for m in tf.getmembers():
                data = tf.extractfile(m).read() if m.isreg() else None
                out[m.name.rstrip("/")] = types.SimpleNamespace(
                    name=m.name, type=m.type, mode=m.mode, uid=m.uid, gid=m.gid, mtime=m.mtime,
                    linkname=m.linkname, size=m.size, data=data, isdir=m.isdir(),
                    issym=m.issym(), isreg=m.isreg(), pax=dict(m.pax_headers))
        return out

    def all_layers(self, name="test:latest") -> list[dict]:
        man, _ = self.manifest(name)
        return [self.layer_members(d) for d in man["layers"]]

    def rootfs(self, name="test:latest") -> dict:
        """The image's files after applying every layer (whiteouts honoured)."""
        files: dict = {}
        for layer in self.all_layers(name):
            for path in sorted(layer):
                base = os.path.basename(path)
                parent = os.path.dirname(path)
                if base == ".wh..wh..opq":
                    for k in [k for k in files if k.startswith(parent + "/")]:
                        del files[k]
                elif base.startswith(".wh."):
                    gone = os.path.join(parent, base[4:])
                    for k in [k for k in files if k == gone or k.startswith(gone + "/")]:
                        del files[k]
            for path, m in layer.items():
                if not os.path.basename(path).startswith(".wh."):
                    files[path] = m
        return files


@pytest.fixture
def env():
    # hex only: mkdtemp's "_" may follow the "-" (or end the name), and podman refuses such a
    # path's name as an image reference when it pulls oci:PATH (test_network)
    base = os.path.join(tempfile.gettempdir(), "pybuild-build-" + uuid.uuid4().hex[:12])
    os.mkdir(base, 0o700)
    try:
        yield Env(base)
    finally:
        remove_tree(base)


def busybox_base(e: Env, extra: str = "") -> str:
    """Dockerfile head: scratch + busybox installed as /bin/sh and friends."""
    e.busybox()
    return ("FROM scratch\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n' + extra)
