#!/usr/bin/env python3
"""The floor: what a CPython runtime costs when it does nothing but the kernel work.

    floor_runtime.py [--root DIR] create|start|state|delete|run [--bundle B] [--pid-file F] ID

A straight-line program for `runc spec`'s default bundle only (bench/runtime_bench.py's):
it assumes that config instead of validating it, keeps no locks, sends no messages but two
bytes on pipes, and handles no error but by dying. It does the kernel work runc and pyrunc
do for that bundle: state dir and exec.fifo, cgroups (v1 hierarchies and the v2 one, the
device rules), one clone3 of init into new mount, uts, ipc, network and pid namespaces and its
cgroup2 dir (init joins the v1 ones itself: no grace period, as pyrunc's direct path), the
mounts, device nodes and /dev links, pivot_root, masked and read-only paths, the read-only
root, hostname, rlimits, capabilities, no_new_privs, exec.fifo and exec.
runtime_bench.py times it beside pyrunc and runc: pyrunc - floor is pyrunc's own cost (imports,
validation, protocol, state), floor - runc is what being a Python process costs.

It leaves out what pyrunc does for security beyond that (the memfd exec trampoline, verified
procfs writes, fd-verified masks, fd hygiene): the floor is a bound, not a runtime. Not for use.
"""

import gc
import os
import sys

import _json

gc.disable()  # as pyrunc: no cycle collection in a program that lives milliseconds

libc = ctypes = resource = linux = None  # loaded by create and run only: state and start need neither
# C calls go through pyrunc's own ffi (ctypes' types on _ctypes, without ctypes/__init__'s
# ~2.8 ms): the cheapest way this interpreter has, so the floor stays a floor.
RUNTIME = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "runtime")
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWNET, CLONE_NEWPID = 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE, MS_SLAVE = 32, 4096, 16384, 1 << 18, 1 << 19
MS_STRICTATIME, MS_RELATIME = 1 << 24, 1 << 21
CG = "/sys/fs/cgroup"
DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
           ("tty", 5, 0)]
ALLOW = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm", "c 5:0 rwm", "c 1:5 rwm",
         "c 1:9 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm"]


def check(r):
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def mount(src, dst, typ, flags, data=None):
    check(libc.mount(src and src.encode(), dst.encode(), typ and typ.encode(), flags,
                     data and data.encode()))


