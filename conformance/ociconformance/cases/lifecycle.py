"""Lifecycle (runtime.md): create, start, state, kill, delete, and the errors they owe."""

import os
import signal
import time

from ..context import parse_kv
from ..registry import case
from ..runtime import ns_inode, pid_alive

SLEEPER = "trap 'exit 0' TERM; while :; do sleep 0.05; done"


def _sleeper(ctx):
    b = ctx.bundle()
    b.config["process"]["args"] = ["/bin/sh", "-c", SLEEPER]
    return b


@case("default")
def default(ctx):
    """The default config (what `runc spec` writes) runs through the whole lifecycle
    (created -> running -> stopped -> deleted) and the process sees all of it: new pid,
    network, ipc, uts and mount namespaces; the default filesystems, devices and /dev
    links; masked and read-only /proc paths; hostname, uid, cwd, the NOFILE rlimit,
    the capability bounding set and no_new_privs."""
    from ocispec.tables import CAPABILITIES, NAMESPACES
    from .filesystem import _mountinfo
    from ..bundle import DEFAULT_CAPS
    b = ctx.bundle()
    # A masked /proc file that this kernel has and that has content on the host.
    masked = next((p for p in b.config["linux"]["maskedPaths"]
                   if p.startswith("/proc/") and os.path.isfile(p) and _nonempty(p)), None)
    b.config["process"]["args"] = ["/bin/sh", "-c",
                                   "echo host=$(hostname); echo uid=$(id -u); echo cwd=$(pwd);"
                                   f" echo masked=$(cat {masked or '/dev/null'} | wc -c);"
                                   " for l in fd stdin stdout stderr ptmx; do"
                                   " echo link_$l=$(readlink /dev/$l); done;"
                                   " for d in null zero full random urandom tty; do"
                                   " test -c /dev/$d && echo dev_$d=c; done;"
                                   " grep -E '^(CapBnd|NoNewPrivs):' /proc/self/status |"
                                   " tr -d ' \\t' | tr : =;"
                                   " echo nofile=$(ulimit -Sn)/$(ulimit -Hn);"
                                   " cat /proc/self/mountinfo"]
    cid = ctx.create(b)
    st = ctx.rt.state(cid)
    ctx.check(st.get("status") == "created", f"after create: status {st.get('status')!r}")
    for t in ("pid", "network", "ipc", "uts", "mount"):
        name = NAMESPACES[t][1]
        ctx.check(ns_inode(st["pid"], name) != ns_inode(os.getpid(), name),
                  f"the container shares the runtime's {t} namespace")
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "stopped")
    ctx.rt.ok("delete", cid)
    ctx.check(not ctx.rt.exists(cid), "`state` still answers after delete")
    out = ctx.output(cid)
    kv, mi = parse_kv(out), _mountinfo(out)
    want = {"host": "occ", "uid": "0", "cwd": "/", "masked": "0", "NoNewPrivs": "1",
            "nofile": "1024/1024", "link_fd": "/proc/self/fd", "link_stdin": "/proc/self/fd/0",
            "link_stdout": "/proc/self/fd/1", "link_stderr": "/proc/self/fd/2",
            "link_ptmx": "pts/ptmx"}
    want.update({f"dev_{d}": "c" for d in ("null", "zero", "full", "random", "urandom", "tty")})
    for k, v in want.items():
        ctx.check(kv.get(k) == v, f"{k} is {kv.get(k)!r}, expected {v!r}")
    bnd = int(kv.get("CapBnd", "0"), 16)
    mask = sum(1 << CAPABILITIES[c] for c in DEFAULT_CAPS)
    ctx.check(bnd == mask, f"CapBnd {bnd:#x}, expected {mask:#x}")
    for mp, fstype in (("/proc", "proc"), ("/sys", "sysfs"), ("/dev", "tmpfs"),
                       ("/dev/pts", "devpts"), ("/dev/shm", "tmpfs"), ("/dev/mqueue", "mqueue")):
        ctx.check(mp in mi and mi[mp][2] == fstype,
                  f"{mp} is {mi.get(mp, (0, 0, 'not mounted'))[2]}, expected {fstype}")
    ctx.check("ro" in mi["/sys"][0], "/sys is not read-only")
    ctx.check("/proc/sys" in mi and "ro" in mi["/proc/sys"][0], "/proc/sys is not read-only")


