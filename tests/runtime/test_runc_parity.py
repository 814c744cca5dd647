"""Configs runc runs and pyrunc once refused or broke, end to end through the installed
pyrunc (PYRUNC=runc runs the same tests against runc 1.1.5 for comparison):

- a read-only /dev tmpfs: runc mounts /dev (and every tmpfs) writable, puts /dev/pts, the
  device nodes and the rest on it, and makes it read-only in finalizeRootfs;
- bind sources a user-namespaced container's root cannot reach: runc opens them as the
  host's root before init needs them (mountFds), pyrunc clones them (open_tree) in create;
- no mount namespace: the caller's is inherited (runtime-spec); runc mounts in it and
  chroots. Those tests run the runtime in a private mount namespace (util-linux unshare),
  so nothing is ever mounted in the host's.
"""

import json
import os
import subprocess
import tempfile

import pytest

from conftest import Bundle, Runtime, make_rootfs, mounts_under, safe_rmtree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create containers")


@pytest.fixture
def pubdir():
    """A temp dir every uid may search (pytest's tmp_path is below a 0700 directory, which
    a user-namespaced container's root could not reach even for its rootfs)."""
    d = tempfile.mkdtemp(prefix="pyrunc-parity-")
    os.chmod(d, 0o755)
    yield d
    left = mounts_under(d)
    safe_rmtree(d)
    assert not left, f"mounts left behind: {left}"


@pytest.fixture
def rt(pyrunc_bin, pubdir):
    r = Runtime(pyrunc_bin, os.path.join(pubdir, "state"))
    yield r
    for cid in os.listdir(r.root) if os.path.isdir(r.root) else ():
        r("delete", "--force", cid)


@pytest.fixture
def pbundle(pyrunc_bin, pubdir, rootfs_template):
    path = os.path.join(pubdir, "bundle")
    os.makedirs(path)
    rootfs = os.path.join(path, "rootfs")
    subprocess.run(["cp", "-a", rootfs_template, rootfs], check=True)
    return Bundle(path, rootfs, pyrunc_bin)


def _mount(config: dict, dest: str) -> dict:
    return next(m for m in config["mounts"] if m["destination"] == dest)


def _userns_supported() -> bool:
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            return int(f.read()) > 0
    except OSError:
        return os.path.exists("/proc/self/ns/user")


# -- 1. read-only /dev ---------------------------------------------------------------------

def test_read_only_dev_gets_pts_and_nodes_then_stays_read_only(rt, bundle, cid):
    """`ro` on the /dev tmpfs: before, pyrunc mounted it read-only at once and failed on
    /dev/pts ("mounts[2] (/dev/pts): Read-only file system"); runc starts the container."""
    _mount(bundle.config, "/dev")["options"].append("ro")
    # and a read-only tmpfs whose contents are copied up first (runc's tmpcopyup)
    os.makedirs(os.path.join(bundle.rootfs, "opt"), exist_ok=True)
    with open(os.path.join(bundle.rootfs, "opt", "seed"), "w") as f:
        f.write("seeded\n")
    bundle.config["mounts"].append({"destination": "/opt", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["ro", "tmpcopyup", "mode=755"]})
    bundle.set_args("sh", "-c", """
        grep -q ' /dev/pts devpts ' /proc/self/mounts || { echo no-pts; exit 1; }
        grep ' /dev tmpfs ' /proc/self/mounts | grep -q ' ro,' || { echo dev-rw; exit 1; }
        grep ' /opt tmpfs ' /proc/self/mounts | grep -q ' ro,' || { echo opt-rw; exit 1; }
        [ -e /dev/pts/ptmx ] && [ -c /dev/null ] && [ -L /dev/ptmx ] || { echo no-nodes; exit 1; }
        echo x > /dev/null || exit 1
        if touch /dev/new 2>/dev/null; then echo dev-writable; exit 1; fi
        if touch /opt/new 2>/dev/null; then echo opt-writable; exit 1; fi
        cat /opt/seed""")
    p = rt("run", "-b", bundle.path, cid)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout == "seeded\n", (p.stdout, p.stderr)


# -- 2. bind sources only the host's root can reach -----------------------------------------