def write(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def cgroup_dirs(cid):
    """The container's directory in every hierarchy: v1 controllers and the v2 one."""
    out = []
    for name in os.listdir(CG):
        d = os.path.join(CG, name)
        if os.path.isdir(d) and not os.path.islink(d):
            out.append(os.path.join(d, "floor", cid))
    if os.path.exists(os.path.join(CG, "cgroup.controllers")):  # pure v2
        out = [os.path.join(CG, "floor", cid)]
    return out


def loads(raw):
    # _json's scanner without the json package (which imports re and enum)
    class Ctx:
        strict = True
        object_hook = object_pairs_hook = None
        parse_float, parse_int, parse_constant = float, int, float
        memo = {}
    return _json.make_scanner(Ctx)(raw.decode(), 0)[0]


def init(cfg, rootfs, fifo, go_r, ready_w, v1):
    """pid 1 of the new pid namespace, born in its namespaces and cgroup2 dir, until exec."""
    for c in v1:  # "0": the writer itself, which waits out no grace period
        write(c + "/tasks", "0")
    fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)  # its path is gone after pivot_root
    mount(None, "/", None, MS_REC | MS_SLAVE)
    mount(rootfs, rootfs, None, MS_BIND | MS_REC)
    for m in cfg["mounts"]:
        dst = rootfs + m["destination"]
        os.makedirs(dst, exist_ok=True)
        flags, data = 0, []
        for o in m.get("options", ()):
            f = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "ro": MS_RDONLY,
                 "strictatime": MS_STRICTATIME, "relatime": MS_RELATIME}.get(o)
            if f:
                flags |= f
            else:
                data.append(o)
        if m["type"] == "cgroup":  # v1: a tmpfs with each hierarchy's own dir bound in
            mount("tmpfs", dst, "tmpfs", flags & ~MS_RDONLY, "mode=755")
            for d in cgroup_dirs(cfg["_id"]):
                sub = os.path.join(dst, d[len(CG) + 1:].split("/")[0])
                os.mkdir(sub)
                mount(d, sub, None, MS_BIND | MS_REC)
                mount(None, sub, None, MS_REMOUNT | MS_BIND | MS_RDONLY | (flags & ~MS_RDONLY))
            mount(None, dst, None, MS_REMOUNT | MS_RDONLY | (flags & ~MS_RDONLY), "mode=755")
            continue
        mount(m["source"], dst, m["type"], flags, ",".join(data) or None)
    dev = rootfs + "/dev"
    for name, major, minor in DEVICES:
        os.mknod(f"{dev}/{name}", 0o20666, os.makedev(major, minor))
    for src, dst in (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                     ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"),
                     ("pts/ptmx", "ptmx")):
        os.symlink(src, f"{dev}/{dst}")
    os.chdir(rootfs)
    check(libc.syscall(155, b".", b"."))  # pivot_root(".", ".")
    check(libc.umount2(b".", 2))  # MNT_DETACH: the old root
    os.chdir("/")
    lx = cfg["linux"]
    check(libc.sethostname(cfg["hostname"].encode(), len(cfg["hostname"])))
    for p in lx["readonlyPaths"]:
        if os.path.exists(p):
            mount(p, p, None, MS_BIND | MS_REC)
            mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_REC)
    for p in lx["maskedPaths"]:
        if os.path.isdir(p):
            mount("tmpfs", p, "tmpfs", MS_RDONLY)
        elif os.path.exists(p):
            mount("/dev/null", p, None, MS_BIND)
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    os.read(go_r, 1)  # in the cgroups
    os.close(go_r)
    for r in cfg["process"]["rlimits"]:
        resource.setrlimit(resource.RLIMIT_NOFILE, (r["soft"], r["hard"]))
    # capabilities: the bounding set down to the config's, then capset
    keep = {"CAP_AUDIT_WRITE": 29, "CAP_KILL": 5, "CAP_NET_BIND_SERVICE": 10}
    bits = 0
    for name in cfg["process"]["capabilities"]["bounding"]:
        bits |= 1 << keep[name]
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for c in range(last + 1):
        if not bits >> c & 1:
            check(libc.prctl(24, c, 0, 0, 0))  # PR_CAPBSET_DROP
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)(bits & 0xFFFFFFFF, bits & 0xFFFFFFFF, bits & 0xFFFFFFFF,
                                 bits >> 32, bits >> 32, bits >> 32)
    check(libc.capset(hdr, data))
    for c in range(last + 1):
        if bits >> c & 1:
            check(libc.prctl(47, 2, c, 0, 0))  # PR_CAP_AMBIENT_RAISE
    check(libc.prctl(38, 1, 0, 0, 0))  # PR_SET_NO_NEW_PRIVS
    os.write(ready_w, b"r")
    os.close(ready_w)
    fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY)  # blocks until start
    os.write(fd, b"0")
    os.close(fd)
    p = cfg["process"]
    env = dict(e.split("=", 1) for e in p["env"])
    os.execve(p["args"][0], p["args"], env)


