#!/usr/bin/env python3
"""Start-up speed of pyrunc against runc and crun, measured in the same run.

    python3 bench/runtime_bench.py [-n 30] [--runtimes pyrunc,floor,runc,crun]
                                   [--engines podman,ctr] [--json]

On one busybox bundle running /bin/true, alternating the runtimes on every round:
  run        `R run ID` in the foreground (create + start + wait + delete in one call)
  lifecycle  `R create`, `R start`, wait for the container's exit, `R delete`: four steps,
             each also reported on its own
  state      `R state ID` of a created container
Through the engines (where installed), alternating the runtimes again:
  podman     `podman run --rm --rootfs ... /bin/true` (conmon calls the runtime)
  ctr        `ctr run --rm --rootfs ...` against a private containerd (its shim calls it)
  Each engine run starts from an idle engine (ENGINE_SETTLE seconds after the last one):
  back to back, `ctr run --rm` took ~115 or ~165 ms at random (a phase before the shim
  calls the runtime, the same with any runtime), so the median of each runtime fell on
  either mode and the ratio swung from 0.7x to 1.4x; after a pause every run takes the
  slower path, as a single `ctr run` by hand does.
`floor` is bench/floor_runtime.py run by pyrunc's interpreter: a straight-line Python program
doing the same kernel work for this bundle, so that pyrunc - floor (pyrunc's own cost) and
floor - runc (what a CPython process costs) are printed beside the ratios.
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


def bench_config() -> dict:
    """`runc spec`'s default config (ocispec.defaults, the project's one copy), at a
    version every runtime here accepts, not a terminal, running /bin/true."""
    try:
        from ocispec.defaults import runc_spec
    except ImportError:  # run from a checkout with a python that lacks the project
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "oci-spec"))
        from ocispec.defaults import runc_spec
    cfg = runc_spec()
    cfg["ociVersion"] = "1.0.2"  # crun 1.8 refuses 1.2.0 before anything else
    cfg["process"].update(terminal=False, args=["/bin/true"])
    cfg["hostname"] = "bench"
    return cfg


ENGINE_SETTLE = 0.3
OPS = ("run", "lifecycle", "create", "start", "wait", "delete", "state", "podman", "ctr")
RATIO_OPS = ("run", "lifecycle", "state", "podman", "ctr")
FLOOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor_runtime.py")
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
        json.dump(bench_config(), f, indent=1)
    return bundle


def runtime_env() -> dict:
    """The environment the runtimes run in. Without PYTHONDONTWRITEBYTECODE: a Python runtime
    run from a checkout would otherwise compile every module on every start (tens of ms) and
    the bench would measure the compiler; the warm-up run writes the .pyc files."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class Runtime:
    def __init__(self, name: str, binary: str, top: str, bundle: str, argv=None):
        self.name, self.binary, self.bundle = name, binary, bundle
        self.argv = argv or [binary]  # the floor is `python -S floor_runtime.py`
        self.root = os.path.join(top, f"root-{name}")
        os.mkdir(self.root)
        self.samples = {op: [] for op in OPS}
        self.refused = None
        self.engine_refused: dict = {}
        self.seq = 0

    def cmd(self, *args, check=True) -> float:
        """Run `binary --root ROOT args...`; its wall time in ms."""
        # A file, not a pipe: a created container inherits the runtime's stdio and would
        # hold a pipe open, and subprocess would wait for its EOF.
        with tempfile.TemporaryFile() as errf:
            t0 = time.perf_counter()
            p = subprocess.run([*self.argv, "--root", self.root, *args], env=ENV,
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
        p = subprocess.run([*self.argv, "--version"], capture_output=True, text=True)
        return (p.stdout.splitlines() or ["?"])[0]


ENV = runtime_env()


class Engines:
    """podman and a private containerd, each running /bin/true in a copy of the bundle's
    rootfs with the runtime given; `once(engine, runtime)` is one timed run in ms."""

    def __init__(self, top: str, bundle: str, names: list):
        self.top, self.names, self.refused = top, [], {}
        self.rootfs = os.path.join(top, "engine-rootfs")
        shutil.copytree(os.path.join(bundle, "rootfs"), self.rootfs, symlinks=True)
        self.containerd = None
        self.seq = 0
        for name in names:
            if not shutil.which(name):
                self.refused[name] = f"{name} not found on PATH"
            elif name == "ctr" and not shutil.which("containerd"):
                self.refused[name] = "containerd not found on PATH"
            else:
                self.names.append(name)
        if "ctr" in self.names:
            self._start_containerd()

    def _start_containerd(self) -> None:
        d = self.ctd = tempfile.mkdtemp(prefix="ctd-", dir=self.top)  # short socket paths
        with open(os.path.join(d, "config.toml"), "w") as f:
            f.write(f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{d}/c.sock"\n[ttrpc]\n  address = "{d}/t.sock"\n')
        self.log = open(os.path.join(d, "containerd.log"), "w")
        self.containerd = subprocess.Popen(["containerd", "--config", f"{d}/config.toml"],
                                           stdout=self.log, stderr=self.log,
                                           stdin=subprocess.DEVNULL, env=ENV)
        deadline = time.monotonic() + 30
        while not os.path.exists(f"{d}/c.sock") and time.monotonic() < deadline:
            time.sleep(0.05)
        if not os.path.exists(f"{d}/c.sock"):
            self.names.remove("ctr")
            self.refused["ctr"] = "containerd did not start"

    def argv(self, engine: str, rt: "Runtime", cid: str) -> list:
        if engine == "podman":
            # podman refuses a runroot path over 50 characters
            return ["podman", "--root", os.path.join(self.top, "pm-storage"),
                    "--runroot", self.runroot(), "--storage-driver", "vfs",
                    "--cgroup-manager", "cgroupfs", "--runtime", rt.binary, "run", "--rm",
                    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                    "--network", "none", "--rootfs", self.rootfs, "/bin/true"]
        return ["ctr", "--address", f"{self.ctd}/c.sock", "run", "--rm", "--runc-binary",
                rt.binary, "--rootfs", self.rootfs, cid, "/bin/true"]

    def runroot(self) -> str:
        if not hasattr(self, "_runroot"):
            self._runroot = tempfile.mkdtemp(prefix="pm-")
        return self._runroot

    def once(self, engine: str, rt: "Runtime") -> float:
        self.seq += 1
        cid = f"bench-{engine}-{rt.name}-{os.getpid()}-{self.seq}"
        time.sleep(ENGINE_SETTLE)  # the last run's shim and cleanup are done: see the docstring
        with tempfile.TemporaryFile() as errf:
            t0 = time.perf_counter()
            p = subprocess.run(self.argv(engine, rt, cid), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=errf, env=ENV, timeout=120)
            dt = (time.perf_counter() - t0) * 1000
            errf.seek(0)
            err = errf.read().decode(errors="replace").strip().splitlines()
        if p.returncode != 0:
            raise Refused(f"`{engine} run` with {rt.name}: exit status {p.returncode}"
                          + (f": {err[-1]}" if err else ""))
        return dt

    def close(self) -> None:
        if "podman" in self.names:
            subprocess.run(["podman", "--root", os.path.join(self.top, "pm-storage"),
                            "--runroot", self.runroot(), "--storage-driver", "vfs",
                            "system", "reset", "-f"], capture_output=True, timeout=120)
        if hasattr(self, "_runroot"):
            subprocess.run(["rm", "-rf", "--one-file-system", self._runroot], check=False)
        if self.containerd is not None:
            self.containerd.terminate()  # our own child, by its Popen
            try:
                self.containerd.wait(20)
            except subprocess.TimeoutExpired:
                self.containerd.kill()
                self.containerd.wait()
            self.log.close()


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


def _importtime(argv: list) -> tuple[list, list] | str:
    """Run argv under -X importtime: ([(top-level module, cumulative us)], [all]) or the
    last line of its error output."""
    # stderr to a file: a container made by `create` inherits it (a pipe would hang us).
    with tempfile.TemporaryFile("w+") as errf:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=errf)
        errf.seek(0)
        stderr = errf.read()
    if p.returncode != 0:
        err = [l for l in stderr.splitlines() if not l.startswith("import time:")]
        return (err or ["?"])[-1]
    top, everything = [], []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        _self_us, cum_us, raw = line[len("import time:"):].split("|")
        if not cum_us.strip().isdigit():
            continue  # the header line
        entry = (raw.strip(), int(cum_us))
        everything.append(entry)
        if len(raw) - len(raw.lstrip()) == 1:  # nesting is shown as two more spaces
            top.append(entry)
    return top, everything


def _summary(top: list) -> dict:
    heavy = sorted(top, key=lambda e: -e[1])[:6]
    return {"total_ms": round(sum(us for _, us in top) / 1000, 2),
            "heaviest": [[n, round(us / 1000, 2)] for n, us in heavy]}


def import_times(binary: str, rt=None) -> dict:
    """Imports of pyrunc's entry module (`pyrunc --version`) and, with a live pyrunc
    Runtime, of its real `create` and `state` commands (-X importtime, run the way the
    launcher's #! line runs them); the bare interpreter's start-up for scale; and which
    notoriously heavy modules appear anywhere on those paths."""
    python = shebang_of(binary)
    got = _importtime([*python, "-X", "importtime", binary, "--version"])
    if isinstance(got, str):
        return {"error": got}
    out = _summary(got[0])
    seen = list(got[1])
    out["commands"] = {}
    if rt is not None:
        cid = rt.new_id()
        runs = {"create": [rt.binary, "--root", rt.root, "create", "--bundle", rt.bundle, cid],
                "state": [rt.binary, "--root", rt.root, "state", rt.state_id]}
        for cmd, argv in runs.items():
            res = _importtime([*python, "-X", "importtime", *argv])
            out["commands"][cmd] = {"error": res} if isinstance(res, str) else _summary(res[0])
            if not isinstance(res, str):
                seen += res[1]
        rt.cmd("delete", "--force", cid, check=False)
    starts = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([*python, "-c", "pass"], check=True)
        starts.append((time.perf_counter() - t0) * 1000)
    out["interpreter_ms"] = round(statistics.median(starts), 2)
    out["heavy_modules"] = sorted({n.split(".")[0] for n, _ in seen} &
                                  {"typer", "rich", "click", "jsonschema", "pyroute2",
                                   "subprocess", "asyncio", "ctypes", "pyseccomp"})
    # pip install -e puts an import hook in site that costs every start ~15 ms.
    out["editable_install"] = any(n.startswith("__editable__") for n, _ in seen)
    return out


def python_of(binary: str) -> str:
    """The interpreter a console script runs with (its #! line)."""
    return shebang_of(binary)[0]


def shebang_of(binary: str) -> list:
    """[interpreter, its flags...] of a console script's #! line (pyrunc's launcher runs
    `python3.11 -S` and puts the venv's site-packages on sys.path itself)."""
    try:
        with open(binary, "rb") as f:
            first = f.readline().decode().strip()
    except OSError:
        return [sys.executable]
    return first[2:].split() if first.startswith("#!") and "python" in first \
        else [sys.executable]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=30, help="rounds per operation")
    ap.add_argument("--runtimes", default="pyrunc,floor,runc,crun",
                    help="comma-separated names or name=PATH (floor: bench/floor_runtime.py)")
    ap.add_argument("--engines", default="podman,ctr",
                    help="engines to run /bin/true through with each runtime ('' for none)")
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
            if name == "floor":
                py = python_of(shutil.which("pyrunc") or "")
                rt = Runtime(name, FLOOR, top, bundle, argv=[py, "-S", FLOOR])
                result["runtimes"][name] = {"binary": FLOOR, "version": rt.version()}
                runtimes.append(rt)
                try:
                    rt.run_once()
                    rt.samples["run"].clear()
                    rt.state_setup()
                except Refused as e:
                    rt.refused = result["runtimes"][name]["refused"] = str(e)
                    rt.cleanup()
                continue
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
        engines = Engines(top, bundle, [e for e in args.engines.split(",") if e])
        result["engines"] = {"refused": engines.refused}
        try:
            for engine in list(engines.names):
                for _ in range(args.runs):
                    for rt in runtimes:
                        if rt.name == "floor" or rt.refused or engine in rt.engine_refused:
                            continue  # the floor speaks no more CLI than this bench uses
                        try:
                            rt.samples[engine].append(engines.once(engine, rt))
                        except (Refused, subprocess.TimeoutExpired) as e:
                            rt.engine_refused[engine] = str(e)
        finally:
            engines.close()
        for rt in runtimes:
            result["runtimes"][rt.name]["ops"] = {op: stats(s) for op, s in rt.samples.items()}
            if rt.engine_refused:
                result["runtimes"][rt.name]["engine_refused"] = rt.engine_refused
        by = {rt.name: rt for rt in runtimes if not rt.refused}

        def med(name, op):
            x = by[name].samples[op] if name in by else []
            return statistics.median(x) if x else None

        for op in RATIO_OPS:
            py, fl, rc = med("pyrunc", op), med("floor", op), med("runc", op)
            if py is not None and rc is not None:
                result["ratios"][op] = round(py / rc, 2)
            if fl is not None:
                result.setdefault("floor", {})[op] = {
                    "pyrunc_minus_floor_ms": None if py is None else round(py - fl, 1),
                    "floor_minus_runc_ms": None if rc is None else round(fl - rc, 1)}
        if "pyrunc" in result["runtimes"] and result["runtimes"]["pyrunc"].get("binary"):
            result["importtime"] = import_times(result["runtimes"]["pyrunc"]["binary"],
                                                by.get("pyrunc"))
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
        for engine, why in (info.get("engine_refused") or {}).items():
            print(f"  {engine}: {why}")
    for engine, why in (r.get("engines") or {}).get("refused", {}).items():
        print(f"{engine}: not run: {why}")
    if r["ratios"]:
        print("pyrunc/runc median ratio: " +
              ", ".join(f"{op} {x:.2f}" for op, x in r["ratios"].items()))
    if r.get("floor"):
        print("against the floor (ms): " + ", ".join(
            f"{op} pyrunc-floor {d['pyrunc_minus_floor_ms']}, floor-runc {d['floor_minus_runc_ms']}"
            for op, d in r["floor"].items()))
    it = r.get("importtime")
    if it:
        if "error" in it:
            print(f"pyrunc import time: not measurable: {it['error']}")
        else:
            print(f"pyrunc import time (pyrunc --version): {it['total_ms']:.1f} ms; "
                  f"bare interpreter start {it['interpreter_ms']:.1f} ms; heaviest: " +
                  ", ".join(f"{n} {ms:.1f}" for n, ms in it["heaviest"]))
            for cmd, c in it["commands"].items():
                if "error" in c:
                    print(f"  `pyrunc {cmd}`: not measurable: {c['error']}")
                else:
                    print(f"  `pyrunc {cmd}` imports {c['total_ms']:.1f} ms; heaviest: " +
                          ", ".join(f"{n} {ms:.1f}" for n, ms in c["heaviest"]))
            if it["editable_install"]:
                print("  note: pyrunc is an editable install (pip install -e); its import hook "
                      "in site slows every start. Measure a regular install (.ci/setup).")
            if it["heavy_modules"]:
                print("  modules worth watching on the start path: " +
                      ", ".join(it["heavy_modules"]))


if __name__ == "__main__":
    sys.exit(main())
