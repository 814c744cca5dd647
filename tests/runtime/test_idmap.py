"""pyrunc.idmap end to end: real idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP) in a
private mount namespace (util-linux unshare), on a tmpfs and on this machine's /tmp."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from ocispec.errors import OCIError
from pyrunc import idmap

PRELUDE = """
import json, os, subprocess
from pyrunc import idmap
from ocispec.errors import OCIError
D = os.environ["D"]
def owner(p):
    st = os.stat(p)
    return [st.st_uid, st.st_gid]
def touch(p, uid, gid):
    open(p, "w").close()
    os.chown(p, uid, gid)
def m(c, h, n):
    return [{"containerID": c, "hostID": h, "size": n}]
out = {}
"""


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="pyrunc-idmap-")
    yield d
    subprocess.run(["rm", "-rf", "--one-file-system", d], check=True)
    with open("/proc/self/mountinfo") as f:
        assert d not in f.read()


def in_private_mount_ns(workdir, body):
    code = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                        "-c", code], env={**os.environ, "D": workdir},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("fs", ["tmpfs", "tmp-dir"])
def test_uid_1000_shows_as_0_through_the_mount(workdir, fs):
    out = in_private_mount_ns(workdir, f"""
        src, dst = D + "/src", D + "/dst"
        os.mkdir(src); os.mkdir(dst)
        if {fs!r} == "tmpfs":
            subprocess.run(["mount", "-t", "tmpfs", "pyrunc-idmap", src], check=True)
        os.chown(src, 1000, 1000)
        touch(src + "/f1000", 1000, 1001)
        touch(src + "/f0", 0, 0)
        tree = idmap.make_idmapped_tree(src, m(1000, 0, 2), m(1000, 0, 2), False)
        target = os.open(dst, os.O_PATH | os.O_DIRECTORY)
        # As pyrunc's rootfs code does: the target by fd, named as a magic link.
        idmap.attach(tree, f"/proc/self/fd/{{target}}")
        os.close(target)
        os.close(tree)
        out["dir"] = owner(dst)
        out["f1000"] = owner(dst + "/f1000")
        out["f0"] = owner(dst + "/f0")
        out["orig"] = owner(src + "/f1000")
        # A file made through the mount by root (uid 0) lands on disk as 1000.
        touch(dst + "/new", 0, 0)
        out["new_on_disk"] = owner(src + "/new")
        subprocess.run(["umount", dst], check=True)
    """)
    assert out["dir"] == [0, 0]
    assert out["f1000"] == [0, 1]
    assert out["f0"] == [65534, 65534]  # outside the mapping: the overflow id
    assert out["orig"] == [1000, 1001]  # the source itself is untouched
    assert out["new_on_disk"] == [1000, 1000]


def test_recursive_idmaps_submounts_and_plain_idmap_does_not_take_them(workdir):
    out = in_private_mount_ns(workdir, """
        src = D + "/src"
        os.mkdir(src); os.mkdir(D + "/flat"); os.mkdir(D + "/rec")
        os.mkdir(src + "/sub")
        subprocess.run(["mount", "-t", "tmpfs", "pyrunc-idmap-sub", src + "/sub"], check=True)
        touch(src + "/sub/f", 1000, 1000)
        for name, rec in (("flat", False), ("rec", True)):
            tree = idmap.make_idmapped_tree(src, m(1000, 0, 1), m(1000, 0, 1), rec)
            target = os.open(D + "/" + name, os.O_PATH | os.O_DIRECTORY)
            idmap.attach(tree, target)  # by fd
            os.close(target)
            os.close(tree)
        out["flat"] = os.listdir(D + "/flat/sub")
        out["rec"] = owner(D + "/rec/sub/f")
        subprocess.run(["umount", "-R", D + "/rec"], check=True)
        subprocess.run(["umount", D + "/flat"], check=True)
    """)
    assert out["flat"] == []  # a non-recursive clone leaves the submount out
    assert out["rec"] == [0, 0]


def test_filesystem_without_idmap_support_is_a_clear_error(workdir):
    out = in_private_mount_ns(workdir, """
        try:
            idmap.make_idmapped_tree("/proc", m(0, 1000, 1), m(0, 1000, 1), False,
                                     where="mounts[4]")
        except OCIError as e:
            out["error"] = str(e)
    """)
    assert out["error"] == ("mounts[4]: cannot idmap the mount of /proc: Invalid argument (the "
                            "filesystem of the source does not support idmapped mounts, or "
                            "the kernel is older than 5.12)")


def test_missing_source_and_refused_mapping(workdir):
    with pytest.raises(OCIError, match=r"^mounts\[1\]: cannot clone the mount at /pyrunc-idmap-"
                       r"nonexistent: No such file or directory$"):
        idmap.make_idmapped_tree("/pyrunc-idmap-nonexistent", [{"containerID": 0, "hostID": 0,
                                 "size": 1}], [{"containerID": 0, "hostID": 0, "size": 1}],
                                 False, where="mounts[1]")
    overlapping = [{"containerID": 0, "hostID": 0, "size": 10},
                   {"containerID": 5, "hostID": 100, "size": 10}]
    with pytest.raises(OCIError, match=r"^mounts\[2\].uidMappings: the kernel refused the "
                       r"mapping .*: Invalid argument$"):
        idmap.userns_fd(overlapping, overlapping, where="mounts[2]")


def test_userns_fd_is_a_user_namespace_with_those_maps():
    before = _children()
    fd = idmap.userns_fd([{"containerID": 0, "hostID": 1000, "size": 5}],
                         [{"containerID": 0, "hostID": 2000, "size": 7}])
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        assert target.startswith("user:[") and target != os.readlink("/proc/self/ns/user")
    finally:
        os.close(fd)
    assert _children() == before  # the helper child is gone, reaped


def _children():
    kids = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            kids.update(f.read().split())
    return kids


ONE = [{"containerID": 0, "hostID": 1000, "size": 1}]


@pytest.mark.parametrize("mount, linux, want", [
    ({"type": "bind", "source": "/a", "destination": "/b"}, None, None),
    ({"type": "bind", "options": ["idmap"], "uidMappings": ONE, "gidMappings": ONE}, None,
     (ONE, ONE, False)),
    ({"type": "bind", "options": ["rbind", "ridmap"], "uidMappings": ONE, "gidMappings": ONE},
     None, (ONE, ONE, True)),
    ({"type": "bind", "options": ["idmap"]}, {"uidMappings": ONE, "gidMappings": ONE},
     (ONE, ONE, False)),
    ({"uidMappings": ONE, "gidMappings": ONE, "options": ["rbind"]}, None, (ONE, ONE, False)),
])
def test_plan(mount, linux, want):
    assert idmap.plan(mount, linux) == want


def test_tree_made_in_the_runtime_namespace_attaches_in_a_new_mount_namespace(workdir):
    """The flow for containers (as runc): the runtime makes the idmapped tree in its own
    namespaces, the container's init inherits the fd and attaches it in its mount
    namespace, so mappings stay relative to the host even under a container userns."""
    src, dst = os.path.join(workdir, "src"), os.path.join(workdir, "dst")
    os.mkdir(src)
    os.mkdir(dst)
    open(os.path.join(src, "f"), "w").close()
    os.chown(os.path.join(src, "f"), 1000, 1000)
    one = [{"containerID": 1000, "hostID": 0, "size": 1}]
    tree = idmap.make_idmapped_tree(src, one, one, False)
    try:
        code = ("import os, sys; from pyrunc import idmap; idmap.attach(int(sys.argv[1]), "
                "sys.argv[2]); st = os.stat(sys.argv[2] + '/f'); print(st.st_uid, st.st_gid)")
        p = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                            "-c", code, str(tree), dst], pass_fds=(tree,), capture_output=True,
                           text=True, timeout=60)
    finally:
        os.close(tree)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["0", "0"]
    assert os.listdir(dst) == []  # the mount exists only in the child's namespace