def create(root, cid, bundle, pid_file):
    global libc, ctypes, resource, linux
    import resource

    sys.path.insert(0, RUNTIME)
    from pyrunc import ffi as ctypes
    from pyrunc import linux  # clone(): clone3 into namespaces and a cgroup2 dir

    libc = ctypes.libc
    bundle = os.path.abspath(bundle)
    with open(os.path.join(bundle, "config.json"), "rb") as f:
        cfg = loads(f.read())
    cfg["_id"] = cid
    rootfs = os.path.join(bundle, cfg["root"]["path"])
    d = os.path.join(root, cid)
    os.makedirs(d, 0o700)
    fifo = os.path.join(d, "exec.fifo")
    os.mkfifo(fifo, 0o622)
    cgs = cgroup_dirs(cid)
    for c in cgs:
        os.makedirs(c, exist_ok=True)
        if "/cpuset/" in c:  # a new cpuset has no cpus or mems until given its parent's
            for f in ("cpuset.cpus", "cpuset.mems"):
                with open(f"{CG}/cpuset/{f}") as src:
                    v = src.read().strip()
                write(f"{os.path.dirname(c)}/{f}", v)
                write(f"{c}/{f}", v)
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    v2 = [c for c in cgs if os.path.exists(os.path.dirname(os.path.dirname(c)) + "/cgroup.controllers")]
    v1 = [c for c in cgs if c not in v2]
    v2fd = os.open(v2[0], os.O_PATH | os.O_DIRECTORY) if v2 else -1
    pid = linux.clone(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET, v2fd)
    if pid == 0:
        os.close(go_w)
        os.close(ready_r)
        try:
            init(cfg, rootfs, fifo, go_r, ready_w, v1)
        except BaseException as e:
            print(f"floor init: {e!r}", file=sys.stderr)
        os._exit(1)
    os.close(go_r)
    os.close(ready_w)
    for c in v1:  # init joins them meanwhile; it execs only after "g"
        if "/devices/" in c:
            write(c + "/devices.deny", "a")
            for rule in ALLOW:
                write(c + "/devices.allow", rule)
    os.write(go_w, b"g")
    os.close(go_w)
    if os.read(ready_r, 1) != b"r":
        raise SystemExit("floor: init failed")
    os.close(ready_r)
    with open(os.path.join(d, "state"), "w") as f:
        f.write(f'{pid} {bundle}')
    if pid_file:
        with open(pid_file, "w") as f:
            f.write(str(pid))
    return pid


def start(root, cid):
    fifo = os.path.join(root, cid, "exec.fifo")
    fd = os.open(fifo, os.O_RDONLY)
    os.read(fd, 1)
    os.close(fd)
    os.unlink(fifo)


def state(root, cid):
    d = os.path.join(root, cid)
    with open(os.path.join(d, "state")) as f:
        pid, bundle = f.read().split(" ", 1)
    try:
        with open(f"/proc/{pid}/stat") as f:
            alive = f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        alive = False
    status = "stopped" if not alive else "created" if os.path.exists(d + "/exec.fifo") \
        else "running"
    sys.stdout.write('{"ociVersion":"1.0.2","id":"%s","pid":%s,"status":"%s","bundle":"%s"}\n'
                     % (cid, pid if alive else 0, status, bundle))


def delete(root, cid):
    d = os.path.join(root, cid)
    try:
        with open(os.path.join(d, "state")) as f:
            pid = int(f.read().split(" ", 1)[0])
        os.kill(pid, 9)
    except (FileNotFoundError, ProcessLookupError):
        pass
    for c in cgroup_dirs(cid):
        for _ in range(1000):
            try:
                os.rmdir(c)
                break
            except FileNotFoundError:
                break
            except OSError:  # EBUSY: the killed init is still exiting

                import time
                time.sleep(0.001)
        try:
            os.rmdir(os.path.dirname(c))  # floor/, when no other container uses it
        except OSError:
            pass
    for n in os.listdir(d) if os.path.isdir(d) else ():
        os.unlink(os.path.join(d, n))
    if os.path.isdir(d):
        os.rmdir(d)


def main(argv):
    root, bundle, pid_file = "/run/floor", ".", ""
    cmd, cid = None, None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--root", "--bundle", "-b", "--pid-file", "--log", "--log-format"):
            v = argv[i + 1]
            i += 2
            if a == "--root":
                root = v
            elif a in ("--bundle", "-b"):
                bundle = v
            elif a == "--pid-file":
                pid_file = v
            continue
        if a.startswith("-"):  # --force, -d, ...: this bundle needs none of them
            i += 1
            continue
        if cmd is None:
            cmd = a
        else:
            cid = a
        i += 1
    if cmd == "--version" or "--version" in argv:
        print("floor runtime (bench/floor_runtime.py)")
        return 0
    if cmd == "create":
        create(root, cid, bundle, pid_file)
    elif cmd == "start":
        start(root, cid)
    elif cmd == "state":
        state(root, cid)
    elif cmd == "delete":
        delete(root, cid)
    elif cmd == "run":
        pid = create(root, cid, bundle, pid_file)
        start(root, cid)
        _, status = os.waitpid(pid, 0)
        delete(root, cid)
        return os.waitstatus_to_exitcode(status) & 0xFF
    else:
        print(f"floor: unknown command {cmd}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    rc = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(rc)  # no interpreter teardown, as pyrunc
