"""Built images are accepted by the ecosystem's own tools."""
import os
import shutil
import subprocess

import pytest

from build_e2e import env  # noqa: F401  (fixture)
from build_e2e import busybox_base, remove_tree


def _need(tool):
    if not shutil.which(tool):
        pytest.fail(f"{tool} is not installed (.ci/setup installs it)")


def _image(env):
    env.write("hello.sh", "#!/bin/sh\necho hello from $(cat /greeting)\n", mode=0o755)
    env.dockerfile(busybox_base(env, """\
COPY hello.sh /usr/local/bin/hello
RUN echo pybuild > /greeting && rm -f /bin/vi
ENV LANG=C.UTF-8
CMD ["/usr/local/bin/hello"]
"""))


def _run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert p.returncode == 0, f"{' '.join(cmd)}: {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def test_oci_image_tool_umoci_skopeo(env):
    for t in ("oci-image-tool", "umoci", "skopeo"):
        _need(t)
    _image(env)
    layout = os.path.join(env.base, "layout")
    env.build("-o", f"oci:{layout}:v1", tag="consumer:v1")
    _run(["oci-image-tool", "validate", "--type", "image", "--ref", "name=v1", layout])
    bundle = os.path.join(env.base, "umoci-bundle")
    _run(["umoci", "unpack", "--image", f"{layout}:v1", bundle])
    rootfs = os.path.join(bundle, "rootfs")
    with open(os.path.join(rootfs, "greeting")) as f:
        assert f.read() == "pybuild\n"
    assert os.path.islink(os.path.join(rootfs, "bin", "sh"))
    assert not os.path.lexists(os.path.join(rootfs, "bin", "vi"))  # whiteout applied
    archive = os.path.join(env.base, "copy.tar")
    _run(["skopeo", "copy", f"oci:{layout}:v1", f"oci-archive:{archive}:v1"])
    assert os.path.getsize(archive) > 0
    # the store itself is an OCI layout skopeo reads
    _run(["skopeo", "inspect", f"oci:{env.root}:consumer:v1"])


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_podman_load_and_run(env, fmt):
    _need("podman")
    _image(env)
    archive = os.path.join(env.base, f"image-{fmt}.tar")
    env.build("-o", f"{fmt}:{archive}", tag="localhost/pybuild-test:v1")
    proot = os.path.join(env.base, "podman-root")
    prun = os.path.join(env.base, "podman-run")
    podman = ["podman", "--root", proot, "--runroot", prun, "--storage-driver", "vfs",
              "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
    try:
        p = _run(podman + ["load", "-i", archive])
        loaded = [line.split(":", 1)[1].strip() for line in p.stdout.splitlines()
                  if line.startswith("Loaded image")]
        assert loaded, p.stdout
        ref = loaded[0].split(",")[0]
        # without CAP_SYS_RESOURCE podman's default (raised) rlimits cannot be set: ask
        # for low ones
        p = _run(podman + ["--runtime", "runc", "run", "--rm", "--network", "none",
                           "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", ref])
        assert p.stdout.strip() == "hello from pybuild"
    finally:
        subprocess.run(podman + ["rmi", "-a", "-f"], capture_output=True)
        remove_tree(prun)
        remove_tree(proot)
