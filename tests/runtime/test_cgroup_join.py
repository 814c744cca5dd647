"""How init gets into its cgroups without the kernel's grace-period wait.

A cgroup.procs write of another process takes the kernel's global threadgroup lock, whose
first writer waits out an RCU grace period (7-11 ms on these machines). Without a user
namespace, init joins the v1 hierarchies itself (`tasks` "0": no lock) and is cloned with
clone3 into the cgroup2 directory: by the parent, in all its new namespaces at once, or by
stage1 where namespaces are joined by path (or clone3 is refused). With a user namespace
the parent writes the pids as before. Every way, init must end up in the container's
cgroup in every hierarchy.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from test_perf import _cgroup_dirs


def _cgroup2_mount() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "cgroup2":
                return pre.split()[4]
    return None


def _own_lines(pid: int) -> dict:
    with open(f"/proc/{pid}/cgroup") as f:
        return {ln.split(":", 2)[1]: ln.rstrip("\n").split(":", 2)[2] for ln in f}


def _assert_in_container_cgroups(pid: int, cid: str) -> None:
    lines = _own_lines(pid)
    for ctrls, path in lines.items():
        assert path.rstrip("/").endswith("/" + cid), (ctrls, path, lines)
    assert len(_cgroup_dirs(pid)) == len(set(_cgroup_dirs(pid)))


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=30)


def test_fork_into_cgroup_places_the_child_and_python_works_in_it(tmp_path):
    mnt = _cgroup2_mount()
    if mnt is None:
        pytest.skip("this host mounts no cgroup2 hierarchy")
    d = os.path.join(mnt, "pyrunc-test-clone3-" + tmp_path.name[-12:])
    os.mkdir(d)
    try:
        p = _python(f"""
            import os, threading
            from pyrunc import linux
            fd = os.open({d!r}, os.O_RDONLY | os.O_DIRECTORY)
            r, w = os.pipe()
            pid = linux.clone(0, fd)
            if pid == 0:
                # the child is a working interpreter: imports, threads, exceptions, fork
                import json
                t = threading.Thread(target=lambda: None); t.start(); t.join()
                try:
                    raise KeyError("x")
                except KeyError:
                    pass
                c = os.fork()
                if c == 0:
                    os._exit(3)
                ok = os.waitpid(c, 0)[1] >> 8 == 3
                line = open("/proc/self/cgroup").read().splitlines()[-1]
                os.write(w, json.dumps([line, ok, os.getpid()]).encode())
                os._exit(0)
            _, st = os.waitpid(pid, 0)
            print(os.read(r, 4096).decode(), st, pid)
            """)
        assert p.returncode == 0, p.stderr
        out = p.stdout.split()
        assert out[0] == f'["0::/{os.path.basename(d)}",' and out[1] == "true,"
        assert out[-2] == "0" and out[2].rstrip("]") == out[-1]  # exit 0, the pid it reported
    finally:
        os.rmdir(d)


def test_refused_clone3_falls_back_to_fork_and_says_so(tmp_path):
    """A directory that is no cgroup2 one (as a kernel before 5.7 would refuse the flag):
    init is forked plainly and the parent is told to put it in the cgroup2 dir itself."""
    p = _python(f"""
        import os
        from pyrunc.process import _fork_init
        pid, in_v2 = _fork_init({{"tasks": [], "v2": {str(tmp_path)!r}}})
        if pid == 0:
            os._exit(5)
        print(in_v2, os.waitpid(pid, 0)[1] >> 8)
        """)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "5"]


def _phases(stderr: str) -> list[str]:
    return re.findall(r"trace create: (.+?) \d+\.\d\d ms", stderr)


def _nspid(pid: int) -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        return next(ln.split()[1:] for ln in f if ln.startswith("NSpid:"))


def test_default_container_init_is_cloned_by_the_parent_and_joins_itself(runtime, bundle, cid):
    """No stage1: init is cloned straight into its namespaces and cgroup2 directory."""
    bundle.set_args("/bin/sh", "-c", "sleep 100")
    p = runtime("--trace", "create", "--bundle", bundle.path, cid, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    phases = _phases(p.stderr)
    assert {"cgroups: create", "namespaces: clone init", "init: join cgroups"} <= set(phases), phases
    assert not [ph for ph in phases if ph.startswith("stage1")], phases
    # init joins the v1 hierarchies once the parent has made them and written the limits,
    # which it does after the clone, while init starts
    assert phases.index("init: join cgroups") > phases.index("init: wait: resources set"), phases
    pid = runtime.state(cid)["pid"]
    if any(ctrls for ctrls in _own_lines(pid)):  # v1 hierarchies here
        assert phases.index("cgroups: create v1") > phases.index("namespaces: clone init"), phases
    _assert_in_container_cgroups(pid, cid)
    assert _nspid(pid)[-1] == "1"  # pid 1 of its own pid namespace
    for ns in ("pid", "mnt", "net", "ipc", "uts", "cgroup"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    assert runtime("delete", "-f", cid).returncode == 0


def test_namespace_by_path_goes_through_stage1_which_joins_itself(runtime, bundle, cid):
    bundle.set_args("/bin/sh", "-c", "sleep 100")
    runtime("run", "-d", "--bundle", bundle.path, cid, check=True)
    first = runtime.state(cid)["pid"]
    for ns in bundle.config["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = f"/proc/{first}/ns/net"
    bundle.write()
    p = runtime("--trace", "create", "--bundle", bundle.path, cid + "b", stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    phases = _phases(p.stderr)
    assert "cgroups: create" in phases and "stage1: join cgroups, fork init" in phases, phases
    assert "cgroups: create, join stage1" not in phases
    pid = runtime.state(cid + "b")["pid"]
    _assert_in_container_cgroups(pid, cid + "b")
    assert _nspid(pid)[-1] == "1"
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink(f"/proc/{first}/ns/net")
    for c in (cid + "b", cid):
        assert runtime("delete", "-f", c).returncode == 0


def test_where_clone3_is_refused_create_goes_through_stage1(runtime, bundle, cid, pyrunc_bin,
                                                          workdir):
    """Under a seccomp filter that answers clone3 with ENOSYS (as docker's does), create
    falls back to stage1 and a plain fork, and the container still lands everywhere."""
    bundle.set_args("/bin/sh", "-c", "sleep 100")
    sc = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
          "syscalls": [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}
    code = textwrap.dedent(f"""
        import os
        from pyrunc import linux, seccomp
        seccomp.load({sc!r}, {{}})
        assert not linux.has_clone3()
        os.execv({pyrunc_bin!r}, [{pyrunc_bin!r}, "--root", {runtime.root!r}, "--trace",
                 "create", "--bundle", {bundle.path!r}, {cid!r}])
        """)
    # a file, not a pipe: the container's sleep keeps its stderr open
    with open(os.path.join(workdir, "create.err"), "w+") as err:
        p = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=err, timeout=30)
        err.seek(0)
        p.stderr = err.read()
    assert p.returncode == 0, p.stderr
    phases = _phases(p.stderr)
    assert "stage1: fork init" in phases or "stage1: join cgroups, fork init" in phases, phases
    assert "namespaces: clone init" not in phases
    pid = runtime.state(cid)["pid"]
    _assert_in_container_cgroups(pid, cid)
    assert runtime("delete", "-f", cid).returncode == 0


def test_user_namespace_container_is_joined_by_the_parent(runtime, bundle, cid):
    big = [{"containerID": 0, "hostID": 0, "size": 65536}]
    lcfg = bundle.config["linux"]
    lcfg["namespaces"].append({"type": "user"})
    lcfg["uidMappings"] = lcfg["gidMappings"] = big
    bundle.set_args("/bin/sh", "-c", "sleep 100")
    p = runtime("--trace", "create", "--bundle", bundle.path, cid, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert "cgroups: create, join stage1" in p.stderr
    pid = runtime.state(cid)["pid"]
    _assert_in_container_cgroups(pid, cid)
    assert runtime("delete", "-f", cid).returncode == 0


def test_exec_process_joins_itself_and_shares_init_cgroup_namespace(runtime, bundle, cid,
                                                                    workdir):
    """exec's child joins the v1 cgroups itself and clones the process into the cgroup2
    one, then the process joins init's cgroup namespace (after the clone: the kernel
    refuses CLONE_INTO_CGROUP from inside it)."""
    bundle.set_args("/bin/sh", "-c", "sleep 100")
    runtime("run", "-d", "--bundle", bundle.path, cid, check=True)
    init = runtime.state(cid)["pid"]
    pidfile = os.path.join(workdir, "exec.pid")
    runtime("exec", "-d", "--pid-file", pidfile, cid, "sleep", "100", check=True)
    pid = int(open(pidfile).read())
    assert _own_lines(pid) == _own_lines(init)
    _assert_in_container_cgroups(pid, cid)
    for ns in ("cgroup", "pid", "mnt"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{init}/ns/{ns}")
    # inside, the cgroup namespace roots every hierarchy at the container's cgroup
    p = runtime("exec", cid, "cat", "/proc/self/cgroup")
    assert p.returncode == 0, p.stderr
    assert all(line.endswith(":/") for line in p.stdout.split()), p.stdout
    assert runtime("delete", "-f", cid).returncode == 0
