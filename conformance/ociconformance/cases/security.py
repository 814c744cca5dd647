"""Kernel security settings (config-linux.md "Seccomp", "Sysctl"; config.md
apparmorProfile), observed from inside: the syscall that must be denied, /proc/sys."""

import os
import shutil
import subprocess

from .. import host
from ..context import parse_kv
from ..registry import case
from ..runtime import read


@case("linux_seccomp")
def linux_seccomp(ctx):
    """A seccomp filter is installed (/proc/self/status Seccomp: 2): mkdir fails with the
    configured errnoRet (EACCES), chmod to 0777 fails with the default errno (EPERM) through
    an argument condition, chmod to 0644 and other syscalls still work."""
    b = ctx.bundle()
    b.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 0o777, "op": "SCMP_CMP_EQ"}]},
            {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 2, "value": 0o777, "op": "SCMP_CMP_EQ"}]},
        ],
    }
    out = ctx.run(b, "grep '^Seccomp:' /proc/self/status | tr -d ' \\t';"
                     " mkdir /tmp/d 2>&1; echo mkdir=$?;"
                     " touch /tmp/f; echo touch=$?;"
                     " chmod 0777 /tmp/f 2>&1; echo chmod777=$?;"
                     " chmod 0644 /tmp/f; echo chmod644=$?")
    kv = parse_kv(out.replace("Seccomp:", "Seccomp="))
    ctx.check(kv.get("Seccomp") == "2", f"Seccomp mode {kv.get('Seccomp')!r}, expected 2")
    ctx.check(kv.get("mkdir") not in (None, "0") and "Permission denied" in out,
              f"mkdir was not denied with EACCES: {out!r}")
    ctx.check(kv.get("chmod777") not in (None, "0") and "not permitted" in out,
              f"chmod 0777 was not denied with EPERM: {out!r}")
    ctx.check(kv.get("touch") == "0" and kv.get("chmod644") == "0",
              f"allowed syscalls failed: {out!r}")


@case("linux_sysctl")
def linux_sysctl(ctx):
    """linux.sysctl values are written in the container's namespaces (net.* in its network
    namespace, kernel.msgmax in its IPC namespace); the host's stay as they were."""
    sysctl = {"net.ipv4.ip_forward": "1", "net.ipv4.ping_group_range": "7 8",
              "kernel.msgmax": "12345"}
    before = {k: read("/proc/sys/" + k.replace(".", "/")).split() for k in sysctl}
    b = ctx.bundle()
    b.config["linux"]["sysctl"] = sysctl
    script = "; ".join(f"echo {k}=$(cat /proc/sys/{k.replace('.', '/')})" for k in sysctl)
    kv = parse_kv(ctx.run(b, script))
    for k, v in sysctl.items():
        ctx.check(kv.get(k, "").split() == v.split(), f"{k} is {kv.get(k)!r}, expected {v!r}")
        after = read("/proc/sys/" + k.replace(".", "/")).split()
        ctx.check(after == before[k], f"the host's {k} changed to {after}")


PROFILE = """profile %s flags=(attach_disconnected,mediate_deleted) {
  file,
  capability,
  network,
  mount,
  umount,
  signal,
  ptrace,
  pivot_root,
  unix,
}
"""


@case("linux_process_apparmor_profile")
def linux_process_apparmor_profile(ctx):
    """process.apparmorProfile: the program runs confined by the named profile
    (/proc/self/attr/current)."""
    ctx.require(host.apparmor())
    parser = shutil.which("apparmor_parser")
    ctx.require(None if parser else "no apparmor_parser on this host to load a profile")
    name = ctx.token + "-profile"
    prof = ctx.path("profile")
    with open(prof, "w") as f:
        f.write(PROFILE % name)
    subprocess.run([parser, "-r", prof], check=True, capture_output=True)
    try:
        b = ctx.bundle()
        b.config["process"]["apparmorProfile"] = name
        out = ctx.run(b, "cat /proc/self/attr/current")
        ctx.check(out.split()[:1] == [name], f"confined by {out.strip()!r}, expected {name}")
    finally:
        subprocess.run([parser, "-R", prof], capture_output=True)
        os.unlink(prof)
