"""Kubernetes' path to a runtime: containerd's CRI plugin with a runtime handler `pyrunc`.

The test starts its own containerd (CRI plugin on, everything it writes under one temp dir:
root, state, sockets, CNI conf dir, runtime roots: containerd_daemon.py) with two runtime handlers of type
io.containerd.runc.v2: `pyrunc` (BinaryName = the pyrunc under test) and `runc` (Debian's
runc, the reference). A kubelet's calls are made by a CRI client the test owns
(tests/cri: gRPC with a subset of k8s.io/cri-api runtime/v1). There is no network, so the
pod's sandbox ("pause") image and the container image are one tiny image that pybuild
builds here (FROM scratch + a static busybox) and `ctr images import` puts into
containerd's k8s.io namespace. Pods use the host's network (no CNI).

Each walk: RunPodSandbox, CreateContainer, StartContainer, ExecSync, StopContainer,
StopPodSandbox, RemovePodSandbox, timed step by step. A shared-PID pod
(namespace_options.pid = POD) is where the shim kills a container's leftovers with
`kill --all` when its init exits. test_cri_timings prints both handlers' medians
(`-rP` or `-s` shows them; CRI_TIMINGS=FILE also writes every sample as JSON, CRI_LOG=FILE
keeps containerd's debug log).
"""

import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid

import pytest
from conftest import BUSYBOX, mounts_under, safe_rmtree
from containerd_daemon import Containerd
from cri.client import CRI, generate

pytestmark = pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("ctr") is None,
                                reason="containerd is not installed")

IMAGE = "localhost/pyrunc-cri/busybox:1"
# The sandbox's process: like Kubernetes' pause, it waits for a signal and reaps every child
# (in a shared-PID pod, orphans of the containers are reparented to it).
PAUSE = ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM INT; while :; do /bin/busybox sleep 3600 & wait; done"]
HANDLERS = ["pyrunc", "runc"]
STEPS = ["RunPodSandbox", "CreateContainer", "StartContainer", "ExecSync", "StopContainer",
         "StopPodSandbox", "RemovePodSandbox"]
SHIM_SOCKETS = "/run/containerd/s"
KINDS = {False: "pod", True: "shared-PID pod"}
TIMING_RUNS = 3  # more walks of each kind per handler in test_cri_timings
# A step may cost more than runc's by pyrunc's own start-up on each runtime command the
# shim makes in it (up to five), but never by a wait: the shim's and containerd's waits
# and retries are 2 s and more, a missed stop signal 10 s.
STEP_SLACK = 1.0

# Every walk's step times, per (handler, kind): test_cri_timings reports them.
SAMPLES: dict[tuple, list[dict]] = {(h, k): [] for h in HANDLERS for k in KINDS.values()}


def _has_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)  # CAP_SYS_RESOURCE
    return False


def _containerd_config(d: str, pyrunc: str, runc: str | None) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    # The CRI plugin gives a sandbox OOM score -998; lowering a score needs CAP_SYS_RESOURCE,
    # which some hosts (this CI's among them) withhold from root, and then runc fails to
    # create the sandbox just as pyrunc does. There the plugin caps scores at its own, as
    # on rootless nodes.
    restrict_oom = "false" if _has_sys_resource() else "true"
    handlers = ""
    for name, binary in (("pyrunc", pyrunc), ("runc", runc)):
        if binary:
            handlers += f'''
[{cri}.containerd.runtimes.{name}]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.{name}.options]
  BinaryName = "{binary}"
  Root = "{d}/rt-{name}"
'''
    return f'''version = 2
root = "{d}/root"
state = "{d}/state"
temp = "{d}/tmp"
[debug]
  level = "{'debug' if os.environ.get('CRI_LOG') else 'info'}"
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/t.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[{cri}]
  sandbox_image = "{IMAGE}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_selinux = false
  restrict_oom_score_adj = {restrict_oom}
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{d}/cni"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "pyrunc"
{handlers}'''


