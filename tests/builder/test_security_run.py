"""RUN is a container, not the host: attacks from a Dockerfile through the installed `pybuild`.

Each RUN records what it managed to do in a file of the image; the tests read the image.
Nothing here writes to a host device or a host procfs/sysfs file even if the confinement is
missing: device nodes are opened for write without writing, procfs/sysfs files O_RDWR with
no data, and the syscalls probed are harmless when they succeed.
"""
import hashlib
import os
import shutil
import subprocess

import pytest

from build_e2e import env  # noqa: F401  (fixture)
from build_e2e import busybox_base, mounts_under
from ocispec import defaults


def _results(data: bytes) -> dict:
    return dict(line.split("=", 1) for line in data.decode().split())


def test_run_cannot_open_host_devices(env):
    # CAP_MKNOD stays (docker's set; images carry device nodes) but the device cgroup lets
    # a node made in RUN be opened only if it is one of the standard ones. 1:11 is
    # /dev/kmsg: `: >` opens it O_WRONLY (no syslog permission check) and writes nothing.
    env.dockerfile(busybox_base(env, """\
RUN mkdir -p /tmp /out && ls /dev > /out/dev \\
 && mknod /tmp/kmsg c 1 11 && echo mknod=ok >> /out/r \\
 && { ( : > /tmp/kmsg ) 2>/dev/null && echo kmsg=opened || echo kmsg=denied; } >> /out/r \\
 && mknod /tmp/null c 1 3 && { ( : > /tmp/null ) && echo null=opened || echo null=denied; } >> /out/r \\
 && { ( : > /dev/null && : < /dev/urandom && : > /dev/zero ) && echo std=ok || echo std=broken; } >> /out/r
"""))
    env.build()
    files = env.rootfs()
    r = _results(files["out/r"].data)
    assert r["kmsg"] == "denied", "a RUN opened a host device node it made (1:11, /dev/kmsg)"
    # the standard nodes, made or given, still work
    assert (r["mknod"], r["null"], r["std"]) == ("ok", "opened", "ok")
    dev = set(files["out/dev"].data.decode().split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts"} <= dev
    assert not dev & {"kmsg", "mem", "kmem", "port", "sda", "vda", "nvme0", "loop0"}, dev


def test_run_has_the_default_seccomp_profile(env):
    # unshare(CLONE_NEWUSER) needs no capability: only seccomp (moby's profile) stops it.
    env.dockerfile(busybox_base(env, """\
RUN mkdir /out && grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status | tr -d ' \\t' \\
      | sed 's/:/=/' > /out/r \\
 && { unshare -U true 2>/dev/null && echo unshare=ok || echo unshare=denied; } >> /out/r
"""))
    env.build()
    r = _results(env.rootfs()["out/r"].data)
    assert r["Seccomp"] == "2", "no seccomp filter in RUN"
    assert r["unshare"] == "denied"
    assert int(r["CapBnd"], 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN
    assert r["NoNewPrivs"] == "0"  # setuid programs (su, sudo) still work, as in docker


_PROBE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
static void rep(const char *n, long r) { printf("%s=%d\n", n, r < 0 ? errno : 0); }
int main(void) {
    rep("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    rep("unshare", syscall(SYS_unshare, CLONE_NEWUSER));
    rep("personality", syscall(SYS_personality, 0x0400000 /* READ_IMPLIES_EXEC */));
    rep("clone3", syscall(SYS_clone3, NULL, 0));
    rep("getpid", syscall(SYS_getpid));
    return 0;
}
"""


def test_run_seccomp_denies_kernel_syscalls(env):
    gcc = shutil.which("gcc")
    if not gcc:
        pytest.skip("needs gcc to build the static syscall probe")
    src = os.path.join(env.base, "probe.c")
    with open(src, "w") as f:
        f.write(_PROBE)
    p = subprocess.run([gcc, "-static", "-O1", "-o", os.path.join(env.ctx, "probe"), src],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot link a static probe (libc.a missing?): {p.stderr.strip()[:200]}")
    env.dockerfile(busybox_base(env, "COPY probe /probe\nRUN /probe > /r\n"))
    env.build()
    r = _results(env.rootfs()["r"].data)
    assert r["getpid"] == "0"
    for name in ("keyctl", "unshare", "personality"):
        assert r[name] == "1", f"{name} was not refused with EPERM: {r}"
    # moby answers clone3 with ENOSYS, so libc falls back to clone (whose flags seccomp sees)
    assert r["clone3"] == "38", r


def test_run_proc_and_sys_masked_and_read_only(env):
    masked = [p for p in defaults.CONTAINER_MASKED_PATHS if os.path.exists(p)]
    ro = [p for p in ("/proc/sys/kernel/domainname", "/proc/sysrq-trigger",
                      "/sys/kernel/uevent_helper", "/sys/class/net/lo/mtu") if os.path.exists(p)]
    assert masked and ro
    # masked: something mounted over it (an empty dir can look masked), and nothing to read
    checks = "".join(
        f" && {{ cut -d' ' -f5 /proc/self/mountinfo | grep -qx {p} && "
        f"if [ -d {p} ]; then [ -z \"$(ls -A {p})\" ]; else [ ! -s {p} ] && "
        f"[ \"$(stat -c %t:%T {p})\" = 1:3 ]; fi && echo {p}=masked || echo {p}=visible; }} >> /out/r"
        for p in masked)
    # O_RDWR opens, nothing written: a read-only mount refuses the open itself
    checks += "".join(f" && {{ ( : 1<> {p} ) 2>/dev/null && echo {p}=writable || echo {p}=ro; }}"
                      f" >> /out/r" for p in ro)
    env.dockerfile(busybox_base(env, f"RUN mkdir /out{checks}\n"))
    env.build()
    r = _results(env.rootfs()["out/r"].data)
    assert {p: r[p] for p in masked} == {p: "masked" for p in masked}
    assert {p: r[p] for p in ro} == {p: "ro" for p in ro}


def test_run_security_insecure_is_refused(env):
    env.dockerfile(busybox_base(env, "RUN --security=insecure touch /x\n"))
    p = env.build(ok=False)
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("Dockerfile:4: RUN: --security=insecure is not allowed"), last
    assert "Traceback" not in p.stderr
    assert env.index()["manifests"] == [] and mounts_under(env.base) == []


def _tree_digest(root: str) -> str:
    """Names, types, modes, owners, link targets and contents of everything under root."""
    h = hashlib.sha256()
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(d, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, root)}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0"
                     f"{st.st_size}\0{st.st_mtime_ns}\0".encode())
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def test_run_bind_rw_writes_a_throwaway_copy(env):
    env.write("data/keep.txt", "original\n")
    env.write("data/gone.txt", "delete me\n")
    env.write("one.txt", "single file\n")
    env.dockerfile(busybox_base(env, """\
FROM scratch AS other
COPY data/keep.txt /o/keep.txt
FROM base AS runs
RUN --mount=type=bind,source=data,target=/c,rw \\
    echo changed > /c/keep.txt && echo new > /c/new.txt && rm /c/gone.txt && chmod 600 /c \\
 && cat /c/keep.txt /c/new.txt > /seen && ls /c > /listing
RUN --mount=type=bind,source=one.txt,target=/one,rw echo edited > /one && cat /one > /seen-one
RUN --mount=type=bind,from=other,source=/o,target=/o,rw \\
    echo scribbled > /o/keep.txt && echo more > /o/new && cat /o/keep.txt /o/new > /seen-from
RUN --mount=type=bind,from=other,source=/o,target=/o cat /o/keep.txt > /after-from && ls /o > /after-ls
FROM other
""").replace("FROM scratch\nCOPY busybox", "FROM scratch AS base\nCOPY busybox", 1))
    before = _tree_digest(env.ctx)
    env.build("--target", "runs")
    assert _tree_digest(env.ctx) == before, "RUN --mount=type=bind,rw changed the build context"
    files = env.rootfs()
    # the step saw its writes ...
    assert files["seen"].data == b"changed\nnew\n"
    assert files["listing"].data.split() == [b"keep.txt", b"new.txt"]
    assert files["seen-one"].data == b"edited\n"
    assert files["seen-from"].data == b"scribbled\nmore\n"
    # ... a later bind of the same stage, and the stage itself, did not
    assert files["after-from"].data == b"original\n"
    assert files["after-ls"].data.split() == [b"keep.txt"]
    assert not any(p.startswith(("c/", "o/", "one")) for p in files), sorted(files)
    env.build(tag="other:1")
    assert env.rootfs("other:1")["o/keep.txt"].data == b"original\n"
    assert mounts_under(env.base) == []


def test_run_bind_rw_context_path_with_overlay_separators(env):
    # ',' and ':' separate overlay options and lower dirs: a context named so still mounts
    odd = os.path.join(env.base, "ctx,lower:dir")
    os.rename(env.ctx, odd)
    env.ctx = odd
    env.write("f", "x\n")
    env.dockerfile(busybox_base(env, "RUN --mount=type=bind,target=/c,rw echo y > /c/f && cat /c/f > /seen\n"))
    before = _tree_digest(env.ctx)
    env.build()
    assert _tree_digest(env.ctx) == before
    assert env.rootfs()["seen"].data == b"y\n"


def test_run_steps_that_change_nothing(env):
    # every such step gives the same empty layer: the next RUN's overlay holds it twice
    env.dockerfile(busybox_base(env, "RUN true\nRUN true\nRUN true\nRUN echo ok > /ok\n"))
    env.build("--no-cache")
    assert env.rootfs()["ok"].data == b"ok\n"


def test_container_spec_validates():
    from ocispec.runtime_config import validate_config
    from ocispec.schema import validate_document

    doc = defaults.container_spec()
    validate_config(doc)
    validate_document(doc, "config")
    sc = doc["linux"]["seccomp"]
    allowed = {n for s in sc["syscalls"] if s["action"] == "SCMP_ACT_ALLOW" and not s.get("args")
               for n in s["names"]}
    for name in ("kexec_load", "init_module", "finit_module", "mount", "umount2", "keyctl",
                 "add_key", "bpf", "perf_event_open", "kexec_file_load", "userfaultfd", "open_by_handle_at", "unshare", "setns",
                 "syslog", "reboot", "swapon", "pivot_root", "io_uring_setup"):
        assert name not in allowed, name
    assert sc["defaultAction"] == "SCMP_ACT_ERRNO"
    # a capability brings its syscalls, as moby's profile resolves them
    admin = defaults.seccomp_profile(defaults.DEFAULT_CAPS + ["CAP_SYS_ADMIN"])
    assert any("mount" in s["names"] for s in admin["syscalls"])
    assert doc["linux"]["resources"]["devices"][0] == {"allow": False, "access": "rwm"}


def test_runtime_keeps_the_compiled_profile(runtime, bundle, cid):
    # every RUN brings the same profile: pyrunc compiles it once per --root (~10 ms with
    # libseccomp for three x86 ABIs) and loads the kept program after that
    spec = defaults.container_spec(args=["sh", "-c", "grep '^Seccomp:' /proc/self/status"])
    spec["root"] = bundle.config["root"]
    bundle.config = spec
    bundle.write()
    p = runtime("run", "--bundle", bundle.path, cid, check=True)
    assert p.stdout.split() == ["Seccomp:", "2"]
    cache = os.path.join(runtime.root, "@seccomp")
    progs = os.listdir(cache)
    assert len(progs) == 1 and progs[0].endswith(".bpf")
    before = os.stat(os.path.join(cache, progs[0])).st_mtime_ns
    p = runtime("run", "--bundle", bundle.path, cid + "-2", check=True)
    assert p.stdout.split() == ["Seccomp:", "2"]
    assert os.listdir(cache) == progs
    assert os.stat(os.path.join(cache, progs[0])).st_mtime_ns == before
    assert runtime("list", "-q", check=True).stdout.split() == []
