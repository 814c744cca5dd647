"""Working containers end to end through the installed `pybuild` and `pyrunc`: from, run,
copy, config, commit, containers, mount, umount, rm; overlay bundles from `unpack` with
run-time options; what a commit or 50 bundles cost; bad input leaves nothing behind."""
import json
import os
import subprocess
import time

import pytest

from build_e2e import busybox_base, env  # noqa: F401  (fixture)
from conftest import mounts_under


def _du(path: str) -> int:
    """Bytes on disk under path, not crossing into mounts (an overlay rootfs)."""
    out = subprocess.run(["du", "-sxB1", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def _image(e, extra: str = "", tag: str = "web:1"):
    e.dockerfile(busybox_base(e, 'RUN mkdir -p /www /etc /data/keep && echo hi > /www/index.html && '
                                 'echo root:x:0:0::/root:/bin/sh > /etc/passwd && '
                                 'echo app:x:1000:1000::/:/bin/sh >> /etc/passwd && '
                                 'echo old > /data/keep/a\n' + extra +
                              'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]\n'))
    e.build(tag=tag)


def _pyrunc(*args, root, **kw):
    if "-d" in args:  # a detached container keeps its stdio: never our pipes
        kw.update(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        kw["capture_output"] = True
    return subprocess.run([os.environ.get("PYRUNC", "pyrunc"), "--root", root, *args],
                          text=True, timeout=60, stdin=subprocess.DEVNULL, **kw)


def test_from_run_copy_config_commit(env):
    _image(env)
    before_index = env.index()
    base_man, base_cfg = env.manifest("web:1")
    name = env.pybuild("from", "web:1").stdout.strip()
    assert name == "web-working-container"
    assert env.pybuild("from", "--name", "c2", "web:1").stdout.strip() == "c2"
    # the exit status comes through; changes: a new file, a changed one, a deleted one
    # (whiteout) and a directory emptied and remade (opaque)
    p = env.pybuild("run", name, "--", "sh", "-c",
                    "echo changed > /www/index.html && rm /bin/vi && rm -rf /data/keep && "
                    "mkdir /data/keep && echo new > /data/keep/b && echo out; exit 3", ok=None)
    assert p.returncode == 3 and p.stdout == "out\n", p.stderr
    src = os.path.join(env.base, "host.txt")
    with open(src, "w") as f:
        f.write("from the host\n")
    env.pybuild("copy", name, src, "/www/")
    env.pybuild("config", name, "--env", "GREETING=hi", "--label", "stage=test", "--port", "8080",
                "--cmd", '["httpd", "-f", "-p", "8080", "-h", "/www"]', "--workingdir", "/www",
                "--user", "app")
    listed = env.pybuild("containers").stdout
    assert name in listed and "c2" in listed and "web:1" in listed
    digest = env.pybuild("commit", name, "web:2").stdout.strip()
    assert digest.startswith("sha256:")
    man, cfg = env.manifest("web:2")
    assert man["_digest"] == digest
    # one layer on top of the image's, with the whiteout, the opaque dir and the files
    assert man["layers"][:-1] == base_man["layers"] and len(man["layers"]) == len(base_man["layers"]) + 1
    top = env.layer_members(man["layers"][-1])
    assert top["www/index.html"].data == b"changed\n"
    assert top["www/host.txt"].data == b"from the host\n"
    assert "bin/.wh.vi" in top and "data/keep/.wh..wh..opq" in top
    assert top["data/keep/b"].data == b"new\n" and "data/keep/a" not in top
    # nothing the runtime made for its own mounts (/proc, /sys, /dev, resolv.conf) is in it
    assert not {"proc", "sys", "dev", "etc/resolv.conf", "etc/hosts"} & set(top), sorted(top)
    c = cfg["config"]
    assert "GREETING=hi" in c["Env"] and c["Labels"]["stage"] == "test"
    assert "8080/tcp" in c["ExposedPorts"] and c["WorkingDir"] == "/www" and c["User"] == "app"
    assert c["Cmd"] == ["httpd", "-f", "-p", "8080", "-h", "/www"]
    assert cfg["history"][:-1] == base_cfg["history"]
    assert cfg["history"][-1]["created_by"].startswith("pybuild commit: RUN sh -c echo changed")
    # the image it came from is unchanged; the committed one has the change
    assert env.manifest("web:1")[0] == base_man and \
        [m for m in env.index()["manifests"] if m in before_index["manifests"]] == before_index["manifests"]
    files = env.rootfs("web:2")
    assert "bin/vi" not in files and "data/keep/a" not in files and "bin/sh" in files
    assert env.rootfs("web:1")["www/index.html"].data == b"hi\n"
    # c2 of web:1 does not see the first container's changes
    assert env.pybuild("run", "c2", "--", "cat", "/www/index.html").stdout == "hi\n"
    # a container of the new image runs it
    c3 = env.pybuild("from", "web:2").stdout.strip()
    assert env.pybuild("run", c3, "--", "sh", "-c", "cat index.html; id -u; echo $GREETING").stdout \
        == "changed\n1000\nhi\n"  # as buildah: the config's User and WorkingDir, no Entrypoint
    # mount/umount/rm
    path = env.pybuild("mount", c3).stdout.strip()
    assert os.path.isfile(os.path.join(path, "www/host.txt"))
    env.pybuild("umount", c3)
    assert not mounts_under(path)
    assert path not in env.pybuild("mount").stdout
    env.pybuild("rm", name, "c2", c3)
    assert env.pybuild("containers", "-q").stdout == ""
    assert not mounts_under(env.root)
    assert os.listdir(os.path.join(env.root, "containers")) == []


def test_commit_squash_and_layer_size(env):
    """A container that changed one 200 KB file commits a layer of about that size."""
    env.write("big", os.urandom(8 << 20))
    env.write("small", os.urandom(200 << 10))
    env.dockerfile(busybox_base(env, "COPY big small /opt/\n"))
    env.build(tag="big:1")
    c = env.pybuild("from", "big:1").stdout.strip()
    env.pybuild("run", c, "--", "sh", "-c", "dd if=/dev/urandom of=/opt/small bs=1k count=200 2>/dev/null")
    env.pybuild("commit", c, "big:2")
    man, _ = env.manifest("big:2")
    size = man["layers"][-1]["size"]
    print(f"\ncommit of a container that rewrote a 200 KiB file: new layer {size} bytes")
    assert 200 << 10 <= size < 260 << 10, size
    env.pybuild("commit", "--squash", c, "big:flat")
    flat, fcfg = env.manifest("big:flat")
    assert len(flat["layers"]) == 1 and len(fcfg["history"]) == 1
    assert flat["layers"][0]["size"] > 8 << 20
    files = env.rootfs("big:flat")
    assert "opt/big" in files and "bin/busybox" in files and not any(".wh." in k for k in files)
    # the rest of config, and commit -m --rm
    env.pybuild("config", c, "--entrypoint", '["/bin/sh", "-c"]', "--volume", "/data",
                "--stop-signal", "SIGQUIT", "--author", "me", "--unsetenv", "PATH")
    env.pybuild("commit", "-m", "a message", "--rm", c, "big:3")
    _, cfg = env.manifest("big:3")
    assert cfg["config"]["Entrypoint"] == ["/bin/sh", "-c"] and cfg["config"]["Volumes"] == {"/data": {}}
    assert cfg["config"]["StopSignal"] == "SIGQUIT" and cfg["author"] == "me"
    assert not any(e.startswith("PATH=") for e in cfg["config"].get("Env", []))
    assert cfg["history"][-1]["comment"] == "a message"
    assert env.pybuild("containers", "-q").stdout == ""


def test_unpack_bundles_share_layers(env):
    """50 bundles of one image cost its layers once plus 50 small upper dirs."""
    env.write("payload", os.urandom(16 << 20))
    env.dockerfile(busybox_base(env, "COPY payload /opt/payload\n"
                                     'CMD ["sh", "-c", "wc -c < /opt/payload"]\n'))
    env.build(tag="fat:1")
    bundles = os.path.join(env.base, "bundles")
    os.mkdir(bundles)
    t = time.monotonic()
    for i in range(50):
        env.pybuild("unpack", "fat:1", os.path.join(bundles, f"b{i}"))
    per = (time.monotonic() - t) / 50
    layers = _du(os.path.join(env.root, "layers"))
    each = [_du(os.path.join(bundles, f"b{i}")) for i in range(50)]
    t = time.monotonic()
    env.pybuild("unpack", "--copy", "fat:1", os.path.join(env.base, "copy"))
    copy_s = time.monotonic() - t
    copy = _du(os.path.join(env.base, "copy"))
    print(f"\nimage layers extracted once: {layers / 1e6:.1f} MB; 50 overlay bundles: "
          f"{sum(each) / 1e3:.0f} KB together (largest {max(each) / 1e3:.0f} KB), "
          f"{per * 1000:.0f} ms each; one --copy bundle: {copy / 1e6:.1f} MB in {copy_s * 1000:.0f} ms")
    assert layers > 16 << 20 and copy > 16 << 20
    assert sum(each) < 50 * (64 << 10), each
    assert len(env.pybuild("containers", "-q").stdout.split()) == 50
    # each runs, and sees the image's files through its overlay
    st = os.path.join(env.base, "state")
    p = _pyrunc("run", "--bundle", os.path.join(bundles, "b7"), "b7", root=st)
    assert p.returncode == 0 and p.stdout.strip() == str(16 << 20), p.stderr
    with open(os.path.join(bundles, "b7", "config.json")) as f:
        assert json.load(f)["root"]["path"] == "rootfs"
    env.pybuild("rm", *[os.path.join(bundles, f"b{i}") for i in range(50)])
    assert os.listdir(bundles) == [] and not mounts_under(bundles)


def test_unpack_run_time_options(env):
    _image(env)
    vol = os.path.join(env.base, "vol")
    os.mkdir(vol)
    with open(os.path.join(vol, "f"), "w") as f:
        f.write("host data\n")
    b = os.path.join(env.base, "bundle")
    env.pybuild("unpack", "-e", "A=1", "--workdir", "/www", "--user", "app", "--hostname", "box",
                "-v", f"{vol}:/mnt/v:ro", "--read-only", "--memory", "64M", "--cpus", "0.5",
                "--pids-limit", "50", "--name", "opts", "web:1", b, "--",
                "sh", "-c", "echo $A; pwd; id -u; hostname; cat /mnt/v/f; "
                            "touch /mnt/v/x 2>/dev/null || echo vol-ro; touch /x 2>/dev/null || echo root-ro")
    with open(os.path.join(b, "config.json")) as f:
        spec = json.load(f)
    res = spec["linux"]["resources"]
    assert res["memory"] == {"limit": 64 << 20} and res["cpu"] == {"period": 100000, "quota": 50000}
    assert res["pids"] == {"limit": 50} and spec["root"]["readonly"] is True
    assert {"type": "network"} in spec["linux"]["namespaces"]  # the default stays: own netns, lo
    st = os.path.join(env.base, "state")
    p = _pyrunc("run", "--bundle", b, "o1", root=st)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "1\n/www\n1000\nbox\nhost data\nvol-ro\nroot-ro\n"
    assert os.listdir(vol) == ["f"]
    # --args replaces Cmd; the image's files are not touched by a write in one bundle
    b2 = os.path.join(env.base, "bundle2")
    env.pybuild("unpack", "--args", "sh -c 'echo x > /www/index.html; cat /www/index.html'", "web:1", b2)
    assert _pyrunc("run", "--bundle", b2, "o2", root=st).stdout == "x\n"
    assert env.rootfs("web:1")["www/index.html"].data == b"hi\n"
    with open(os.path.join(b2, "upper", "www", "index.html")) as f:
        assert f.read() == "x\n"
    # an unpacked bundle commits like a working container
    env.pybuild("commit", b2, "web:from-bundle")
    assert env.rootfs("web:from-bundle")["www/index.html"].data == b"x\n"
    env.pybuild("rm", "opts", b2)
    assert not os.path.exists(b) and not os.path.exists(b2)


def test_commit_refuses_a_changing_container(env):
    _image(env)
    c = env.pybuild("from", "web:1").stdout.strip()
    from build_e2e import pybuild_cmd
    bg = subprocess.Popen([pybuild_cmd(), "--root", env.root, "run", c, "--", "sh", "-c",
                           "touch /started; sleep 3"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        up = [r for r in json.loads(env.pybuild("containers", "--json").stdout)][0]["dir"]
        while not os.path.exists(os.path.join(up, "upper", "started")) and time.monotonic() < deadline:
            time.sleep(0.05)
        blobs = set(os.listdir(os.path.join(env.root, "blobs", "sha256")))
        p = env.pybuild("commit", c, "web:busy", ok=False)
        assert p.stderr.strip().count("\n") == 0 and "a command is running in it" in p.stderr
        p = env.pybuild("rm", c, ok=False)
        assert "a command is running in it" in p.stderr
    finally:
        bg.wait(30)
    assert set(os.listdir(os.path.join(env.root, "blobs", "sha256"))) == blobs
    assert "web:busy" not in env.pybuild("images").stdout
    # a bundle run by the runtime directly, writing while the commit reads
    b = os.path.join(env.base, "bundle")
    env.pybuild("unpack", "web:1", b, "--", "sh", "-c",
                "i=0; while true; do i=$((i+1)); echo $i > /www/n$((i % 50)); done")
    st = os.path.join(env.base, "state")
    assert _pyrunc("run", "-d", "--bundle", b, "w", root=st).returncode == 0
    try:
        for _ in range(5):
            p = env.pybuild("commit", b, "web:moving", ok=None)
            if p.returncode:
                break
        assert p.returncode == 1 and "changed while the layer was being written" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
    finally:
        _pyrunc("delete", "-f", "w", root=st)
    assert set(os.listdir(os.path.join(env.root, "blobs", "sha256"))) >= blobs
    env.pybuild("rm", c, b)


def test_bad_input(env):
    _image(env)
    for args, want in ((("from", "nosuch"), "image nosuch:latest does not exist"),
                       (("run", "nosuch", "--", "true"), "container nosuch does not exist"),
                       (("commit", "nosuch", "x:1"), "container nosuch does not exist"),
                       (("rm", "nosuch"), "container nosuch does not exist"),
                       (("from", "--name", "bad name", "web:1"), "container name 'bad name'"),
                       (("unpack", "nosuch", os.path.join(env.base, "b")), "image nosuch:latest does not exist"),
                       (("unpack", "-v", "relative:/x", "web:1", os.path.join(env.base, "b")), "absolute"),
                       (("unpack", "--cpus", "lots", "web:1", os.path.join(env.base, "b")), "--cpus"),
                       (("unpack", "--user", "nobody", "web:1", os.path.join(env.base, "b")),
                        "unable to find user nobody")):
        p = env.pybuild(*args, ok=False)
        assert want in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, (args, p.stderr)
    assert not os.path.exists(os.path.join(env.base, "b"))
    env.pybuild("from", "--name", "one", "web:1")
    assert "already in use" in env.pybuild("from", "--name", "one", "web:1", ok=False).stderr
    assert "no command given" in env.pybuild("run", "one", ok=False).stderr
    env.pybuild("rm", "one")
    assert env.pybuild("containers", "-q").stdout == "" and not mounts_under(env.root)


def test_rmi_and_gc_keep_an_image_a_container_uses(env):
    """A working container (and an overlay bundle) is a recorded user of its image: rmi
    refuses it, gc keeps its blobs and extracted layers, and rm releases it."""
    _image(env)
    c = env.pybuild("from", "web:1").stdout.strip()
    bundle = os.path.join(env.base, "bundle")
    env.pybuild("unpack", "web:1", bundle)
    p = env.pybuild("rmi", "web:1", ok=False)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    env.pybuild("rmi", "--force", "web:1")  # untags; the data stays for the containers
    env.pybuild("gc")
    assert env.pybuild("run", c, "--", "cat", "/www/index.html").stdout.strip() == "hi"
    env.pybuild("commit", c, "web:2")
    assert env.pybuild("fsck").returncode == 0
    env.pybuild("rm", c, bundle)
    env.pybuild("rmi", "web:2")
    env.pybuild("gc")
    layers = os.path.join(env.root, "layers")
    left = [n for n in os.listdir(layers) if not n.startswith(".")] if os.path.isdir(layers) else []
    assert left == [], f"gc left extracted layers no image or container uses: {left}"
