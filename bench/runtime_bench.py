#!/usr/bin/env python3
"""Start-up speed of pyrunc against runc and crun, measured in the same run.

    python3 bench/runtime_bench.py [-n 30] [--runtimes pyrunc,runc,crun] [--json]

On one busybox bundle running /bin/true, alternating the runtimes on every round:
  run        `R run ID` in the foreground (create + start + wait + delete in one call)
  lifecycle  `R create`, `R start`, wait for the container's exit, `R delete`: four steps,
             each also reported on its own
  state      `R state ID` of a created container
Prints medians and p90 in milliseconds, the pyrunc/runc ratios, and the import time of
pyrunc's entry module (python -X importtime). A runtime that refuses this host (crun 1.8
refuses hybrid cgroup layouts) is reported with its error instead of figures.

Each runtime gets its own --root in a temporary directory; everything is deleted at the
end. As root (the runtimes need it). Standard library only.
"""

import argparse
import ctypes
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# `runc spec`'s default config, not a terminal, running /bin/true.
CONFIG = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "cwd": "/",
        "capabilities": {k: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
                         for k in ("bounding", "effective", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "bench",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    },
}

OPS = ("run", "lifecycle", "create", "start", "wait", "delete", "state")
RATIO_OPS = ("run", "lifecycle", "state")
PR_SET_CHILD_SUBREAPER = 36


class Refused(Exception):
    """The runtime failed a command: its first line of error output."""


def make_bundle(top: str) -> str:
    bundle = os.path.join(top, "bundle")
    bindir = os.path.join(bundle, "rootfs", "bin")
    os.makedirs(bindir)
    shutil.copy2("/bin/busybox", os.path.join(bindir, "busybox"))
    for applet in ("true", "sh"):
        os.symlink("busybox", os.path.join(bindir, applet))
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
    return bundle


class Runtime:
    def __init__(self, name: str, binary: str, top: str, bundle: str):
        self.name, self.binary, self.bundle = name, binary, bundle
        self.root = os.path.join(top, f"root-{name}")
        os.mkdir(self.root)
        self.samples = {op: [] for op in OPS}
        self.refused = None
        self.seq = 0

    def cmd(self, *args, check=True) -> float:
        """Run `binary --root ROOT args...`; its wall time in ms."""
        # A file, not a pipe: a created container inherits the runtime's stdio and would
        # hold a pipe open, and subprocess would wait for its EOF.
        with tempfile.TemporaryFile() as errf:
            t0 = time.perf_counter()
            p = subprocess.run([self.binary, "--root", self.root, *args],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)
            dt = (time.perf_counter() - t0) * 1000
            errf.seek(0)
            stderr = errf.read()
        if check and p.returncode != 0:
            err = stderr.decode(errors="replace").strip().splitlines()
            raise Refused(f"`{self.name} {args[0]}` exit status {p.returncode}"
                          + (f": {err[-1]}" if err else ""))
        return dt

    def new_id(self) -> str:
        self.seq += 1
        return f"bench-{self.name}-{os.getpid()}-{self.seq}"

    def run_once(self) -> None:
        self.samples["run"].append(self.cmd("run", "--bundle", self.bundle, self.new_id()))

    def lifecycle_once(self) -> None:
        cid = self.new_id()
        pidfile = os.path.join(self.root, f"{cid}.pid")
        t = {"create": self.cmd("create", "--bundle", self.bundle, "--pid-file", pidfile, cid)}
        with open(pidfile) as f:
            pid = int(f.read().strip())
        t["start"] = self.cmd("start", cid)
        t0 = time.perf_counter()
        wait_exit(pid)
        t["wait"] = (time.perf_counter() - t0) * 1000
        t["delete"] = self.cmd("delete", cid)
        for op, ms in t.items():
            self.samples[op].append(ms)
        self.samples["lifecycle"].append(sum(t.values()))

    def state_setup(self) -> None:
        self.state_id = self.new_id()
        self.cmd("create", "--bundle", self.bundle, self.state_id)

    def state_once(self) -> None:
        self.samples["state"].append(self.cmd("state", self.state_id))

    def cleanup(self) -> None:
        for cid in os.listdir(self.root):
            if os.path.isdir(os.path.join(self.root, cid)):
                self.cmd("delete", "--force", cid, check=False)

    def version(self) -> str:
        p = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        return (p.stdout.splitlines() or ["?"])[0]


def wait_exit(pid: int) -> None:
    """Wait for the container's init: we are a child subreaper, so once `create` has
    exited the init is our child; otherwise poll a pidfd."""
    try:
        os.waitpid(pid, 0)
        return
    except ChildProcessError:
        pass
    import select
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def stats(samples: list) -> dict | None:
    if not samples:
        return None
    ordered = sorted(samples)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return {"median_ms": round(statistics.median(ordered), 2), "p90_ms": round(p90, 2),
            "n": len(ordered)}