@pytest.mark.skipif(not _userns_supported(), reason="the kernel has no user namespaces")
def test_userns_container_binds_sources_behind_a_root_only_directory(rt, pbundle, cid, pubdir):
    """A 0700 root-owned host directory, and a directory below it, bind-mounted into a
    container whose root is host uid 100000. Before, pyrunc's init looked the source up as
    that uid: "mount source .../secret/sub for /mnt/sub: Permission denied"."""
    secret = os.path.join(pubdir, "secret")
    os.makedirs(os.path.join(secret, "sub"))
    os.chmod(secret, 0o700)
    with open(os.path.join(secret, "sub", "f"), "w") as f:
        f.write("behind-0700\n")
    os.chmod(os.path.join(secret, "sub", "f"), 0o644)
    c = pbundle.config
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    # a cgroup mount is not what this is about (v1 needs more in a user namespace)
    c["mounts"] = [m for m in c["mounts"] if m["type"] != "cgroup"]
    c["mounts"] += [
        {"destination": "/mnt/s", "type": "bind", "source": secret, "options": ["bind", "ro"]},
        {"destination": "/mnt/sub", "type": "bind", "source": os.path.join(secret, "sub"),
         "options": ["rbind"]},
    ]
    for d in ("mnt/s", "mnt/sub"):  # the rootfs is root's: uid 100000 could not make them
        os.makedirs(os.path.join(pbundle.rootfs, d))
    pbundle.set_args("sh", "-c", """
        id -u
        cat /mnt/sub/f
        grep ' /mnt/s ' /proc/self/mounts | grep -q ' ro,' || echo s-rw
        stat -c %a /mnt/s""")
    p = rt("run", "-b", pbundle.path, cid)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.split() == ["0", "behind-0700", "700"], (p.stdout, p.stderr)


@pytest.mark.skipif(not _userns_supported(), reason="the kernel has no user namespaces")
def test_userns_bind_of_a_shared_host_mount_does_not_propagate_back(rt, pbundle, cid, pubdir):
    """The source's clone is made in the host's namespace: left a peer of a shared source,
    a mount the container makes below it would appear on the host. It must be a slave, as
    a bind made inside the container's own namespace is."""
    shared = os.path.join(pubdir, "shared")
    os.makedirs(shared)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "parity-shared", shared], check=True)
    try:
        subprocess.run(["mount", "--make-shared", shared], check=True)
        os.mkdir(os.path.join(shared, "x"))
        c = pbundle.config
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] = [m for m in c["mounts"] if m["type"] != "cgroup"]
        c["mounts"].append({"destination": "/mnt/shared", "type": "bind", "source": shared,
                            "options": ["rbind"]})
        os.makedirs(os.path.join(pbundle.rootfs, "mnt", "shared"))
        for caps in c["process"]["capabilities"].values():
            caps.append("CAP_SYS_ADMIN")
        pbundle.set_args("sh", "-c", "mount -t tmpfs from-the-container /mnt/shared/x && echo mounted")
        p = rt("run", "-b", pbundle.path, cid)
        assert p.returncode == 0 and p.stdout == "mounted\n", (p.stdout, p.stderr)
        assert mounts_under(os.path.join(shared, "x")) == [], "the container's mount reached the host"
    finally:
        subprocess.run(["umount", "-R", shared], check=False)


# -- 3. no mount namespace -----------------------------------------------------------------

def _in_private_mntns(pyrunc_bin, root, *args, timeout=60):
    """`pyrunc --root ROOT ARGS` in a new private mount namespace; the first line of stdout
    is that namespace's id."""
    script = 'readlink /proc/self/ns/mnt; exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                           "sh", pyrunc_bin, "--root", root, *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def _without_mount_ns(config: dict) -> None:
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "mount"]
    config["linux"].pop("maskedPaths", None)
    config["linux"].pop("readonlyPaths", None)


