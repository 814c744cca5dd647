"""Fixtures shared by every test: the installed commands, busybox bundles, leak checks.

Tests drive the installed `pyrunc`/`pybuild` the way a user or podman would. Each test
gets its own state root and bundle under a temp dir, and fails if it leaves a mount
behind.
"""

import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def _command(name: str) -> str:
    path = os.environ.get(name.upper()) or shutil.which(name)
    if not path:
        pytest.exit(f"{name} is not installed: run `bash .ci/setup` first", returncode=1)
    return path


@pytest.fixture(scope="session")
def pyrunc_bin() -> str:
    return _command("pyrunc")


def make_rootfs(path: str) -> str:
    """A static busybox rootfs: /bin/busybox plus a link per applet, /etc files."""
    os.makedirs(os.path.join(path, "bin"), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        link = os.path.join(path, "bin", a)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    for d in ("etc", "tmp", "proc", "sys", "dev", "root", "home/user"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n")
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write("root:x:0:\nuser:x:1000:\n")
    return path


def mounts_under(prefix: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp == prefix or mp.startswith(prefix.rstrip("/") + "/"):
                out.append(mp)
    return out


def safe_rmtree(path: str) -> None:
    """Unmount anything left under path (deepest first), then remove without crossing mounts."""
    for mp in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)


class Runtime:
    """Runs the installed pyrunc against a private state root."""

    def __init__(self, binary: str, root: str):
        self.binary = binary
        self.root = root

    def __call__(self, *args, check=False, timeout=30, **kw) -> subprocess.CompletedProcess:
        # Capture through files, not pipes: a created container's init inherits pyrunc's
        # stdio and would hold a pipe open long after pyrunc exits (conmon gives it its own).
        if "stdout" in kw or "capture_output" in kw:
            kw.setdefault("text", True)
            p = subprocess.run([self.binary, "--root", self.root, *args], timeout=timeout, **kw)
        else:
            with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
                p = subprocess.run([self.binary, "--root", self.root, *args], timeout=timeout,
                                   stdout=out, stderr=err, text=True, **kw)
                out.seek(0)
                err.seek(0)
                p.stdout, p.stderr = out.read(), err.read()
        if check and p.returncode != 0:
            raise AssertionError(f"pyrunc {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid, check=True).stdout)


class Bundle:
    def __init__(self, path: str, rootfs: str, binary: str):
        self.path = path
        self.rootfs = rootfs
        subprocess.run([binary, "spec", "-b", path], check=True)
        with open(self.config_path) as f:
            self.config = json.load(f)
        self.config["process"]["terminal"] = False
        self.config["root"]["path"] = rootfs

    @property
    def config_path(self) -> str:
        return os.path.join(self.path, "config.json")

    def set_args(self, *args: str) -> "Bundle":
        self.config["process"]["args"] = list(args)
        return self.write()

    def write(self) -> "Bundle":
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=1)
        return self


@pytest.fixture(scope="session")
def rootfs_template(tmp_path_factory) -> str:
    return make_rootfs(str(tmp_path_factory.mktemp("rootfs-template") / "rootfs"))


@pytest.fixture
def workdir(tmp_path):
    """A temp dir that is checked for leftover mounts and removed safely."""
    d = str(tmp_path)
    yield d
    left = mounts_under(d)
    safe_rmtree(d)
    assert not left, f"mounts left behind: {left}"


@pytest.fixture
def runtime(pyrunc_bin, workdir) -> Runtime:
    root = os.path.join(workdir, "state")
    rt = Runtime(pyrunc_bin, root)
    yield rt
    # Delete whatever a failed test left, so no process or cgroup outlives it.
    if os.path.isdir(root):
        for cid in os.listdir(root):
            rt("delete", "--force", cid)


@pytest.fixture
def bundle(pyrunc_bin, workdir, rootfs_template) -> Bundle:
    path = os.path.join(workdir, "bundle")
    os.makedirs(path)
    rootfs = os.path.join(path, "rootfs")
    subprocess.run(["cp", "-a", rootfs_template, rootfs], check=True)
    return Bundle(path, rootfs, pyrunc_bin)


@pytest.fixture
def cid() -> str:
    return "t-" + uuid.uuid4().hex[:12]
