"""Start-up cost work: `--trace` reports every phase of a command, and `delete` of a stopped
container does not wait on processes left in its cgroup (it kills them first, as runc)."""

import os
import re
import subprocess
import time

import pytest
from launcher import interpreter


def _cgroup_dirs(pid: int) -> list:
    """The directories of pid's cgroups in every hierarchy mounted here."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype, _, opts = post.split()[:3]
            if fstype == "cgroup2":
                mounts.setdefault("", pre.split()[4])
            elif fstype == "cgroup":
                for o in opts.split(","):
                    mounts.setdefault(o, pre.split()[4])
    out = []
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            key = ctrls.split(",")[0]
            if key in mounts and os.path.isdir(mounts[key] + path) and mounts[key] + path not in out:
                out.append(mounts[key] + path)
    return out


@pytest.mark.parametrize("sub", [True, False], ids=["sub-cgroups", "parents-only"])
def test_delete_removes_sub_cgroups_and_created_parents(runtime, bundle, cid, sub):
    """delete's one-rmdir-per-hierarchy path gives way to the Manager when it meets a
    sub-cgroup (EBUSY) or parents its create made (a cgroupsPath under a missing parent)."""
    parent = f"pyrunc-test-parent-{cid}"
    bundle.set_args("/bin/sh", "-c", "sleep 100")
    bundle.config["linux"]["cgroupsPath"] = f"/{parent}/{cid}"
    bundle.write()
    runtime("run", "-d", "--bundle", bundle.path, cid, check=True)
    init = runtime.state(cid)["pid"]
    dirs = [d for d in _cgroup_dirs(init) if d.rstrip("/") != os.path.dirname(d.rstrip("/"))]
    assert dirs and all(d.rstrip("/").endswith(f"/{parent}/{cid}") for d in dirs), dirs
    for d in dirs if sub else ():
        os.mkdir(os.path.join(d, "sub"))
    runtime("kill", cid, "KILL", check=True)
    deadline = time.monotonic() + 10
    while runtime.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    p = runtime("delete", cid)
    assert p.returncode == 0, p.stderr
    assert not any(os.path.exists(os.path.dirname(d.rstrip("/"))) for d in dirs), dirs


def test_delete_kills_cgroup_stragglers_before_removing(runtime, bundle, cid):
    bundle.set_args("/bin/sh", "-c", "sleep 100")
    runtime("run", "-d", "--bundle", bundle.path, cid, check=True)
    init = runtime.state(cid)["pid"]
    dirs = [d for d in _cgroup_dirs(init) if d.rstrip("/") != os.path.dirname(d.rstrip("/"))]
    assert dirs and all(cid in d for d in dirs), dirs
    # A host process joins the container's cgroups from outside its pid namespace: init's
    # death does not take it along.
    straggler = subprocess.Popen(["sleep", "300"])
    try:
        for d in dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(straggler.pid))
        runtime("kill", cid, "KILL", check=True)
        deadline = time.monotonic() + 10
        while runtime.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert straggler.poll() is None
        t0 = time.monotonic()
        p = runtime("delete", cid)
        took = time.monotonic() - t0
        assert p.returncode == 0, p.stderr
        # before: removal waited 2 s for the cgroup to empty, then killed and tried again
        assert took < 1.5, f"delete took {took:.2f} s"
        assert straggler.wait(5) == -9
        assert not any(os.path.exists(d) for d in dirs)
    finally:
        if straggler.poll() is None:
            straggler.kill()
            straggler.wait()


PHASES = ["imports (cli)", "read, validate config.json", "cgroups: create",
          "namespaces: clone init", "init: mounts: rootfs, config mounts, devices",
          "init: pivot_root", "init: masked, read-only paths", "init ready",
          "start: exec fifo (init released)", "container process ran (exec to exit)",
          "delete: cgroups removed"]


def _phases(text: str) -> dict:
    out = {}
    for m in re.finditer(r"trace run: (.+?) (\d+\.\d\d) ms", text):
        out[m.group(1)] = float(m.group(2))
    return out


def test_trace_run_on_stderr(runtime, bundle, cid):
    bundle.set_args("/bin/true")
    p = runtime("--trace", "run", "--bundle", bundle.path, cid)
    assert p.returncode == 0, p.stderr
    got = _phases(p.stderr)
    for phase in PHASES + ["interpreter start"]:
        assert phase in got, (phase, p.stderr)
    total = float(re.search(r"trace run: total (\d+\.\d\d) ms", p.stderr).group(1))
    assert 0 < sum(v for k, v in got.items() if not k.startswith(("stage1", "init:", "total"))
                   and k != "interpreter start") <= total + 0.1


def test_trace_in_json_log_from_environment(runtime, bundle, cid, workdir):
    """containerd's shim passes --log FILE --log-format json: PYRUNC_TRACE=1 in its
    environment puts the trace there as info lines, and stderr stays clean."""
    import json

    bundle.set_args("/bin/true")
    log = os.path.join(workdir, "log.json")
    p = runtime("--log", log, "--log-format", "json", "create", "--bundle", bundle.path, cid,
                env={**os.environ, "PYRUNC_TRACE": "1"})
    assert p.returncode == 0, p.stderr
    assert "trace" not in p.stderr
    with open(log) as f:
        lines = [json.loads(l) for l in f]
    msgs = [l["msg"] for l in lines if l["level"] == "info"]
    assert any(m.startswith("trace create: init: pivot_root ") for m in msgs), msgs
    assert any(m.startswith("trace create: total ") for m in msgs), msgs
    # without it, nothing is traced
    runtime("delete", "--force", cid, check=True)
    p = runtime("--log", log, "state", cid)
    with open(log) as f:
        assert sum("trace state" in l for l in f) == 0


def test_lifecycle_commands_import_neither_os_nor_the_ctypes_package(runtime, bundle, cid, workdir):
    """pyrunc calls C through pyrunc.ffi on _ctypes (ctypes/__init__ costs ~2.8 ms of every
    start; a module doing `import ctypes` would also mix two sets of C types), and takes os's
    functions from pyrunc.oslite (`import os` costs ~1.2 ms of every command), and stat's from
    _stat (the stat module's first import is in init, after the clone). Nothing that
    create, start, state, kill, delete or run does may import either again."""
    bundle.set_args("sleep", "30")
    python, _ = interpreter(runtime.binary)
    c0, c1 = f"{cid}0", f"{cid}1"
    for i, cmd in enumerate((["create", "--bundle", bundle.path, c0], ["state", c0], ["start", c0],
                             ["kill", c0, "KILL"], ["delete", "--force", c0],
                             ["run", "--detach", "--bundle", bundle.path, c1], ["delete", "--force", c1])):
        err = os.path.join(workdir, f"importtime-{i}")
        with open(err, "w") as e:
            p = subprocess.run([*python, "-X", "importtime", runtime.binary, "--root", runtime.root, *cmd],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=e,
                               timeout=30)
        with open(err) as e:
            text = e.read()
        assert p.returncode == 0, (cmd, text)
        mods = {l.rsplit("|", 1)[1].strip() for l in text.splitlines() if l.startswith("import time:")}
        assert "pyrunc.oslite" in mods, (cmd, sorted(mods))
        if cmd[0] in ("create", "run"):
            assert "_ctypes" in mods and "pyrunc.ffi" in mods, sorted(mods)
        assert not mods & {"os", "posixpath", "_collections_abc", "stat", "ctypes"}, (cmd, sorted(mods))


def test_short_commands_run_without_cycle_collection(pyrunc_bin):
    """The installed entry point turns the cycle collector off (~1.2 ms of a `run`)."""
    python, launcher = interpreter(pyrunc_bin)
    assert launcher.rstrip().endswith("main()"), launcher
    code = launcher.rstrip()[: -len("main()")] + "import gc\nprint(gc.isenabled())\n"
    p = subprocess.run([*python, "-c", code], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == "False", (p.stdout, p.stderr)


def test_events_turns_the_cycle_collector_back_on():
    """`pyrunc events` streams for as long as it is left running: it collects cycles again."""
    import gc
    from types import SimpleNamespace

    from ocispec.errors import OCIError
    from pyrunc.events import events

    gc.disable()
    try:
        with pytest.raises(OCIError):
            events(SimpleNamespace(args=[], opts={}, g={}), None)
        assert gc.isenabled()
    finally:
        gc.enable()