def test_no_mount_namespace_runs_in_the_callers(pyrunc_bin, pbundle, cid, pubdir):
    """Before: "linux.namespaces: pyrunc needs a mount namespace". runc mounts the config's
    mounts in the caller's namespace and chroots into the rootfs."""
    _without_mount_ns(pbundle.config)
    pbundle.set_args("sh", "-c", """
        readlink /proc/self/ns/mnt
        grep '^user:' /etc/passwd
        grep -q ' /proc proc ' /proc/self/mounts && echo proc
        [ -c /dev/null ] && [ -e /dev/pts/ptmx ] && echo dev""")
    root = os.path.join(pubdir, "state")
    p = _in_private_mntns(pyrunc_bin, root, "run", "-b", pbundle.path, cid)
    try:
        assert p.returncode == 0, (p.stdout, p.stderr)
        lines = p.stdout.split("\n")
        assert lines[0].startswith("mnt:[") and lines[1] == lines[0], p.stdout  # the caller's
        assert lines[2:] == ["user:x:1000:1000:user:/home/user:/bin/sh", "proc", "dev", ""], p.stdout
    finally:
        subprocess.run([pyrunc_bin, "--root", root, "delete", "-f", cid], capture_output=True)


@pytest.mark.parametrize("key", ["maskedPaths", "readonlyPaths"])
def test_no_mount_namespace_with_masked_paths_is_refused_as_runc(pyrunc_bin, pbundle, cid, pubdir, key):
    """runc's validate: "unable to restrict sys entries without a private MNT namespace"."""
    _without_mount_ns(pbundle.config)
    pbundle.config["linux"][key] = ["/proc/kcore"]
    pbundle.set_args("true")
    root = os.path.join(pubdir, "state")
    p = _in_private_mntns(pyrunc_bin, root, "create", "-b", pbundle.path, cid)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "unable to restrict sys entries without a private" in p.stderr, p.stderr
    if "pyrunc" in os.path.basename(pyrunc_bin):
        assert f"config.json: linux.{key}: unable" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    s = subprocess.run([pyrunc_bin, "--root", root, "state", cid], capture_output=True, text=True)
    assert s.returncode == 1 and "does not exist" in s.stderr, s


# -- the protocol, the shared helpers, the one libc ------------------------------------------

def test_exec_through_the_sync_protocol_as_runc(rt, bundle, cid):
    """exec's child reports its pid, gets CONTINUE, sends READY (or ERROR): the output and
    status of the process, and a failure as one line with runc's exit status 255."""
    bundle.set_args("sleep", "30")
    rt("run", "-d", "-b", bundle.path, cid, check=True)
    p = rt("exec", cid, "sh", "-c", "echo in-exec; exit 3")
    assert (p.returncode, p.stdout) == (3, "in-exec\n"), p
    p = rt("exec", cid, "nope-not-here")
    assert p.returncode == 255, p
    assert 'nope-not-here' in p.stderr and "executable file not found in $PATH" in p.stderr, p.stderr
    if "pyrunc" in os.path.basename(rt.binary):
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


PKG = os.path.join(os.path.dirname(__file__), "..", "..", "runtime", "pyrunc")


def _modules():
    import ast

    for dirpath, _, files in os.walk(PKG):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    yield os.path.relpath(path, PKG), ast.parse(fh.read())


def test_shape_one_libc_one_protocol_no_private_imports():
    """Source shape the issue asks for: libc is loaded once (linux.py); the parent/child
    messages are sync.py's constants; no module imports another's _private names."""
    import ast

    names = {rel[:-3].replace("/", ".") for rel, _ in _modules()}
    for rel, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "CDLL" and rel != "linux.py":
                lib = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
                assert lib and lib != "libc.so.6", f"{rel}:{node.lineno} loads libc: use pyrunc.linux"
            if isinstance(node, ast.ImportFrom) and node.level:
                for a in node.names:
                    assert not a.name.startswith("_") or a.name.startswith("__"), \
                        f"{rel}:{node.lineno} imports {a.name}"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id in names and node.value.id != "os":
                raise AssertionError(f"{rel}:{node.lineno} uses {node.value.id}.{node.attr}")
            if rel in ("process.py", "init.py", "execproc.py") and isinstance(node, ast.Call) \
                    and isinstance(node.func, ast.Attribute) and node.func.attr in ("send", "expect", "wait") \
                    and node.args and isinstance(node.args[0], ast.Constant):
                raise AssertionError(f"{rel}:{node.lineno} sends a literal {node.args[0].value!r}: use sync.*")
        if rel == "init.py":
            imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module is None
                         for a in n.names}
            assert "process" not in imported, "init.py imports process (the circle sync.py broke)"
