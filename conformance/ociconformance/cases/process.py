"""The process object (config.md "Process"): args, env, cwd, user, capabilities,
rlimits, oomScoreAdj; and the hostname. Each is read back from inside the container."""

import os
import socket

from ocispec.tables import CAPABILITIES, RLIMITS

from ..context import parse_kv
from ..registry import case
from ..runtime import read


def _status_fields(out: str) -> dict:
    """Lines of /proc/self/status as {field: value}."""
    fields = {}
    for line in out.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            fields[k.strip()] = v.strip()
    return fields


def _mask(names) -> int:
    m = 0
    for n in names:
        m |= 1 << CAPABILITIES[n]
    return m


@case("hostname")
def hostname(ctx):
    """hostname, and domainname (runtime-spec 1.1+), are set in the container's new UTS
    namespace; the host's are unchanged."""
    before = socket.gethostname(), read("/proc/sys/kernel/domainname")
    b = ctx.bundle()
    b.config["hostname"] = "occ-hostname-test"
    b.config["domainname"] = "occ-domain.test"
    out = ctx.run(b, "hostname; cat /proc/sys/kernel/hostname /proc/sys/kernel/domainname")
    got = out.split()
    ctx.check(got[:2] == ["occ-hostname-test"] * 2, f"container sees hostname {got[:2]}")
    ctx.check(got[2:] == ["occ-domain.test"], f"container sees domainname {got[2:]}")
    after = socket.gethostname(), read("/proc/sys/kernel/domainname")
    ctx.check(after == before, f"the host's hostname/domainname changed to {after}")


@case("process")
def process(ctx):
    """args are passed as given (spaces kept) and args[0] is found through the config's
    PATH (execvp); env is exactly the config's; cwd is set; noNewPrivileges false leaves
    no_new_privs off."""
    b = ctx.bundle()
    os.makedirs(os.path.join(b.rootfs, "work", "dir"))
    b.config["process"]["env"] = ["PATH=/bin", "OCC_A=one two", "OCC_B="]
    b.config["process"]["cwd"] = "/srv/app"
    b.config["process"]["noNewPrivileges"] = False
    script = ('echo "arg1=$1"; echo "arg2=$2"; echo "cwd=$(pwd)"; env | sort;'
              ' grep ^NoNewPrivs: /proc/self/status | tr -d " \t" | tr : =')
    b.config["process"]["args"] = ["sh", "-c", script, "sh", "a b", "c"]
    cid = ctx.create(b)
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "stopped")
    out = ctx.output(cid)
    kv = parse_kv(out)
    ctx.check(kv.get("arg1") == "a b" and kv.get("arg2") == "c", f"args seen: {out!r}")
    ctx.check(kv.get("cwd") == "/srv/app", f"cwd {kv.get('cwd')!r}")
    ctx.check(kv.get("OCC_A") == "one two" and "OCC_B" in kv, f"env seen: {out!r}")
    ctx.check(kv.get("PATH") == "/bin", f"PATH {kv.get('PATH')!r}")
    ctx.check(kv.get("NoNewPrivs") == "0", f"NoNewPrivs {kv.get('NoNewPrivs')!r}, expected 0")


@case("process_capabilities")
def process_capabilities(ctx):
    """Each capability set is exactly the configured one (/proc/self/status CapBnd, CapEff,
    CapPrm, CapInh, CapAmb)."""
    sets = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID",
                     "CAP_SETGID"],
        "effective": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "inheritable": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }
    b = ctx.bundle()
    b.config["process"]["capabilities"] = sets
    b.config["process"]["noNewPrivileges"] = True
    fields = _status_fields(ctx.run(b, "cat /proc/self/status"))
    # The program runs as uid 0, and execve gives root every capability of bounding |
    # inheritable: bounding, inheritable and ambient must match exactly; effective and
    # permitted must hold the configured sets and nothing outside bounding.
    for key, name in (("CapBnd", "bounding"), ("CapInh", "inheritable"),
                      ("CapAmb", "ambient")):
        got = int(fields.get(key, "0"), 16)
        ctx.check(got == _mask(sets[name]), f"{key} {got:#x}, expected {_mask(sets[name]):#x} "
                                            f"({name} {sets[name]})")
    for key, name in (("CapEff", "effective"), ("CapPrm", "permitted")):
        got = int(fields.get(key, "0"), 16)
        want = _mask(sets[name])
        ctx.check(got & want == want, f"{key} {got:#x} lacks {name} {sets[name]}")
        ctx.check(got & ~_mask(sets["bounding"]) == 0,
                  f"{key} {got:#x} holds capabilities outside the bounding set")


