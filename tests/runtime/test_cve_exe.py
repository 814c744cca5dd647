"""The runtime's own files are out of the container's reach, through the installed pyrunc.

CVE-2019-5736: pyrunc's init and `pyrunc exec`'s child are forks of the host's Python, so
an exec they make of `/proc/self/exe` (as process.args[0], through a symlink, as a script's
`#!` interpreter, as a hook's path) would run the host's interpreter in the container: a
process there would hold it as its /proc/self/exe (and map libpython, the host's libc...) and
could reopen it for writing once pyrunc is gone. The attack image ships its own "loader" at
the interpreter's PT_INTERP path: a static program that just waits, so the host interpreter,
were it started, stays the exe of a live container process. A probe in the container then
reports what every process's /proc/PID/exe and /proc/PID/map_files/* are (device:inode) and
tries to open them read-write (writing nothing), and none may be a host file of the runtime.

No code from the image runs as the runtime: the image puts a Python module that leaves a
mark on every path pyrunc's interpreter could search after pivot_root (the host's sys.path
directories, the packages it has imported, the stdlib, lib-dynload, the venv, the cwd), and
no mark may appear, whatever the container does: startContainer hooks, a terminal,
seccomp, an exec that fails after start, `pyrunc exec`.
"""

import ast
import functools
import json
import os
import re
import struct
import subprocess
import sys
import time

import pytest
from launcher import interpreter


pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64",
                                reason="the attack's loader is an x86_64 program")

BUSYBOX = "/bin/busybox"
LOADER = "/lib64/ld-linux-x86-64.so.2"  # x86_64's PT_INTERP: the host interpreter's loader


def _static_elf(code: bytes) -> bytes:
    """A minimal static x86_64 ELF executable running code (the attacker's tool)."""
    base, hdrs = 0x400000, 64 + 56
    size = hdrs + len(code)
    ehdr = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
            + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, base + hdrs, 64, 0, 0, 64, 56, 1, 0, 0, 0))
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return ehdr + load + code


# 1: mov eax, 34 (pause); syscall; jmp 1b  -- waits until killed
WAITER = _static_elf(b"\xb8\x22\x00\x00\x00\x0f\x05\xeb\xf7")


def _host_ids(pyrunc_bin: str) -> dict[str, str]:
    """device:inode -> path of every file pyrunc's interpreter maps: the interpreter,
    libpython, the host's loader and libc."""
    interp, _ = interpreter(pyrunc_bin)
    maps = subprocess.run([*interp, "-S", "-c", "print(open('/proc/self/maps').read())"],
                          capture_output=True, text=True, check=True).stdout
    paths = {os.path.realpath(interp[0])}
    paths |= {line.split(None, 5)[5] for line in maps.splitlines()
              if len(line.split(None, 5)) == 6 and line.split(None, 5)[5].startswith("/")}
    ids = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        ids[f"{st.st_dev}:{st.st_ino}"] = p
    assert any("python" in p for p in ids.values()), ids
    return ids


# Every process of the container: what its exe and mapped files are, and whether they open
# read-write (`1<>` opens O_RDWR and writes nothing).
PROBE = r"""
for d in /proc/[0-9]*; do
  [ "$d" = /proc/$$ ] && continue
  for f in $d/exe $d/map_files/*; do
    id=$(stat -L -c %d:%i "$f" 2>/dev/null) || continue
    echo "ID $f $id"
    if (: 1<>"$f") 2>/dev/null; then echo "RW $f $id"; fi
  done
done
echo probed
"""


@pytest.fixture
def attack_bundle(bundle):
    """The busybox bundle plus the attacker's files: a waiting loader at the host
    interpreter's PT_INTERP path, a symlink and a script aimed at /proc/self/exe."""
    r = bundle.rootfs
    os.makedirs(os.path.join(r, os.path.dirname(LOADER).lstrip("/")), exist_ok=True)
    with open(os.path.join(r, LOADER.lstrip("/")), "wb") as f:
        f.write(WAITER)
    os.chmod(os.path.join(r, LOADER.lstrip("/")), 0o755)
    os.makedirs(os.path.join(r, "x"))
    os.symlink("/proc/self/exe", os.path.join(r, "x", "sh"))
    with open(os.path.join(r, "x", "script"), "w") as f:
        f.write("#!/proc/self/exe\n")
    os.chmod(os.path.join(r, "x", "script"), 0o755)
    bundle.config["root"]["readonly"] = False
    return bundle