def _nonempty(path):
    try:
        with open(path, "rb") as f:
            return bool(f.read(1))
    except OSError:
        return False


@case("create")
def create(ctx):
    """create makes a container in state "created" whose init is alive but has not run the
    program; a second create with the same id fails and leaves the first untouched; create
    without a config.json fails and leaves nothing."""
    b = ctx.bundle()
    b.config["process"]["args"] = ["/bin/sh", "-c", "echo ran"]
    cid = ctx.create(b)
    st = ctx.rt.state(cid)
    ctx.check(st.get("status") == "created", f"status {st.get('status')!r}, expected created")
    ctx.check(isinstance(st.get("pid"), int) and pid_alive(st["pid"]),
              f"state pid {st.get('pid')!r} is not a live process")
    time.sleep(0.1)
    ctx.check(ctx.output(cid) == "", "the program ran before start")
    cp = ctx.rt.create(cid, b.path, ctx.path(cid + "-dup"))
    ctx.check(cp.returncode != 0, "a second create with the same id succeeded")
    st2 = ctx.rt.state(cid)
    ctx.check(st2.get("status") == "created" and st2.get("pid") == st["pid"],
              f"the duplicate create changed the first container: {st2}")
    empty = ctx.path("empty-bundle")
    os.makedirs(empty)
    bad = ctx.new_id()
    cp = ctx.rt.create(bad, empty, ctx.path(bad))
    ctx.check(cp.returncode != 0, "create succeeded on a bundle without config.json")
    ctx.check(not ctx.rt.exists(bad), "a failed create left a container behind")
    ctx.check_no_cgroups(bad, "a failed create")


@case("start")
def start(ctx):
    """start runs the program of a created container, exactly once; start of an unknown
    id, of a stopped container and a second start all fail."""
    ctx.rt.fails("no container id was given", "start")
    ctx.rt.fails("the id does not exist", "start", ctx.token + "-nosuch")
    b = ctx.bundle()
    b.config["process"]["args"] = ["/bin/sh", "-c", "echo ran"]
    cid = ctx.create(b)
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "stopped")
    ctx.rt.fails("the container is stopped (start only from created)", "start", cid)
    ctx.check(ctx.output(cid).split() == ["ran"],
              f"program output {ctx.output(cid)!r}, expected it to run once")
    b2 = _sleeper(ctx)
    cid2 = ctx.create(b2)
    ctx.rt.ok("start", cid2)
    ctx.rt.wait_status(cid2, "running")
    ctx.rt.fails("the container is running (start only from created)", "start", cid2)


@case("state")
def state(ctx):
    """state prints ociVersion, id, status, pid (while created/running), bundle (absolute)
    and the config's annotations; state of an unknown id fails."""
    ctx.rt.fails("no container id was given", "state")
    ctx.rt.fails("the id does not exist", "state", ctx.token + "-nosuch")
    b = _sleeper(ctx)
    b.config["annotations"] = {"org.example.occ": "yes"}
    cid = ctx.create(b)
    st = ctx.rt.state(cid)
    ctx.check(st.get("id") == cid, f"id {st.get('id')!r}")
    ctx.check(isinstance(st.get("ociVersion"), str) and st["ociVersion"],
              "no ociVersion")
    ctx.check(st.get("status") == "created", f"status {st.get('status')!r}, expected created")
    ctx.check(isinstance(st.get("pid"), int) and pid_alive(st["pid"]), f"pid {st.get('pid')!r}")
    bundle = st.get("bundle", "")
    ctx.check(os.path.isabs(bundle) and os.path.realpath(bundle) == os.path.realpath(b.path),
              f"bundle {bundle!r}, expected the absolute path {b.path}")
    ctx.check(st.get("annotations") == {"org.example.occ": "yes"},
              f"annotations {st.get('annotations')!r}")
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "running")
    ctx.rt.ok("kill", cid, "KILL")
    ctx.rt.wait_status(cid, "stopped")


