"""Hooks (config.md "POSIX-platform Hooks", runtime.md lifecycle): when each runs, what it
gets on stdin, and what a failing hook does to the lifecycle.

Hooks run host programs: /bin/sh of the host, writing into a log directory that is also
bind-mounted into the container at /hooklog so the program and startContainer hooks (which
run inside) write to the same log.
"""

import json
import os

from ..registry import case
from ..runtime import read

VALID_STATUS = ("creating", "created", "running", "stopped")


def _hook(logdir: str, name: str, extra: str = "", code: int = 0) -> dict:
    script = (f"cat > {logdir}/{name}.stdin; readlink /proc/self/ns/mnt > {logdir}/{name}.mnt;"
              f" echo {name} >> {logdir}/log; {extra} exit {code}")
    return {"path": "/bin/sh", "args": ["sh", "-c", script]}


def _inner_hook(name: str, code: int = 0) -> dict:
    # startContainer runs in the container: paths are the container's.
    return _hook("/hooklog", name, code=code)


def _setup(ctx, program="echo program >> /hooklog/log"):
    b = ctx.bundle()
    logdir = ctx.path("hooklog")
    os.makedirs(logdir, exist_ok=True)
    os.chmod(logdir, 0o777)
    b.config["mounts"].append({"destination": "/hooklog", "type": "bind", "source": logdir,
                               "options": ["rbind", "rw"]})
    b.config["process"]["args"] = ["/bin/sh", "-c", program]
    return b, logdir


def _log(logdir):
    p = os.path.join(logdir, "log")
    return read(p).split() if os.path.exists(p) else []


def _mark(logdir, word):
    with open(os.path.join(logdir, "log"), "a") as f:
        f.write(word + "\n")


def _order(ctx, log, *names):
    pos = []
    for n in names:
        ctx.check(n in log, f"{n} missing from the log {log}")
        pos.append(log.index(n))
    for (a, pa), (b, pb) in zip(zip(names, pos), zip(names[1:], pos[1:])):
        ctx.check(pa < pb, f"{b} happened before {a} (expected order {', '.join(names)}; "
                           f"log: {' '.join(log)})")


def _lifecycle(ctx, b, logdir, expect_stop=True):
    cid = ctx.create(b)
    _mark(logdir, "create-returned")
    ctx.rt.ok("start", cid)
    _mark(logdir, "start-returned")
    ctx.rt.wait_status(cid, "stopped")
    _mark(logdir, "delete-called")
    ctx.rt.ok("delete", cid)
    _mark(logdir, "delete-returned")
    return cid


@case("hooks")
def hooks(ctx):
    """All hooks run once, in lifecycle order: prestart before createRuntime before
    createContainer, all during create; startContainer at start before the program;
    poststart before start returns; poststop during delete. prestart, createRuntime,
    poststart and poststop run in the runtime's mount namespace, createContainer in the
    container's."""
    b, logdir = _setup(ctx)
    b.config["hooks"] = {
        "prestart": [_hook(logdir, "prestart")],
        "createRuntime": [_hook(logdir, "createRuntime")],
        "createContainer": [_hook(logdir, "createContainer")],
        "startContainer": [_inner_hook("startContainer")],
        "poststart": [_hook(logdir, "poststart")],
        "poststop": [_hook(logdir, "poststop")],
    }
    _lifecycle(ctx, b, logdir)
    log = _log(logdir)
    for n in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop", "program"):
        ctx.check(log.count(n) == 1, f"{n} ran {log.count(n)} times: log {log}")
    _order(ctx, log, "createRuntime", "createContainer", "create-returned", "startContainer",
           "program")
    _order(ctx, log, "prestart", "createRuntime")
    ours = os.readlink("/proc/self/ns/mnt")
    for n in ("prestart", "createRuntime", "poststart", "poststop"):
        ns = read(os.path.join(logdir, n + ".mnt")).strip()
        ctx.check(ns == ours, f"{n} ran in mount namespace {ns}, not the runtime's {ours}")
    ns = read(os.path.join(logdir, "createContainer.mnt")).strip()
    ctx.check(ns != ours, f"createContainer ran in the runtime's mount namespace {ns}")
    _order(ctx, log, "create-returned", "poststart", "start-returned")
    _order(ctx, log, "delete-called", "poststop", "delete-returned")


@case("hooks_stdin")
def hooks_stdin(ctx):
    """Every hook gets the container's state on stdin: ociVersion, id, a valid status,
    the bundle's absolute path, annotations, and the init pid while it exists."""
    b, logdir = _setup(ctx)
    b.config["annotations"] = {"org.example.occ": "hooks"}
    names = ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
    b.config["hooks"] = {n: [_hook(logdir, n)] for n in names}
    cid = _lifecycle(ctx, b, logdir)
    for n in names:
        p = os.path.join(logdir, n + ".stdin")
        ctx.check(os.path.exists(p), f"{n} hook did not run")
        try:
            st = json.loads(read(p))
        except ValueError:
            ctx.check(False, f"{n} hook's stdin is not JSON: {read(p)[:200]!r}")
        ctx.check(st.get("id") == cid, f"{n}: id {st.get('id')!r}")
        ctx.check(st.get("ociVersion"), f"{n}: no ociVersion")
        ctx.check(st.get("status") in VALID_STATUS, f"{n}: status {st.get('status')!r}")
        ctx.check(os.path.realpath(st.get("bundle", "")) == os.path.realpath(b.path)
                  and os.path.isabs(st.get("bundle", "")),
                  f"{n}: bundle {st.get('bundle')!r}, expected {b.path}")
        ctx.check(st.get("annotations") == {"org.example.occ": "hooks"},
                  f"{n}: annotations {st.get('annotations')!r}")
        if n != "poststop":
            ctx.check(isinstance(st.get("pid"), int) and st["pid"] > 0,
                      f"{n}: pid {st.get('pid')!r}")