def _probe(runtime, cid: str, host: dict) -> list[str]:
    """Run PROBE in the container; return the lines that name a host file."""
    p = runtime("exec", cid, "sh", "-c", PROBE)
    if p.returncode != 0 and "stopped" in p.stderr:
        return []
    assert p.returncode == 0 and "probed" in p.stdout, (p.stdout, p.stderr)
    return [f"{line} = host {host[line.split()[-1]]}" for line in p.stdout.splitlines()
            if line.split()[-1] in host]


def _wait_stopped(runtime, cid: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while runtime.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline, f"{cid} still running: it runs what it was given"
        time.sleep(0.05)


def _self_test(host):
    # The probe reads the ids the same way the host does: its own busybox is no host file.
    st = os.stat(BUSYBOX)
    assert f"{st.st_dev}:{st.st_ino}" not in host


@pytest.mark.parametrize("args0", ["/proc/self/exe", "/x/sh", "/x/script"])
def test_container_process_cannot_run_the_runtime_interpreter(runtime, attack_bundle, cid,
                                                              pyrunc_bin, args0):
    host = _host_ids(pyrunc_bin)
    _self_test(host)
    attack_bundle.set_args(args0, "-c", "pass")
    runtime("create", "-b", attack_bundle.path, cid, check=True)
    runtime("start", cid, check=True)
    time.sleep(0.2)  # let the exec happen
    found = []
    if runtime.state(cid)["status"] == "running":
        found = _probe(runtime, cid, host)
    assert not found, f"{args0} as process.args[0] ran the runtime's own files:\n" + "\n".join(found)
    _wait_stopped(runtime, cid)


def test_foreground_run_of_proc_self_exe_fails_with_a_message(runtime, attack_bundle, cid):
    attack_bundle.set_args("/proc/self/exe")
    p = runtime("run", "-b", attack_bundle.path, cid, timeout=15)
    assert p.returncode == 127, (p.stdout, p.stderr)
    assert "exec trampoline" in p.stderr and "runs nothing by itself" in p.stderr


@pytest.mark.parametrize("args0", ["/proc/self/exe", "/x/sh", "/x/script"])
def test_pyrunc_exec_cannot_run_the_runtime_interpreter(runtime, attack_bundle, cid,
                                                        pyrunc_bin, args0):
    host = _host_ids(pyrunc_bin)
    attack_bundle.set_args("sleep", "60")
    runtime("run", "-d", "-b", attack_bundle.path, cid, check=True)
    p = runtime("exec", "-d", cid, args0, "-c", "pass")
    assert p.returncode == 0, p.stderr
    time.sleep(0.2)
    found = _probe(runtime, cid, host)
    assert not found, f"pyrunc exec {args0} ran the runtime's own files:\n" + "\n".join(found)
    # the foreground exec reports why it failed
    p = runtime("exec", cid, args0, timeout=15)
    assert p.returncode == 127 and "runs nothing by itself" in p.stderr, (p.stdout, p.stderr)


def test_start_container_hook_cannot_run_the_runtime_interpreter(runtime, attack_bundle, cid,
                                                                 pyrunc_bin):
    host = _host_ids(pyrunc_bin)
    attack_bundle.config["hooks"] = {"startContainer": [{"path": "/proc/self/exe"}]}
    attack_bundle.set_args("sleep", "60")
    runtime("create", "-b", attack_bundle.path, cid, check=True)
    runtime("start", cid, check=True)
    time.sleep(0.2)
    found = []
    if runtime.state(cid)["status"] == "running":
        found = _probe(runtime, cid, host)
    assert not found, "a startContainer hook ran the runtime's own files:\n" + "\n".join(found)
    _wait_stopped(runtime, cid)  # the hook failed, so the container stops


def test_exec_keeps_the_process_args_env_and_fds(runtime, bundle, cid):
    # The trampoline is invisible to the process: argv[0], argv, env, the preserved fds.
    bundle.config["process"]["env"] = ["A=1", "B=two words", "PATH=/bin"]
    bundle.set_args("sh", "-c", 'echo "$0|$1|$A|$B"; readlink /proc/self/exe; echo $(ls /proc/self/fd)',
                    "zero", "one")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    assert lines[0] == "zero|one|1|two words"
    assert lines[1] == "/bin/busybox"
    assert sorted(lines[2].split()) == ["0", "1", "2", "3"]  # ls's own directory fd


def test_exec_failure_after_start_says_why(runtime, bundle, cid):
    with open(os.path.join(bundle.rootfs, "notelf"), "w") as f:
        f.write("this is no program\n")
    os.chmod(os.path.join(bundle.rootfs, "notelf"), 0o755)
    bundle.set_args("/notelf")
    p = runtime("run", "-b", bundle.path, cid)
    assert p.returncode == 127
    assert "pyrunc: exec /notelf: Exec format error" in p.stderr


# ---- no Python file of the image is read by the runtime ----

HOSTILE = 'open("/PWNED", "a").write(__name__ + " " + __file__ + "\\n")\n'


@functools.lru_cache(maxsize=None)
def _search_paths(pyrunc_bin: str) -> tuple[frozenset, frozenset]:
    """(directories on the sys.path of pyrunc's interpreter, directories of the packages it
    has imported once all of pyrunc is loaded), asked of that interpreter with the launcher's
    own sys.path set-up."""
    interp, text = interpreter(pyrunc_bin)
    setup = text.replace("sys.exit(main())", "pass").replace("main()", "pass")
    dirs = {os.path.dirname(pyrunc_bin), os.path.dirname(os.path.realpath(pyrunc_bin)),
            os.getcwd(), "/"}
    try:  # directories the launcher names (sys.path.append('...'))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.startswith("/") and os.path.isdir(node.value):
                dirs.add(node.value)
    except SyntaxError:
        pass
    code = setup + r"""
import json, os, pkgutil, sys
import pyrunc, ocispec
for pkg in (pyrunc, ocispec):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        try:
            __import__(m.name)
        except Exception:
            pass
pkgs = [p for m in list(sys.modules.values()) for p in (getattr(m, "__path__", None) or [])]
print(json.dumps([sys.path, pkgs]))
"""
    out = subprocess.run([*interp, "-c", code], capture_output=True, text=True, check=True)
    path, pkgs = json.loads(out.stdout.splitlines()[-1])
    dirs |= {d or os.getcwd() for d in path}
    return frozenset(d for d in dirs if not d.endswith(".zip")), frozenset(pkgs)


def _module_names(d: str) -> set[str]:
    names = set()
    try:
        entries = os.listdir(d)
    except OSError:
        return names
    for e in entries:
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)(\..*)?$", e)
        if m and (m.group(2) in (".py", ".pyc") or (m.group(2) or "").endswith(".so")
                  or (m.group(2) is None and os.path.isdir(os.path.join(d, e)))):
            names.add(m.group(1))
    return names