def import_times(python: str) -> dict:
    """`python -X importtime -c 'import pyrunc.__main__'`: total and heaviest imports, and
    the bare interpreter's start-up for scale."""
    p = subprocess.run([python, "-X", "importtime", "-c", "import pyrunc.__main__"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        err = [l for l in p.stderr.splitlines() if not l.startswith("import time:")]
        return {"error": (err or ["?"])[-1]}
    top, everything = [], []
    for line in p.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        _self_us, cum_us, raw = line[len("import time:"):].split("|")
        if not cum_us.strip().isdigit():
            continue  # the header line
        entry = (raw.strip(), int(cum_us))
        everything.append(entry)
        if len(raw) - len(raw.lstrip()) == 1:  # nesting is shown as two more spaces
            top.append(entry)
    total = sum(us for _, us in top)
    starts = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True)
        starts.append((time.perf_counter() - t0) * 1000)
    heavy = sorted(top, key=lambda e: -e[1])[:6]
    watch = sorted({n.split(".")[0] for n, _ in everything} &
                   {"typer", "rich", "click", "jsonschema", "pyroute2", "subprocess",
                    "asyncio", "ctypes", "pyseccomp"})
    return {"total_ms": round(total / 1000, 2), "heaviest": [[n, round(us / 1000, 2)]
                                                           for n, us in heavy],
            "interpreter_ms": round(statistics.median(starts), 2), "heavy_modules": watch,
            # pip install -e puts an import hook in site that costs every start ~15 ms.
            "editable_install": any(n.startswith("__editable__") for n, _ in everything)}


def python_of(binary: str) -> str:
    """The interpreter a console script runs with (its #! line)."""
    try:
        with open(binary, "rb") as f:
            first = f.readline().decode().strip()
    except OSError:
        return sys.executable
    return first[2:].split()[0] if first.startswith("#!") and "python" in first \
        else sys.executable


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=30, help="rounds per operation")
    ap.add_argument("--runtimes", default="pyrunc,runc,crun",
                    help="comma-separated names or name=PATH")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("runtime_bench: run as root", file=sys.stderr)
        return 1
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    top = tempfile.mkdtemp(prefix="pyrunc-bench-")
    result = {"n": args.runs, "runtimes": {}, "ratios": {}}
    runtimes = []
    try:
        bundle = make_bundle(top)
        for spec in args.runtimes.split(","):
            name, _, path = spec.partition("=")
            binary = path or shutil.which(name)
            if not binary and name == "pyrunc":  # run from the project's venv, not installed
                binary = shutil.which(name, path=os.path.dirname(sys.executable))
            if not binary:
                result["runtimes"][name] = {"refused": f"{name} not found on PATH"}
                continue
            rt = Runtime(name, binary, top, bundle)
            result["runtimes"][name] = {"binary": binary, "version": rt.version()}
            try:
                rt.run_once()  # warm-up, and the check that it runs here at all
                rt.samples["run"].clear()
                rt.state_setup()
            except Refused as e:
                rt.refused = str(e)
                result["runtimes"][name]["refused"] = rt.refused
                rt.cleanup()
                continue
            runtimes.append(rt)

        for op in ("run", "lifecycle", "state"):
            for _ in range(args.runs):
                for rt in runtimes:  # alternating: drift on the machine hits all alike
                    if rt.refused:
                        continue
                    try:
                        getattr(rt, f"{op}_once")()
                    except Refused as e:
                        rt.refused = f"failed during {op}: {e}"
                        result["runtimes"][rt.name]["refused"] = rt.refused
        for rt in runtimes:
            result["runtimes"][rt.name]["ops"] = {op: stats(s) for op, s in rt.samples.items()}
        by = {rt.name: rt for rt in runtimes if not rt.refused}
        if "pyrunc" in by and "runc" in by:
            for op in RATIO_OPS:
                a = statistics.median(by["pyrunc"].samples[op])
                b = statistics.median(by["runc"].samples[op])
                result["ratios"][op] = round(a / b, 2)
        if "pyrunc" in result["runtimes"] and result["runtimes"]["pyrunc"].get("binary"):
            result["importtime"] = import_times(python_of(result["runtimes"]["pyrunc"]["binary"]))
    finally:
        for rt in runtimes:
            rt.cleanup()
        cleanup(top)

    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
    return 0


def cleanup(top: str) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", top], check=False)
    with open("/proc/self/mountinfo") as f:
        left = [l.split()[4] for l in f if top in l]
    if left:
        print(f"runtime_bench: mounts left under {top}: {left}", file=sys.stderr)


def print_table(r: dict) -> None:
    names = list(r["runtimes"])
    print(f"runtime bench: busybox /bin/true, {r['n']} rounds, runtimes alternating; "
          "median (p90) in ms")
    print(f"{'':12}" + "".join(f"{n:>20}" for n in names))
    for op in OPS:
        cells = []
        for n in names:
            s = (r["runtimes"][n].get("ops") or {}).get(op)
            cells.append(f"{s['median_ms']:.1f} ({s['p90_ms']:.1f})" if s else "-")
        print(f"{op:12}" + "".join(f"{c:>20}" for c in cells))
    for n in names:
        info = r["runtimes"][n]
        line = f"{n}: {info.get('version', '')}"
        if info.get("refused"):
            line += f" -- refused: {info['refused']}"
        print(line)
    if r["ratios"]:
        print("pyrunc/runc median ratio: " +
              ", ".join(f"{op} {x:.2f}" for op, x in r["ratios"].items()))
    it = r.get("importtime")
    if it:
        if "error" in it:
            print(f"pyrunc import time: not measurable: {it['error']}")
        else:
            print(f"pyrunc import time (import pyrunc.__main__): {it['total_ms']:.1f} ms; "
                  f"bare interpreter start {it['interpreter_ms']:.1f} ms; heaviest: " +
                  ", ".join(f"{n} {ms:.1f}" for n, ms in it["heaviest"]))
            if it["editable_install"]:
                print("  note: pyrunc is an editable install (pip install -e); its import hook "
                      "in site slows every start. Measure a regular install (.ci/setup).")
            if it["heavy_modules"]:
                print("  modules worth watching on the start path: " +
                      ", ".join(it["heavy_modules"]))


if __name__ == "__main__":
    sys.exit(main())