@case("process_capabilities_fail")
def process_capabilities_fail(ctx):
    """An unknown capability name (upstream wrote this case for runtime-spec 1.0, where it
    was an error). Since runtime-spec 1.1 config.md: a value that cannot be mapped to a
    kernel interface MUST be logged as a warning and runtimes SHOULD NOT fail: the
    container runs with exactly the known capabilities, and the runtime's log (--log) or
    stderr names the unknown one."""
    b = ctx.bundle()
    for s in ("bounding", "effective", "permitted"):
        b.config["process"]["capabilities"][s] = ["CAP_CHOWN", "CAP_OCC_NO_SUCH"]
    log = ctx.path("runtime.log")
    ctx.rt.globals = ["--log", log]
    b.config["process"]["args"] = ["/bin/sh", "-c", "grep ^CapBnd /proc/self/status"]
    cid = ctx.create(b)
    ctx.rt.ok("start", cid)
    ctx.rt.wait_status(cid, "stopped")
    fields = _status_fields(ctx.output(cid))
    got = int(fields.get("CapBnd", "0"), 16)
    ctx.check(got == _mask(["CAP_CHOWN"]), f"CapBnd {got:#x}, expected only CAP_CHOWN")
    said = (read(log) if os.path.exists(log) else "") + read(ctx.path(cid) + ".err")
    ctx.check("CAP_OCC_NO_SUCH" in said,
              "no warning naming CAP_OCC_NO_SUCH in the runtime's --log file or stderr")


@case("process_oom_score_adj")
def process_oom_score_adj(ctx):
    """oomScoreAdj is written to the process's /proc/PID/oom_score_adj."""
    ours = int(read("/proc/self/oom_score_adj"))
    want = min(1000, max(ours, 0) + 123)  # raising needs no CAP_SYS_RESOURCE
    b = ctx.bundle()
    b.config["process"]["oomScoreAdj"] = want
    out = ctx.run(b, "cat /proc/self/oom_score_adj").strip()
    ctx.check(out == str(want), f"oom_score_adj {out!r}, expected {want}")


def _limits(out: str) -> dict:
    """/proc/self/limits as {resource heading: (soft, hard)}."""
    res = {}
    for line in out.splitlines()[1:]:
        parts = line[26:].split()
        if len(parts) >= 2:
            res[line[:26].strip()] = (parts[0], parts[1])
    return res


@case("process_rlimits")
def process_rlimits(ctx):
    """rlimits are applied with setrlimit: soft and hard of each configured type
    (values at or below the runtime's own hard limits, which needs no CAP_SYS_RESOURCE)."""
    import resource
    hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard_core = resource.getrlimit(resource.RLIMIT_CORE)[1]
    nofile = min(1000, hard_nofile)
    core = 4096 if hard_core == resource.RLIM_INFINITY else min(4096, hard_core)
    b = ctx.bundle()
    b.config["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": nofile - 10, "hard": nofile},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": core},
        {"type": "RLIMIT_NPROC", "soft": 500, "hard": 600},
    ]
    lim = _limits(ctx.run(b, "cat /proc/self/limits"))
    for name, want in (("Max open files", (str(nofile - 10), str(nofile))),
                       ("Max core file size", ("0", str(core))),
                       ("Max processes", ("500", "600"))):
        ctx.check(lim.get(name) == want, f"{name}: {lim.get(name)}, expected {want}")


@case("process_rlimits_fail")
def process_rlimits_fail(ctx):
    """An unknown rlimit type is an invalid value: create MUST fail."""
    ctx.control()
    assert "RLIMIT_OCC_NO_SUCH" not in RLIMITS
    b = ctx.bundle()
    b.config["process"]["rlimits"] = [{"type": "RLIMIT_OCC_NO_SUCH", "soft": 1, "hard": 1}]
    ctx.create_fails(b, 'rlimit type "RLIMIT_OCC_NO_SUCH" does not exist')


@case("process_user")
def process_user(ctx):
    """user.uid, gid, additionalGids and umask are the process's (/proc/self/status Uid,
    Gid, Groups; the shell's umask)."""
    b = ctx.bundle()
    b.config["process"]["user"] = {"uid": 1234, "gid": 2345, "additionalGids": [100, 3456],
                                   "umask": 0o027}
    out = ctx.run(b, "cat /proc/self/status; echo umask=$(umask)")
    f = _status_fields(out)
    ctx.check(f.get("Uid", "").split() == ["1234"] * 4, f"Uid {f.get('Uid')!r}")
    ctx.check(f.get("Gid", "").split() == ["2345"] * 4, f"Gid {f.get('Gid')!r}")
    groups = sorted(int(g) for g in f.get("Groups", "").split())
    ctx.check(groups in ([100, 3456], [100, 2345, 3456]),
              f"Groups {groups}, expected [100, 3456]")
    umask = parse_kv(out).get("umask", "")
    ctx.check(umask.lstrip("0") == "27", f"umask {umask!r}, expected 0027")