@pytest.fixture
def hostile_bundle(bundle, pyrunc_bin):
    """Python files that leave a mark, on every path pyrunc's interpreter could search."""
    dirs, pkgs = _search_paths(pyrunc_bin)
    stdlib = set(sys.stdlib_module_names)
    planted = 0
    for d in dirs | pkgs | {bundle.config["process"].get("cwd") or "/"}:
        names = _module_names(d) | (stdlib if d in dirs else set())
        target = os.path.join(bundle.rootfs, d.lstrip("/"))
        os.makedirs(target, exist_ok=True)
        for n in names:
            p = os.path.join(target, n + ".py")
            if not os.path.exists(p):
                with open(p, "w") as f:
                    f.write(HOSTILE)
                planted += 1
    assert planted > 500, planted
    bundle.config["root"]["readonly"] = False
    bundle.marks = os.path.join(bundle.rootfs, "PWNED")
    return bundle


def _no_marks(b) -> None:
    if os.path.exists(b.marks):
        with open(b.marks) as f:
            pytest.fail("the runtime imported Python files from the image:\n" + f.read())


def _hook(script: str) -> dict:
    return {"path": "/bin/busybox", "args": ["sh", "-c", script]}


SECCOMP = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}


@pytest.mark.parametrize("case", ["start-hooks", "run-hooks", "terminal", "seccomp",
                                  "seccomp-nnp", "exec-fails", "hook-fails"])
