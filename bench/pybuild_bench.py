#!/usr/bin/env python3
"""pybuild vs BuildKit vs buildah (overlay) on the same Dockerfiles, in the same run.

    python3 bench/pybuild_bench.py [-n 3] [--only a,b,c,d,e] [--runtime pyrunc|runc]
                                   [--pybuild PATH | --pybuild LABEL=PATH ...]
                                   [--peers buildkit,buildah] [--json]

For each case: cold builds (nothing cached: a fresh pybuild store, a fresh buildah root, a
pruned BuildKit cache) and no-change rebuilds, every builder once per round, the order
rotating each round (the machine is shared: interleaving spreads the noise), medians over N
rounds, and each pybuild's ratio to each peer. Base images count as already pulled: they
are loaded into each builder before its timed cold build.

Peers (each probed; a missing one is skipped with the reason):
- BuildKit: Debian's docker.io dockerd, started privately for the run (its own containerd,
  data and exec roots and a unix socket in a temp dir, --iptables=false --bridge=none) and
  stopped after; builds with DOCKER_BUILDKIT=1 and `--network host` through docker.io's
  20.10 client (a newer client wants the buildx plugin for BuildKit).
- buildah: `bud --layers --storage-driver overlay --isolation chroot`, its own temp root.
  (vfs, buildah's slowest storage, is no headline.)
Several `--pybuild LABEL=PATH` put builds of pybuild side by side (an A/B in one run).
pybuild runs RUN with pyrunc, its default; `--runtime runc` gives it the peers' runtime, which
compares the builders alone (runc takes ~30 ms longer than pyrunc to run a RUN container
with moby's seccomp profile: it compiles the profile on every start).

(a) FROM scratch + COPY of busybox and files + metadata instructions
(b) two stages with ARGs, four RUNs (one making 1000 files), COPY --from
(c) 200 MB in about 10,000 files copied in, plus one RUN
(d) a RUN-heavy build on a ~60 MB base image (made by pybuild, loaded into every builder)
(e) a real Debian base (debootstrap --variant=minbase, cached in --cache-dir) with
    `apt-get update && apt-get install python3` in a RUN, WORKDIR, COPYs of small files, CMD;
    the container's apt uses the host's Debian sources.
Then the layer-write throughput of pybuild.image.layer.LayerWriter (MB/s of tar input) for
gzip and zstd on case (c)'s 200 MB tree beside the compressor alone, on one thread, on the
same tar bytes (the writer runs zstd on several threads where there are cores for them).
"""
import argparse
import glob
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BUSYBOX = "/bin/busybox"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or "/var/cache", "pybuild-bench")

DOCKERFILES = {
    "a": """\
FROM scratch
COPY busybox /bin/busybox
COPY files/ /usr/share/files/
ENV PATH=/bin GREETING=hello
LABEL org.example.bench=a
EXPOSE 8080
VOLUME /data
WORKDIR /srv
USER 1000:1000
STOPSIGNAL SIGTERM
CMD ["/bin/busybox", "sh"]
""",
    "b": """\
ARG COUNT=1000
FROM scratch AS build
ARG COUNT
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /out && cd /out && i=0; while [ $i -lt $COUNT ]; do echo $i > f$i; i=$((i+1)); done
RUN echo built > /out/marker
ARG FLAVOUR=plain
RUN echo $FLAVOUR > /out/flavour && ls /out | wc -l > /out/count
FROM scratch
COPY busybox /bin/busybox
COPY --from=build /out /out
CMD ["/bin/busybox", "ls", "/out"]
""",
    "c": """\
FROM scratch
COPY busybox /bin/busybox
COPY data/ /data/
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox du -s /data > /du.txt"]
""",
    "d": """\
FROM bench-base-d:latest
RUN echo one > /one
RUN mkdir -p /work && cd /work && for i in 1 2 3 4 5 6 7 8 9 10; do echo $i > $i; done
RUN cat /usr/share/big/* | wc -c > /bytes
RUN echo four && ls / > /ls
RUN rm -rf /usr/share/big/part0* && echo removed > /removed
ENV DONE=yes
RUN test -f /removed
""",
    # the seed's Dockerfile, on a Debian base
    "e": """\
FROM bench-debian:latest
RUN apt-get update && apt-get install -y --no-install-recommends python3 \\
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
COPY app.py .
ENV PYTHONUNBUFFERED=1
CMD ["python3", "app.py"]
""",
}
BASES = {"d": "bench-base-d:latest", "e": "bench-debian:latest"}