@case("kill")
def kill(ctx):
    """kill delivers a signal to a created and to a running container (both stop), and fails
    for an unknown id."""
    ctx.rt.fails("no container id was given", "kill")
    ctx.rt.fails("the id does not exist", "kill", ctx.token + "-nosuch", "KILL")
    cid = ctx.create(_sleeper(ctx))
    pid = ctx.rt.state(cid)["pid"]
    ctx.rt.ok("kill", cid, "KILL")
    ctx.rt.wait_status(cid, "stopped")
    ctx.check(not pid_alive(pid), f"init {pid} still alive after SIGKILL")
    cid = ctx.create(_sleeper(ctx))
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "running")
    ctx.rt.ok("kill", cid, "TERM")
    ctx.rt.wait_status(cid, "stopped")


@case("kill_no_effect")
def kill_no_effect(ctx):
    """kill of a stopped container MUST fail and leave it stopped (runtime.md: kill only
    created or running containers)."""
    b = ctx.bundle()
    cid = ctx.create(b)
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "stopped")
    ctx.rt.fails("the container is stopped", "kill", cid, "KILL")
    st = ctx.rt.state(cid)
    ctx.check(st.get("status") == "stopped", f"status {st.get('status')!r} after the kill")


@case("killsig")
def killsig(ctx):
    """kill sends exactly the signal named: by name with and without SIG, and by number."""
    b = ctx.bundle()
    b.config["process"]["args"] = ["/bin/sh", "-c",
                                   "trap 'echo USR1' USR1; trap 'echo HUP' HUP; "
                                   "trap 'echo INT' INT; trap 'echo TERM; exit 0' TERM; "
                                   "echo ready; while :; do sleep 0.05; done"]
    cid = ctx.create(b)
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "running")

    def wait_line(word):
        deadline = time.monotonic() + ctx.rt.timeout
        while word not in ctx.output(cid).split():
            ctx.check(time.monotonic() < deadline,
                      f"the container did not report {word}; it printed {ctx.output(cid)!r}")
            time.sleep(0.02)

    wait_line("ready")
    for sig, word in (("USR1", "USR1"), ("SIGHUP", "HUP"), (str(int(signal.SIGINT)), "INT"),
                      ("TERM", "TERM")):
        ctx.rt.ok("kill", cid, sig)
        wait_line(word)
    ctx.rt.wait_status(cid, "stopped")
    got = ctx.output(cid).split()
    ctx.check(got == ["ready", "USR1", "HUP", "INT", "TERM"], f"signals seen: {got}")


@case("delete")
def delete(ctx):
    """delete removes a stopped container; delete of a running or of a created container
    MUST fail and have no effect (runtime.md). runc deviates: it deletes a created
    container by killing it; this case follows the spec."""
    ctx.rt.fails("no container id was given", "delete")
    ctx.rt.fails("the id does not exist", "delete", ctx.token + "-nosuch")
    cid = ctx.create(_sleeper(ctx))
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "running")
    ctx.rt.fails("the container is running", "delete", cid)
    ctx.check(ctx.rt.state(cid).get("status") == "running", "delete changed a running container")
    ctx.rt.ok("kill", cid, "KILL")
    ctx.rt.wait_status(cid, "stopped")
    ctx.rt.ok("delete", cid)
    ctx.check(not ctx.rt.exists(cid), "`state` still answers after delete")
    cid = ctx.create(_sleeper(ctx))
    pid = ctx.rt.state(cid)["pid"]
    ctx.rt.fails("the container is only created (spec: delete only stopped containers)",
                 "delete", cid)
    ctx.check(ctx.rt.state(cid).get("status") == "created" and pid_alive(pid),
              "delete changed a created container")