@case("prestart")
def prestart(ctx):
    """prestart hooks run in the runtime's namespace, with the container's namespaces
    already made (the pid on stdin is the container's init), before the program runs."""
    b, logdir = _setup(ctx)
    probe = (f"pid=$(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p' {logdir}/prestart.stdin); "
             f"readlink /proc/self/ns/mnt > {logdir}/hook-mnt; "
             f"readlink /proc/$pid/ns/mnt > {logdir}/init-mnt;")
    b.config["hooks"] = {"prestart": [_hook(logdir, "prestart", probe)]}
    _lifecycle(ctx, b, logdir)
    _order(ctx, _log(logdir), "prestart", "program")
    ours = os.readlink("/proc/self/ns/mnt")
    hook_mnt = read(os.path.join(logdir, "hook-mnt")).strip()
    init_mnt = read(os.path.join(logdir, "init-mnt")).strip()
    ctx.check(hook_mnt == ours, f"prestart ran in mount namespace {hook_mnt}, not the "
                                f"runtime's {ours}")
    ctx.check(init_mnt and init_mnt != ours,
              f"the container's mount namespace ({init_mnt or 'unreadable'}) did not exist "
              "when prestart ran")


@case("prestart_fail")
def prestart_fail(ctx):
    """A failing prestart hook is an error: create or start fails, the program never runs,
    the later hooks do not run, the container is stopped, and once deleted (if it still
    exists) none of its cgroups remain."""
    ctx.control()
    b, logdir = _setup(ctx)
    b.config["hooks"] = {"prestart": [_hook(logdir, "prestart1", code=1),
                                      _hook(logdir, "prestart2")]}
    cid = ctx.new_id()
    b.write()
    cp = ctx.rt.create(cid, b.path, ctx.path(cid))
    if cp.returncode == 0:
        cp = ctx.rt("start", cid)
        ctx.check(cp.returncode != 0, "create and start both succeeded despite a failing "
                                      "prestart hook")
    log = _log(logdir)
    ctx.check("program" not in log, f"the program ran: log {log}")
    ctx.check("prestart2" not in log, f"the hook after the failing one ran: log {log}")
    if ctx.rt.exists(cid):
        st = ctx.rt.state(cid)
        ctx.check(st.get("status") == "stopped", f"status {st.get('status')!r} after a "
                                                 "failed prestart hook")
        ctx.rt.ok("delete", cid)
    ctx.check_no_cgroups(cid, "a failed prestart hook and delete")


@case("poststart")
def poststart(ctx):
    """poststart hooks run after the program started and before start returns, with the
    state on stdin."""
    b, logdir = _setup(ctx, "echo program >> /hooklog/log; sleep 0.2")
    b.config["hooks"] = {"poststart": [_hook(logdir, "poststart")]}
    _lifecycle(ctx, b, logdir)
    _order(ctx, _log(logdir), "create-returned", "poststart", "start-returned")
    st = json.loads(read(os.path.join(logdir, "poststart.stdin")))
    ctx.check(isinstance(st.get("pid"), int) and st["pid"] > 0, f"pid {st.get('pid')!r}")


@case("poststart_fail")
def poststart_fail(ctx):
    """A failing poststart hook (runtime-spec 1.1+ runtime.md lifecycle step 9): start MUST
    generate an error and the container is stopped; the program had already run. (In
    runtime-spec 1.0 this was only a warning.)"""
    b, logdir = _setup(ctx, "echo program >> /hooklog/log; sleep 60")
    b.config["hooks"] = {"poststart": [_hook(logdir, "poststart1", code=1)]}
    cid = ctx.create(b)
    ctx.check("poststart1" not in _log(logdir), "the poststart hook ran during create")
    cp = ctx.rt("start", cid)
    ctx.check(cp.returncode != 0, "start succeeded despite a failing poststart hook")
    log = _log(logdir)
    ctx.check("poststart1" in log, f"the poststart hook did not run: log {log}")
    if ctx.rt.exists(cid):
        ctx.rt.wait_status(cid, "stopped")


@case("poststop")
def poststop(ctx):
    """poststop hooks run after the container is deleted and before delete returns."""
    b, logdir = _setup(ctx)
    b.config["hooks"] = {"poststop": [_hook(logdir, "poststop")]}
    _lifecycle(ctx, b, logdir)
    _order(ctx, _log(logdir), "program", "delete-called", "poststop", "delete-returned")


@case("poststop_fail")
def poststop_fail(ctx):
    """A failing poststop hook is only a warning: the remaining hooks run, delete succeeds
    and the container is gone."""
    b, logdir = _setup(ctx)
    b.config["hooks"] = {"poststop": [_hook(logdir, "poststop1", code=1),
                                      _hook(logdir, "poststop2")]}
    cid = ctx.create(b)
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "stopped")
    cp = ctx.rt("delete", cid)
    log = _log(logdir)
    ctx.check("poststop2" in log, f"the hook after the failing one did not run: log {log}")
    ctx.check(cp.returncode == 0, f"delete exited {cp.returncode}: a failing poststop hook "
                                  "must only be a warning")
    ctx.check(not ctx.rt.exists(cid), "the container still exists after delete")