def _write_files(root: str, count: int, total: int, seed: int) -> None:
    rnd = random.Random(seed)
    size = max(1, total // count)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 9)))
             for _ in range(2000)]
    for i in range(count):
        d = os.path.join(root, f"d{i // 200:03d}")
        os.makedirs(d, exist_ok=True)
        if i % 2:  # half text-like (compressible), half random (not)
            buf = bytearray()
            while len(buf) < size:
                buf += rnd.choice(words) + b" "
            data = bytes(buf[:size])
        else:
            data = rnd.randbytes(size)
        with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
            f.write(data)


def _run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=kw.pop("env", CHILD_ENV), **kw)
    if p.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: exit status {p.returncode}: "
                         f"{(p.stderr or p.stdout)[-1500:].strip()}")
    return p


class BenchError(Exception):
    pass


# -- bases ------------------------------------------------------------------------------------

def debian_rootfs_tar(cache: str) -> str:
    """A minbase Debian rootfs tarball, made once by debootstrap and kept in `cache`.
    Its apt uses the host's Debian sources (and the host's apt proxy settings, if any)."""
    tar = os.path.join(cache, "debian-minbase.tar")
    if os.path.exists(tar):
        return tar
    if shutil.which("debootstrap") is None:
        raise BenchError("debootstrap not found (apt-get install debootstrap), "
                         f"or put a rootfs tarball at {tar}")
    os.makedirs(cache, exist_ok=True)
    suite, mirror = _host_debian_source()
    tmp = tempfile.mkdtemp(prefix="rootfs-", dir=cache)
    try:
        print(f"bench: debootstrap --variant=minbase {suite} {mirror} (once, into {cache})",
              file=sys.stderr)
        _run(["debootstrap", "--variant=minbase", suite, os.path.join(tmp, "r"), mirror])
        r = os.path.join(tmp, "r")
        for src in glob.glob("/etc/apt/apt.conf.d/*") + glob.glob("/etc/apt/auth.conf.d/*"):
            # proxy/auth settings the host's apt uses; not docker-clean & co. that dpkg owns
            if os.path.isfile(src) and "Acquire" in open(src, errors="replace").read():
                d = os.path.join(r, os.path.relpath(os.path.dirname(src), "/"))
                os.makedirs(d, exist_ok=True)
                shutil.copy2(src, d)
        shutil.rmtree(os.path.join(r, "var/cache/apt/archives"), ignore_errors=True)
        os.makedirs(os.path.join(r, "var/cache/apt/archives/partial"), exist_ok=True)
        _run(["tar", "-C", r, "--numeric-owner", "--xattrs", "-cf", tar + ".tmp", "."])
        os.rename(tar + ".tmp", tar)
    finally:
        _rm(tmp)
    return tar