def _build_image(d: str) -> str:
    """The one image of the test, as a docker-archive: busybox; its CMD is the pause process."""
    ctx = os.path.join(d, "ctx")
    os.makedirs(ctx)
    shutil.copy2(BUSYBOX, os.path.join(ctx, "busybox"))
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(f"FROM scratch\nCOPY busybox /bin/busybox\nCMD {json.dumps(PAUSE)}\n")
    archive = os.path.join(d, "image.tar")
    pybuild = os.environ.get("PYBUILD") or shutil.which("pybuild") or "pybuild"
    p = subprocess.run([pybuild, "--root", os.path.join(d, "store"), "build", "-q", "-t", IMAGE,
                        "-o", f"docker-archive:{archive}", ctx],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"pybuild build: {p.stderr}"
    return archive


def _processes_with(marker: str) -> list[int]:
    """Live processes whose command line holds marker (a zombie's is empty)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            pass
    return found


class Daemon:
    def __init__(self, d, cri, pb, handlers, cgroup_parent, log):
        self.d, self.cri, self.pb, self.log = d, cri, pb, log
        self.handlers = handlers
        self.cgroup_parent = cgroup_parent
        self.pods: list[str] = []  # created and not yet removed: torn down if a test fails
        self.all_pods: list[str] = []  # every pod made: their shims' sockets must be gone

    def walk(self, handler: str, shared_pid: bool = False) -> dict:
        """One pod with one container through a kubelet's calls; returns the step times and
        what the container showed."""
        cri, pb = self.cri, self.pb
        tag = uuid.uuid4().hex[:8]
        logs = os.path.join(self.d, "logs", tag)
        os.makedirs(logs)
        log_start = os.path.getsize(self.log)
        cfg = cri.sandbox_config(f"walk-{tag}", tag, logs, self.cgroup_parent,
                                 pid="POD" if shared_pid else "CONTAINER")
        t: dict = {}

        def step(name, fn, *a, **kw):
            t0 = time.monotonic()
            rv = fn(*a, **kw)
            t[name] = time.monotonic() - t0
            return rv

        pod = step("RunPodSandbox", cri.run_pod_sandbox, cfg, handler)
        self.pods.append(pod)
        self.all_pods.append(pod)
        st = cri.pod_sandbox_status(pod)
        assert st.state == pb.SANDBOX_READY and st.runtime_handler == handler, st
        marker = str(3_000_000 + int(tag, 16) % 1_000_000)  # a number only this walk sleeps
        if shared_pid:
            # A child that outlives the container's init: in a shared PID namespace the
            # init's death does not take it along; the shim's `kill --all` must.
            script = f"/bin/busybox sleep {marker} & echo started; exec /bin/busybox sleep inf"
        else:
            script = "trap 'exit 0' TERM; echo started; while :; do /bin/busybox sleep 0.1; done"
        ctr = step("CreateContainer", cri.create_container, pod, cfg, "c", IMAGE,
                   ["/bin/busybox", "sh", "-c", script], "c.log")
        assert cri.container_status(ctr).state == pb.CONTAINER_CREATED
        step("StartContainer", cri.start_container, ctr)
        assert cri.container_status(ctr).state == pb.CONTAINER_RUNNING
        r = step("ExecSync", cri.exec_sync, ctr,
                 ["/bin/busybox", "sh", "-c", "cat /proc/1/cmdline; echo err >&2; exit 3"])
        out = {"exec": r}
        if shared_pid:
            deadline = time.monotonic() + 10
            while not _processes_with(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            out["child_before"] = _processes_with(marker)
        step("StopContainer", cri.stop_container, ctr, 10)
        out["status"] = cri.container_status(ctr)
        if shared_pid:
            deadline = time.monotonic() + 5
            while _processes_with(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            out["child_after"] = _processes_with(marker)
        with open(os.path.join(logs, "c.log")) as f:
            out["log"] = f.read()
        step("StopPodSandbox", cri.stop_pod_sandbox, pod)
        step("RemovePodSandbox", cri.remove_pod_sandbox, pod)
        self.pods.remove(pod)
        out["left"] = self.runtime_ids(handler)
        # What went wrong between containerd, the shim and the runtime without failing a
        # call (e.g. the shim's `kill --all` of a shared-PID container's leftovers).
        with open(self.log) as f:
            f.seek(log_start)
            out["errors"] = [line for line in f if "level=error" in line]
        t["total"] = sum(t.values())
        SAMPLES[handler, KINDS[shared_pid]].append(t)
        out["times"] = t
        return out

    def runtime_ids(self, handler: str) -> list[str]:
        """Containers the runtime still knows in containerd's k8s.io root (none after a pod's removal)."""
        root = os.path.join(self.d, f"rt-{handler}", "k8s.io")
        return sorted(os.listdir(root)) if os.path.isdir(root) else []


def _cri_plugin_status(ctr) -> str | None:
    """'ok', 'error', 'skip' or None (not built in), from `ctr plugins ls`."""
    p = ctr("plugins", "ls", check=False)
    for line in p.stdout.splitlines():
        f = line.split()
        if len(f) >= 4 and f[0] == "io.containerd.grpc.v1" and f[1] == "cri":
            return f[-1]
    return None


@pytest.fixture(scope="module")
def cri(pyrunc_bin):
    grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install '.[test]')")
    pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is not installed (pip install '.[test]')")
    del grpc
    d = tempfile.mkdtemp(prefix="cri-")  # unix socket paths must stay short
    os.makedirs(os.path.join(d, "cni"))
    os.makedirs(os.path.join(d, "tmp"))
    os.makedirs(os.path.join(d, "gen"))
    runc = os.environ.get("CRI_RUNC") or shutil.which("runc")
    handlers = ["pyrunc"] + (["runc"] if runc else [])
    cgroup_parent = f"/pyrunc-cri-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    daemon = client = dm = None
    # containerd 1.6 puts shim sockets in /run/containerd/s whatever its state dir is.
    made_dirs = [p for p in ("/run/containerd", SHIM_SOCKETS) if not os.path.exists(p)]
    try:
        archive = _build_image(d)
        daemon = Containerd(d, _containerd_config(d, pyrunc_bin, runc))
        ctr = daemon.ctr
        status = _cri_plugin_status(ctr)
        if status != "ok":
            pytest.skip("containerd " + ("lists no CRI plugin" if status is None else
                                         f"has its CRI plugin in state {status!r}")
                        + " on this host (see `ctr plugins ls`)")
        ctr("-n", "k8s.io", "images", "import", "--snapshotter", "overlayfs", archive)
        pb, pb_grpc = generate(os.path.join(d, "gen"))
        client = CRI(daemon.sock, pb, pb_grpc)
        v = client.version()
        assert v.runtime_api_version == "v1", v
        # The CRI plugin learns of an imported image from containerd's events.
        deadline = time.monotonic() + 10
        while not client.image_status(IMAGE).image.id and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.image_status(IMAGE).image.id, f"the CRI plugin does not see {IMAGE}"
        dm = Daemon(d, client, pb, handlers, cgroup_parent, daemon.log_path)
        yield dm
        for pod in list(dm.pods):
            for call in (client.stop_pod_sandbox, client.remove_pod_sandbox):
                try:
                    call(pod)
                except Exception:
                    pass
    finally:
        if client:
            client.close()
        if daemon:
            daemon.stop()
            if os.environ.get("CRI_LOG"):  # keep containerd's log (debug level) for a look
                shutil.copy(daemon.log_path, os.environ["CRI_LOG"])
        leftover = _reap(d, pyrunc_bin, runc, cgroup_parent, dm.all_pods if dm else [])
        safe_rmtree(d)
        for p in reversed(made_dirs):
            try:
                os.rmdir(p)  # only if empty: another containerd may have come to use it
            except OSError:
                pass
    assert not leftover, f"the CRI walk left behind: {leftover}"


def _reap(d, pyrunc_bin, runc, cgroup_parent, pods) -> list[str]:
    """After containerd stopped: end what a failed walk left (by pid or id), and say what it was."""
    left = []
    for name, binary in (("pyrunc", pyrunc_bin), ("runc", runc)):
        root = os.path.join(d, f"rt-{name}", "k8s.io")
        for cid in (os.listdir(root) if binary and os.path.isdir(root) else []):
            left.append(f"{name} container {cid}")
            subprocess.run([binary, "--root", root, "delete", "--force", cid], capture_output=True, timeout=30)
    tasks = os.path.join(d, "state", "io.containerd.runtime.v2.task", "k8s.io")
    for tid in (os.listdir(tasks) if os.path.isdir(tasks) else []):
        left.append(f"shim of {tid}")
        try:
            with open(os.path.join(tasks, tid, "shim.pid")) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    left += [f"mount {m}" for m in mounts_under(d)]
    # A shim's socket is named by sha256(containerd's address/namespace/pod id); the shim
    # removes it when it exits.
    for pod in pods:
        sock = f"{SHIM_SOCKETS}/" + hashlib.sha256(f"{d}/c.sock/k8s.io/{pod}".encode()).hexdigest()
        if os.path.exists(sock):
            left.append(f"shim socket {sock}")
            os.unlink(sock)
    # The pod cgroup is the kubelet's to make and remove: the runtimes remove their own.
    from cgroup_helpers import leftovers
    name = cgroup_parent.strip("/")
    for path in sorted(leftovers(name), key=len, reverse=True):
        for sub, _, _ in sorted(os.walk(path), key=lambda w: len(w[0]), reverse=True):
            if sub != path:
                left.append(f"cgroup {sub}")
            try:
                os.rmdir(sub)
            except OSError as e:
                left.append(f"cgroup {sub}: {e}")
    return left


def _log_lines(log: str) -> list[str]:
    """The message of each line of a CRI container log ('TIME STREAM TAG MESSAGE')."""
    return [line.split(" ", 3)[3] for line in log.splitlines() if line.count(" ") >= 3]


@pytest.mark.parametrize("handler", HANDLERS)
def test_cri_pod(cri, handler):
    if handler not in cri.handlers:
        pytest.skip("runc is not installed")
    out = cri.walk(handler)
    r = out["exec"]
    # ExecSync ran in the container: its PID 1 is the container's own shell.
    assert r.exit_code == 3 and r.stderr == b"err\n", r
    assert r.stdout.startswith(b"/bin/busybox\0sh\0-c\0trap "), r.stdout
    assert _log_lines(out["log"]) == ["started"], out["log"]
    st = out["status"]
    assert st.state == cri.pb.CONTAINER_EXITED and st.exit_code == 0, st
    assert out["left"] == [], f"{handler} still holds {out['left']} after RemovePodSandbox"
    assert out["errors"] == [], "containerd logged errors:\n" + "".join(out["errors"])


@pytest.mark.parametrize("handler", HANDLERS)
def test_cri_shared_pid_pod(cri, handler):
    if handler not in cri.handlers:
        pytest.skip("runc is not installed")
    out = cri.walk(handler, shared_pid=True)
    r = out["exec"]
    # One PID namespace for the pod: PID 1 is the sandbox's pause process.
    assert r.exit_code == 3 and r.stdout.split(b"\0")[:-1] == [a.encode() for a in PAUSE], r
    assert out["child_before"], "the container's background child never showed up"
    # The container's init died of StopContainer's SIGTERM; its child, in the pod's PID
    # namespace, is the shim's to end with `kill --all` on the init's exit (the runtime's
    # delete would end it too, late: a failed kill --all shows in containerd's log).
    st = out["status"]
    assert st.state == cri.pb.CONTAINER_EXITED and st.exit_code == 128 + signal.SIGTERM, st
    assert out["child_after"] == [], f"{handler}: kill --all left {out['child_after']} running"
    assert _log_lines(out["log"]) == ["started"], out["log"]
    assert out["left"] == [], f"{handler} still holds {out['left']} after RemovePodSandbox"
    assert out["errors"] == [], "containerd logged errors:\n" + "".join(out["errors"])


def test_cri_timings(cri):
    """pyrunc's walks take about what runc's do: medians per step over every walk here."""
    if "runc" not in cri.handlers:
        pytest.skip("runc is not installed: nothing to compare with")
    for _ in range(TIMING_RUNS):
        for shared in KINDS:
            for handler in HANDLERS:  # interleaved, so both see the same load
                cri.walk(handler, shared_pid=shared)
    report, slow = [], []
    for kind in KINDS.values():
        med = {h: {s: statistics.median(t[s] for t in SAMPLES[h, kind]) for s in STEPS + ["total"]}
               for h in HANDLERS}
        report += [f"CRI {kind} walk, ms, medians of {len(SAMPLES['pyrunc', kind])} (pyrunc) and "
                   f"{len(SAMPLES['runc', kind])} (runc) walks",
                   f"  {'step':<18}{'pyrunc':>8}{'runc':>8}{'ratio':>7}"]
        for s in STEPS + ["total"]:
            p, r = med["pyrunc"][s], med["runc"][s]
            report.append(f"  {s:<18}{p * 1000:>8.0f}{r * 1000:>8.0f}{p / r:>7.2f}")
            if s != "total" and p > r + STEP_SLACK:
                slow.append(f"{kind} {s}")
    print("\n" + "\n".join(report))
    if os.environ.get("CRI_TIMINGS"):
        with open(os.environ["CRI_TIMINGS"], "w") as f:
            json.dump({f"{h} {k}": v for (h, k), v in SAMPLES.items()}, f, indent=1)
    assert not slow, f"pyrunc waits where runc does not ({', '.join(slow)}):\n" + "\n".join(report)