def test_no_image_python_runs_as_the_runtime(runtime, hostile_bundle, cid, case):
    b = hostile_bundle
    cfg = b.config
    cfg["process"]["args"] = ["sh", "-c", "echo ran > /ran"]
    cfg["hooks"] = {"startContainer": [_hook("echo hook > /hook-ran")]}
    if case != "start-hooks":  # a createContainer hook runs before pivot_root
        cfg["hooks"]["createContainer"] = [_hook("true")]
    if case == "terminal":
        cfg["process"]["terminal"] = True
    if case.startswith("seccomp"):
        cfg["linux"]["seccomp"] = SECCOMP
        cfg["process"]["noNewPrivileges"] = case == "seccomp-nnp"
    if case == "exec-fails":
        with open(os.path.join(b.rootfs, "notelf"), "w") as f:
            f.write("no program\n")
        os.chmod(os.path.join(b.rootfs, "notelf"), 0o755)
        cfg["process"]["args"] = ["/notelf"]
    if case == "hook-fails":
        cfg["hooks"]["startContainer"] = [{"path": "/bin/nonexistent-hook"}]
    b.write()
    if case == "start-hooks":
        runtime("create", "-b", b.path, cid, check=True)
        runtime("start", cid, check=True)
        _wait_stopped(runtime, cid)
        p = runtime("delete", cid)
    else:
        p = runtime("run", "-b", b.path, cid, stdin=subprocess.DEVNULL, timeout=30)
    _no_marks(b)
    ran = os.path.exists(os.path.join(b.rootfs, "ran"))
    hooked = os.path.exists(os.path.join(b.rootfs, "hook-ran"))
    if case == "exec-fails":
        assert p.returncode == 127 and hooked and "Exec format error" in p.stderr, p.stderr
    elif case == "hook-fails":
        assert p.returncode != 0 and not ran, p.stderr
        assert "hooks.startContainer[0] (/bin/nonexistent-hook): no such file" in p.stderr
    else:
        assert p.returncode == 0 and ran and hooked, (p.stdout, p.stderr)


@pytest.mark.parametrize("how", ["ok", "tty", "fails", "seccomp"])
def test_no_image_python_runs_in_pyrunc_exec(runtime, hostile_bundle, cid, how):
    b = hostile_bundle
    if how == "seccomp":
        b.config["linux"]["seccomp"] = SECCOMP
        b.config["process"]["noNewPrivileges"] = True
    b.set_args("sleep", "60")
    runtime("run", "-d", "-b", b.path, cid, check=True)
    with open(os.path.join(b.rootfs, "notelf"), "w") as f:
        f.write("no program\n")
    os.chmod(os.path.join(b.rootfs, "notelf"), 0o755)
    args = ["/notelf"] if how == "fails" else ["sh", "-c", "echo ran > /ran"]
    p = runtime("exec", *(["-t"] if how == "tty" else []), cid, *args, stdin=subprocess.DEVNULL)
    _no_marks(b)
    if how == "fails":
        assert p.returncode == 127 and "Exec format error" in p.stderr, p.stderr
    else:
        assert p.returncode == 0 and os.path.exists(os.path.join(b.rootfs, "ran")), p.stderr


def test_no_image_python_runs_when_joining_a_containers_mount_namespace(
        runtime, hostile_bundle, cid, workdir, rootfs_template, pyrunc_bin):
    # A second container given the first one's mount namespace by path: once stage1 has
    # joined it, the host's sys.path names the first container's (hostile) files.
    from conftest import Bundle
    import shutil

    a = hostile_bundle
    a.set_args("sleep", "60")
    runtime("run", "-d", "-b", a.path, cid, check=True)
    pid = runtime.state(cid)["pid"]
    path = os.path.join(workdir, "second")
    os.makedirs(path)
    shutil.copytree(rootfs_template, os.path.join(path, "rootfs"), symlinks=True)
    b = Bundle(path, os.path.join(path, "rootfs"), pyrunc_bin)
    for ns in b.config["linux"]["namespaces"]:
        if ns["type"] == "mount":
            ns["path"] = f"/proc/{pid}/ns/mnt"
    b.set_args("true")
    runtime("run", "-b", b.path, cid + "-2", timeout=30)  # may fail: only the marks matter
    _no_marks(a)


def test_waiting_init_is_out_of_reach(runtime, bundle, cid, pyrunc_bin):
    # Until `start`, init is the host's interpreter in the container's pid namespace; it is
    # non-dumpable, so no process of the container (without CAP_SYS_PTRACE) reaches its exe.
    host = _host_ids(pyrunc_bin)
    bundle.set_args("true")
    runtime("create", "-b", bundle.path, cid, check=True)
    assert runtime.state(cid)["status"] == "created"
    found = _probe(runtime, cid, host)
    assert not found, "the waiting init's files are reachable:\n" + "\n".join(found)