def _host_debian_source() -> tuple[str, str]:
    """(suite, mirror) of the host's first Debian source: the container uses what the host's
    apt reaches, nothing else."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"]:
        try:
            text = open(path).read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in text.split("\n\n"):
                f = {}
                for line in stanza.splitlines():
                    k, _, v = line.partition(":")
                    f[k.strip()] = v.strip()
                if "debian" in f.get("URIs", "") and "security" not in f.get("URIs", ""):
                    return f["Suites"].split()[0], f["URIs"].split()[0]
        for line in text.splitlines():
            w = line.split()
            if len(w) >= 3 and w[0] == "deb" and "debian" in w[1] and "security" not in w[1]:
                return w[2], w[1]
    raise BenchError("no Debian apt source on this host for debootstrap")


def make_bases(cases, work: str, pybuild: str, cache: str) -> dict:
    """case -> docker-archive of its base image, made with pybuild; every builder loads it."""
    out = {}
    store = os.path.join(work, "base-store")
    for case in cases:
        if case not in BASES:
            continue
        archive = os.path.join(work, f"base-{case}.tar")
        if case == "d":
            bctx = os.path.join(work, "ctx-d-base")
            os.makedirs(bctx)
            shutil.copy2(BUSYBOX, os.path.join(bctx, "busybox"))
            _write_files(os.path.join(bctx, "big"), 600, 60 * 1024 * 1024, 4)
            with open(os.path.join(bctx, "Dockerfile"), "w") as f:
                f.write("FROM scratch\nCOPY busybox /bin/busybox\n"
                        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                        "COPY big/ /usr/share/big/\n")
            _run([pybuild, "--root", store, "build", "--progress", "quiet", "--runtime", RUNTIME,
                  "-t", BASES[case], bctx])
        else:
            _run([pybuild, "--root", store, "import", debian_rootfs_tar(cache), BASES[case]])
        _run([pybuild, "--root", store, "save", "-o", archive, BASES[case]])
        out[case] = archive
    return out


def make_case(case: str, work: str) -> str:
    ctx = os.path.join(work, f"ctx-{case}")
    os.makedirs(ctx)
    if case != "e":
        shutil.copy2(BUSYBOX, os.path.join(ctx, "busybox"))
    if case == "a":
        _write_files(os.path.join(ctx, "files"), 20, 200_000, 1)
    if case == "c":
        _write_files(os.path.join(ctx, "data"), 10_000, 200 * 1024 * 1024, 3)
    if case == "e":
        with open(os.path.join(ctx, "app.py"), "w") as f:
            f.write("import sys\n" + "# padding\n" * 90 + "print('hello from', sys.version)\n")
        with open(os.path.join(ctx, "requirements.txt"), "w") as f:
            f.write("# no third-party packages\n")
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(DOCKERFILES[case])
    return ctx


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def _rm(path: str) -> None:
    for m in sorted(_mounts_under(path), reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)


# An installed pybuild has compiled bytecode; a checkout run with PYTHONDONTWRITEBYTECODE=1
# would recompile every module on every run and measure the compiler instead.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _timed(cmd, env=None) -> float:
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env=env or CHILD_ENV)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return dt


# -- builders ---------------------------------------------------------------------------------

class Pybuild:
    def __init__(self, label, path, work):
        self.name, self.path, self.work = label, path, work

    def probe(self):
        if shutil.which(self.path) is None:
            return f"{self.path} not found"
        return None

    def version(self):
        return self.path

    def cold_prepare(self, case, base_archive):
        self.root = tempfile.mkdtemp(prefix=f"{self.name}-{case}-", dir=self.work)
        if base_archive:
            _run([self.path, "--root", self.root, "load", "-i", base_archive])

    def build(self, case, ctx):
        return _timed([self.path, "--root", self.root, "build", "--progress", "quiet",
                       "--runtime", RUNTIME, "-t", f"bench-{case}:latest", ctx])

    def cold_done(self, case):
        _rm(self.root)

    def close(self):
        pass


class Buildah:
    name = "buildah"

    def __init__(self, path, work):
        self.path, self.work = path, work

    def probe(self):
        if shutil.which(self.path) is None:
            return f"{self.path} not found on PATH"
        try:
            self.ver = _run([self.path, "--version"]).stdout.strip()
        except BenchError as e:
            return str(e)
        return None

    def version(self):
        return self.ver

    def _base(self):
        return [self.path, "--root", os.path.join(self.root, "r"), "--runroot",
                os.path.join(self.root, "rr"), "--storage-driver", "overlay"]

    def cold_prepare(self, case, base_archive):
        self.root = tempfile.mkdtemp(prefix=f"buildah-{case}-", dir=self.work)
        if base_archive:
            _run(self._base() + ["pull", "-q", f"docker-archive:{base_archive}"])

    def build(self, case, ctx):
        return _timed(self._base() + ["bud", "--isolation", "chroot", "--layers", "-q",
                                      "-t", f"bench-{case}:latest", "-f",
                                      os.path.join(ctx, "Dockerfile"), ctx])

    def cold_done(self, case):
        subprocess.run(self._base() + ["rm", "--all"], capture_output=True)
        subprocess.run(self._base() + ["rmi", "--all", "--force"], capture_output=True)
        _rm(self.root)  # overlay storage may keep mounts under its root: _rm unmounts them

    def close(self):
        pass


class BuildKit:
    """A private dockerd (and containerd) for the run; builds with DOCKER_BUILDKIT=1."""
    name = "buildkit"

    def __init__(self, dockerd, work):
        self.dockerd, self.work = dockerd, work
        self.procs = []
        self.loaded = set()

    def probe(self):
        dockerd = shutil.which(self.dockerd)
        if dockerd is None:
            return f"{self.dockerd} not found (apt-get install docker.io)"
        # docker.io's own client beside its dockerd: it runs BuildKit builds without buildx
        client = os.path.join(os.path.dirname(os.path.dirname(dockerd)), "bin", "docker")
        if not os.access(client, os.X_OK):
            client = shutil.which("docker")
        if client is None:
            return "no docker client found"
        containerd = shutil.which("containerd")
        if containerd is None:
            return "containerd not found"
        self.client = client
        self.dir = tempfile.mkdtemp(prefix="dockerd-", dir=self.work)
        sock = os.path.join(self.dir, "docker.sock")
        csock = os.path.join(self.dir, "containerd.sock")
        with open(os.path.join(self.dir, "containerd.toml"), "w") as f:
            f.write(f'version = 2\nroot = "{self.dir}/containerd-root"\n'
                    f'state = "{self.dir}/containerd-state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{csock}"\n')
        log = open(os.path.join(self.dir, "log"), "w")
        self.procs.append(subprocess.Popen(
            [containerd, "--config", os.path.join(self.dir, "containerd.toml")],
            stdout=log, stderr=log, start_new_session=True))
        self.procs.append(subprocess.Popen(
            [dockerd, "--host", f"unix://{sock}", "--containerd", csock,
             "--data-root", os.path.join(self.dir, "data"),
             "--exec-root", os.path.join(self.dir, "exec"),
             "--pidfile", os.path.join(self.dir, "docker.pid"),
             "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
             "--bridge=none", "--storage-driver", "overlay2"],
            stdout=log, stderr=log, start_new_session=True))
        self.env = {**CHILD_ENV, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "1"}
        deadline = time.monotonic() + 60
        while True:
            p = subprocess.run([client, "version", "--format", "{{.Server.Version}}"],
                               capture_output=True, text=True, env=self.env)
            if p.returncode == 0:
                self.ver = f"dockerd {p.stdout.strip()}"
                break
            if time.monotonic() > deadline or any(pr.poll() is not None for pr in self.procs):
                tail = open(os.path.join(self.dir, "log")).read()[-800:]
                self.close()
                return f"private dockerd did not start: {tail.strip()}"
            time.sleep(0.3)
        return None

    def version(self):
        return self.ver

    def _docker(self, *args):
        return _run([self.client, *args], env=self.env)

    def cold_prepare(self, case, base_archive):
        # a pulled base stays; everything the build made goes
        subprocess.run([self.client, "rmi", "-f", f"bench-{case}:latest"], capture_output=True,
                       env=self.env)
        self._docker("builder", "prune", "-af")
        if base_archive and case not in self.loaded:
            self._docker("load", "-q", "-i", base_archive)
            self.loaded.add(case)

    def build(self, case, ctx):
        return _timed([self.client, "build", "--network", "host", "-q",
                       "-t", f"bench-{case}:latest", ctx], env=self.env)

    def cold_done(self, case):
        pass

    def close(self):
        for p in reversed(self.procs):  # dockerd first, then its containerd
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []
        if getattr(self, "dir", None):
            _rm(self.dir)
            self.dir = None


def run_case(case, ctx, base_archive, builders, n, warm=True):
    res = {b.name: {"cold": [], "rebuild": []} for b in builders}
    if warm:  # one untimed build each: bytecode compiled, context and base in the page cache
        for b in builders:
            b.cold_prepare(case, base_archive)
            b.build(case, ctx)
            b.cold_done(case)
    for i in range(n):
        order = builders[i % len(builders):] + builders[:i % len(builders)]
        for b in order:
            b.cold_prepare(case, base_archive)
            res[b.name]["cold"].append(b.build(case, ctx))
            res[b.name]["rebuild"].append(b.build(case, ctx))
            b.cold_done(case)
    return res


# -- layer write throughput -------------------------------------------------------------------

def layer_throughput_of(pybuild: str, tree: str, work: str):
    """layer_throughput() in the interpreter pybuild runs with (its compressors are there)."""
    interp = sys.executable
    with open(shutil.which(pybuild) or pybuild, "rb") as f:
        first = f.readline()
    if first.startswith(b"#!"):
        interp = first[2:].split()[0].decode()
    p = _run([interp, os.path.abspath(__file__), "--layer-throughput", tree, work])
    r = json.loads(p.stdout)
    return r["out"], r["total"]


def layer_throughput(tree: str, work: str) -> dict:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "builder"))
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "oci-spec"))
    from pybuild.image.layer import LayerWriter
    from pybuild.image.store import Store
    root = tempfile.mkdtemp(prefix="layer-", dir=work)
    store = Store(root)
    # the uncompressed tar once, for the compressor-alone figure
    with LayerWriter(store, None) as lw:
        lw.add_dir_tree(tree, "data")
    tar = os.path.join(root, "blobs", *lw.result["digest"].split(":"))
    total = os.path.getsize(tar)
    out = {}
    sys.path.insert(0, HERE)
    from layer_write import warm
    for comp in ("gzip", "zstd"):
        os.sync()  # what earlier writes left dirty is written out before, not during, this one
        warm(tree)  # in the page cache, as a RUN's upper dir it has just written
        t0 = time.monotonic()
        with LayerWriter(store, comp) as lw:
            lw.add_dir_tree(tree, "data")
        dt = time.monotonic() - t0
        try:  # the yardstick: the same compression on one thread (zstd's writer uses more)
            c = lw._compressor(parallel=False)
        except TypeError:  # a pybuild from before parallel compression
            c = lw._compressor()
        t0 = time.monotonic()
        with open(tar, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                c.compress(chunk)
        c.flush()
        dc = time.monotonic() - t0
        out[comp] = {"mb_s": total / dt / 1e6, "seconds": dt, "blob": lw.result["size"],
                     "compressor_mb_s": total / dc / 1e6}
    store.close()
    _rm(root)
    try:
        from pybuild.image.layer import compress_threads
        threads = compress_threads()
    except ImportError:
        threads = 1
    out["zstd"]["threads"] = threads  # gzip: one thread
    return out, total


def _fmt_table(rows, names, pybuilds, peers):
    lines = []
    head = f"{'case':4} {'measure':8}" + "".join(f" {n + ' s':>11}" for n in names)
    head += "".join(f" {p[:6] + '/' + q[:6]:>14}" for p in pybuilds for q in peers)
    lines.append(head)
    for case, m, med in rows:
        line = f"({case})  {m:8}" + "".join(
            f" {med[n]:11.3f}" if med.get(n) is not None else f" {'-':>11}" for n in names)
        for p in pybuilds:
            for q in peers:
                r = med[p] / med[q] if med.get(p) and med.get(q) else None
                line += f" {r:13.2f}x" if r is not None else f" {'-':>14}"
        lines.append(line)
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=3, help="rounds per measurement (median)")
    ap.add_argument("--only", default="a,b,c,d,e")
    ap.add_argument("--runtime", default=os.environ.get("PYBUILD_RUNTIME", "pyrunc"),
                    help="OCI runtime pybuild uses for RUN (default pyrunc, pybuild's own "
                         "default; runc: the peers' runtime, to compare the builders alone)")
    ap.add_argument("--pybuild", action="append", default=[],
                    help="PATH or LABEL=PATH (repeatable: an A/B of two trees in one run)")
    ap.add_argument("--peers", default="buildkit,buildah",
                    help="comma list of buildkit, buildah (none: pybuild alone)")
    ap.add_argument("--dockerd", default="dockerd", help="dockerd for the BuildKit peer")
    ap.add_argument("--buildah", default="buildah")
    ap.add_argument("--cache-dir", default=DEFAULT_CACHE,
                    help="where the Debian base rootfs tarball is kept between runs")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-warm", action="store_true", help="skip the untimed first build")
    ap.add_argument("--json", action="store_true", help="results as JSON on stdout")
    args = ap.parse_args()
    global RUNTIME
    RUNTIME = args.runtime
    cases = [c for c in args.only.split(",") if c]
    for c in cases:
        if c not in DOCKERFILES:
            sys.exit(f"bench: unknown case {c!r} (want some of {','.join(DOCKERFILES)})")
    work = tempfile.mkdtemp(prefix="pybuild-bench-")
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    builders, skipped, versions = [], {}, {}
    report = {"n": args.n, "runtime": RUNTIME, "cases": {}, "skipped": skipped,
              "versions": versions}
    try:
        for spec in args.pybuild or [shutil.which("pybuild") or "pybuild"]:
            label, sep, path = spec.partition("=")
            if not sep:
                label, path = "pybuild", spec
            builders.append(Pybuild(label, path, work))
        pybuilds = [b.name for b in builders]
        peers = [p for p in args.peers.split(",") if p and p != "none"]
        for p in peers:
            if p == "buildkit":
                builders.append(BuildKit(args.dockerd, work))
            elif p == "buildah":
                builders.append(Buildah(args.buildah, work))
            else:
                skipped[p] = "unknown peer (want buildkit or buildah)"
        live = []
        for b in builders:
            why = b.probe()
            if why:
                skipped[b.name] = why
            else:
                live.append(b)
                versions[b.name] = b.version()
        builders = live
        names = [b.name for b in builders]
        peer_names = [n for n in names if n not in pybuilds]
        pybuilds = [n for n in pybuilds if n in names]
        if not pybuilds:
            raise BenchError(f"no pybuild to measure: {skipped}")
        say(f"pybuild bench: n={args.n} rounds (medians), pybuild RUN runtime={RUNTIME}, "
            f"cpus={os.cpu_count()}, load={os.getloadavg()[0]:.1f}")
        for n in names:
            say(f"  {n}: {versions[n]}")
        for n, why in skipped.items():
            say(f"  {n}: skipped: {why}")
        try:
            bases = make_bases(cases, work, builders[0].path, args.cache_dir)
        except BenchError as e:
            if "e" not in cases:
                raise
            report["skipped"]["case e"] = str(e)
            say(f"  case (e) skipped: {e}")
            cases.remove("e")
            bases = make_bases(cases, work, builders[0].path, args.cache_dir)
        rows = []
        header_done = False
        ctx_c = None
        for case in cases:
            ctx = make_case(case, work)
            if case == "c":
                ctx_c = ctx
            res = run_case(case, ctx, bases.get(case), builders, args.n, warm=not args.no_warm)
            report["cases"][case] = {}
            for m in ("cold", "rebuild"):
                med = {n: statistics.median(res[n][m]) for n in names}
                report["cases"][case][m] = {"median": med, "runs": {n: res[n][m] for n in names}}
                rows.append((case, m, med))
                table = _fmt_table(rows[-1:], names, pybuilds, peer_names)
                if not header_done:
                    say(table[0])
                    header_done = True
                say(table[1])
            if not args.json:
                sys.stdout.flush()
        if not args.no_throughput:
            if ctx_c is None:
                ctx_c = os.path.join(work, "tp")
                _write_files(os.path.join(ctx_c, "data"), 10_000, 200 * 1024 * 1024, 3)
            tp, total = layer_throughput_of(builders[0].path, os.path.join(ctx_c, "data"), work)
            report["layer_write"] = tp
            for comp, r in tp.items():
                say(f"layer write {comp}: {total / 1e6:.0f} MB tar in {r['seconds']:.2f}s = "
                    f"{r['mb_s']:.0f} MB/s, compressor alone (one thread) "
                    f"{r['compressor_mb_s']:.0f} MB/s ({r['mb_s'] / r['compressor_mb_s']:.0%}), "
                    f"blob {r['blob'] / 1e6:.0f} MB, compressing on {r.get('threads', 1)} thread(s)")
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        for b in builders:
            b.close()
        _rm(work)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    return 0


RUNTIME = "pyrunc"

if __name__ == "__main__":
    if sys.argv[1:2] == ["--layer-throughput"]:
        out, total = layer_throughput(sys.argv[2], sys.argv[3])
        print(json.dumps({"out": out, "total": total}))
        sys.exit(0)
    sys.exit(main())
