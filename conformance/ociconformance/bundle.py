"""Bundles for conformance cases: a busybox-static rootfs and a default config.json.

The rootfs is built per case in milliseconds: one copy of the static busybox binary and a
symlink per applet, so whatever a case runs inside the container prints what the kernel
shows, with no helper binary of anyone else's.
"""

import copy
import functools
import json
import os
import shutil
import subprocess

BUSYBOX = "/bin/busybox"

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def _default_config() -> dict:
    """What `runc spec` writes (ocispec.defaults), made a config every runtime accepts: no
    terminal, no ambient caps, a writable root, no cgroup mount, the 1.0.2 ociVersion runc
    1.1 knows, and a hostname of our own."""
    from ocispec.defaults import runc_spec

    cfg = runc_spec(oci_version="1.0.2", args=["/bin/true"], terminal=False)
    p = cfg["process"]
    p["env"] = ["PATH=/bin:/sbin:/usr/bin:/usr/sbin", "TERM=xterm"]
    p["capabilities"] = {s: list(DEFAULT_CAPS) for s in ("bounding", "effective", "permitted")}
    cfg["root"]["readonly"] = False
    cfg["hostname"] = "occ"
    cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] != "cgroup"]
    return cfg


DEFAULT_CONFIG = _default_config()


def default_config() -> dict:
    return copy.deepcopy(DEFAULT_CONFIG)


@functools.cache
def applets() -> tuple[str, ...]:
    out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    return tuple(a for a in out.stdout.split() if a and "/" not in a)


def make_rootfs(rootfs: str) -> None:
    """A busybox rootfs: /bin/busybox, an applet symlink each, the usual empty dirs."""
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root", "mnt"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    # A copy, not a link: a container with a writable root must not reach the host's binary.
    shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
    bindir = os.path.join(rootfs, "bin")
    for a in applets():
        if a != "busybox":
            os.symlink("busybox", os.path.join(bindir, a))
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(rootfs, "etc", "group"), "w") as f:
        f.write("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")


class Bundle:
    """A bundle directory: rootfs/ plus config.json (written by write())."""

    def __init__(self, path: str):
        self.path = path
        self.rootfs = os.path.join(path, "rootfs")
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o755)  # a remapped root must be able to reach its rootfs
        make_rootfs(self.rootfs)
        self.config = default_config()

    def write(self, config: dict | None = None) -> None:
        if config is not None:
            self.config = config
        tmp = os.path.join(self.path, ".config.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.config, f, indent=1)
        os.replace(tmp, os.path.join(self.path, "config.json"))