@case("delete_only_create_resources")
def delete_only_create_resources(ctx):
    """delete removes only what the runtime created: a cgroup made by someone else that
    the container's init was moved into, and a bind-mount source, stay."""
    from .. import cgroupfs
    h = cgroupfs.hierarchy_for("pids") or cgroupfs.hierarchy_for("memory")
    ctx.require(None if h else "no pids or memory cgroup controller on this host")
    ours = os.path.join(h.mountpoint, ctx.token + "-theirs")
    os.mkdir(ours)
    b = ctx.bundle()
    src = ctx.path("shared-src")
    os.makedirs(src)
    b.config["mounts"].append({"destination": "/shared", "type": "bind", "source": src,
                               "options": ["rbind", "rw"]})
    cid = ctx.create(b)
    pid = ctx.rt.state(cid)["pid"]
    with open(os.path.join(ours, "cgroup.procs"), "w") as f:
        f.write(str(pid))
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "stopped")
    ctx.rt.ok("delete", cid)
    ctx.check(os.path.isdir(ours), f"delete removed the cgroup {ours} it did not create")
    ctx.check(os.path.isdir(src), f"delete removed the bind source {src}")


@case("delete_resources")
def delete_resources(ctx):
    """delete removes what create made: the container's cgroups and its state; the
    container's processes are gone."""
    from .. import cgroupfs
    b = _sleeper(ctx)
    b.config["linux"]["cgroupsPath"] = f"/{ctx.token}-cg"
    cid = ctx.create(b)
    pid = ctx.rt.state(cid)["pid"]
    made = [d for d in cgroupfs.cgroup_dirs(pid).values() if ctx.token in d]
    ctx.check(made, f"no cgroup named for cgroupsPath in /proc/{pid}/cgroup")
    ctx.rt.ok("start", cid)
    ctx.rt.ok("kill", cid, "KILL")
    ctx.rt.wait_status(cid, "stopped")
    ctx.rt.ok("delete", cid)
    ctx.check(not ctx.rt.exists(cid), "`state` still answers after delete")
    ctx.check(not pid_alive(pid), f"init {pid} still alive after delete")
    left = [d for d in made if os.path.exists(d)]
    ctx.check(not left, f"cgroups left after delete: {left}")


@case("config_updates_without_affect")
def config_updates_without_affect(ctx):
    """Changing config.json after create does not change the created container (runtime.md:
    updates to config.json after create MUST NOT affect the container)."""
    b = ctx.bundle()
    b.config["process"]["args"] = ["/bin/sh", "-c", "echo first; hostname"]
    cid = ctx.create(b)
    b.config["process"]["args"] = ["/bin/sh", "-c", "echo second; hostname"]
    b.config["hostname"] = "changed"
    b.write()
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "stopped")
    out = ctx.output(cid).split()
    ctx.check(out == ["first", "occ"], f"program printed {out}, expected ['first', 'occ']")
    st = ctx.rt.state(cid)
    ctx.check(st.get("status") == "stopped", f"status {st.get('status')!r}")


@case("pidfile")
def pidfile(ctx):
    """create --pid-file writes the pid of the container's init, the one `state` shows."""
    b = _sleeper(ctx)
    pf = ctx.path("container.pid")
    cid = ctx.create(b, None, "--pid-file", pf)
    ctx.check(os.path.exists(pf), "no pid file after create")
    with open(pf) as f:
        text = f.read().strip()
    st = ctx.rt.state(cid)
    ctx.check(text == str(st.get("pid")), f"pid file says {text!r}, state says {st.get('pid')}")
    ctx.check(pid_alive(int(text)), f"pid {text} from the pid file is not alive")


@case("misc_props")
def misc_props(ctx):
    """Unknown annotations and unknown properties are ignored (config.md: MUST NOT error);
    an invalid value (ociVersion "invalid", not SemVer) MUST be an error."""
    b = ctx.bundle()
    b.config["annotations"] = {f"org.{ctx.token}.unknown": ""}
    ctx.run(b, "true")
    b = ctx.bundle()
    b.config["unknownProperty"] = {"x": 1}
    b.config["process"]["unknownProperty"] = "x"
    ctx.run(b, "true")
    b = ctx.bundle()
    b.config["ociVersion"] = "invalid"
    ctx.create_fails(b, 'ociVersion "invalid" is not SemVer')

