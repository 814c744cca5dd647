#!/usr/bin/env python3
"""pybuild vs `buildah bud` on the four Dockerfiles of issue 5, in the same run.

    python3 bench/pybuild_bench.py [-n 3] [--only a,b] [--runtime runc] [--no-buildah]

For each case: cold builds (fresh store each time) and no-change rebuilds (same store),
pybuild and buildah alternating, medians over N runs and the ratio pybuild/buildah.
buildah runs with `--storage-driver vfs`, its own temp root, `--isolation chroot` and
`--layers` (its layer cache). Then the layer-write throughput of pybuild.image.layer.LayerWriter
(MB/s of tar input) for gzip and zstd on case (c)'s 200 MB tree.

(a) FROM scratch + COPY of busybox and files + metadata instructions
(b) two stages with ARGs, four RUNs (one making 1000 files), COPY --from
(c) 200 MB in about 10,000 files copied in, plus one RUN
(d) a RUN-heavy build on a larger base (an OCI layout of ~60 MB, FROM oci:DIR:tag)
"""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BUSYBOX = "/bin/busybox"
HERE = os.path.dirname(os.path.abspath(__file__))

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
FROM oci:{base}:base
RUN echo one > /one
RUN mkdir -p /work && cd /work && for i in 1 2 3 4 5 6 7 8 9 10; do echo $i > $i; done
RUN cat /usr/share/big/* | wc -c > /bytes
RUN echo four && ls / > /ls
RUN rm -rf /usr/share/big/part0* && echo removed > /removed
ENV DONE=yes
RUN test -f /removed
""",
}


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


def make_case(case: str, base: str, pybuild: str) -> str:
    ctx = os.path.join(base, f"ctx-{case}")
    os.makedirs(ctx)
    shutil.copy2(BUSYBOX, os.path.join(ctx, "busybox"))
    text = DOCKERFILES[case]
    if case == "a":
        _write_files(os.path.join(ctx, "files"), 20, 200_000, 1)
    if case == "c":
        _write_files(os.path.join(ctx, "data"), 10_000, 200 * 1024 * 1024, 3)
    if case == "d":
        layout = os.path.join(base, "base-layout")
        bctx = os.path.join(base, "ctx-d-base")
        os.makedirs(bctx)
        shutil.copy2(BUSYBOX, os.path.join(bctx, "busybox"))
        _write_files(os.path.join(bctx, "big"), 600, 60 * 1024 * 1024, 4)
        with open(os.path.join(bctx, "Dockerfile"), "w") as f:
            f.write("FROM scratch\nCOPY busybox /bin/busybox\n"
                    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                    "COPY big/ /usr/share/big/\n")
        subprocess.run([pybuild, "--root", os.path.join(base, "base-store"), "build",
                        "--progress", "quiet", "--runtime", RUNTIME, "-o", f"oci:{layout}:base",
                        bctx], check=True, stdout=subprocess.DEVNULL)
        text = text.format(base=layout)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(text)
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


def _timed(cmd) -> float:
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env=CHILD_ENV)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return dt


def pybuild_cmd(pybuild, root, ctx):
    return [pybuild, "--root", root, "build", "--progress", "quiet", "--runtime", RUNTIME,
            "-t", "bench:latest", ctx]


def buildah_cmds(root, ctx):
    base = ["buildah", "--root", os.path.join(root, "r"), "--runroot", os.path.join(root, "rr"),
            "--storage-driver", "vfs"]
    build = base + ["bud", "--isolation", "chroot", "--layers", "-q", "-t", "bench:latest",
                    "-f", os.path.join(ctx, "Dockerfile"), ctx]
    return build, base


def run_case(case, ctx, work, n, pybuild, with_buildah):
    res = {"pybuild": {"cold": [], "rebuild": []}, "buildah": {"cold": [], "rebuild": []}}
    # one untimed build each first: bytecode compiled, context in the page cache for both
    warm = tempfile.mkdtemp(prefix=f"warm-{case}-", dir=work)
    _timed(pybuild_cmd(pybuild, os.path.join(warm, "p"), ctx))
    if with_buildah:
        cmd, base = buildah_cmds(os.path.join(warm, "b"), ctx)
        _timed(cmd)
        subprocess.run(base + ["rmi", "--all", "--force"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    _rm(warm)
    for i in range(n):
        tools = ["pybuild", "buildah"] if with_buildah else ["pybuild"]
        if i % 2:
            tools.reverse()  # alternate who goes first
        for tool in tools:
            root = tempfile.mkdtemp(prefix=f"{tool}-{case}-", dir=work)
            if tool == "pybuild":
                cmd = pybuild_cmd(pybuild, root, ctx)
                res[tool]["cold"].append(_timed(cmd))
                res[tool]["rebuild"].append(_timed(cmd))
            else:
                cmd, base = buildah_cmds(root, ctx)
                res[tool]["cold"].append(_timed(cmd))
                res[tool]["rebuild"].append(_timed(cmd))
                subprocess.run(base + ["rm", "--all"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                subprocess.run(base + ["rmi", "--all", "--force"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            _rm(root)
    return res


def layer_throughput(tree: str, work: str) -> dict:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "builder"))
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "oci-spec"))
    from pybuild.image.layer import LayerWriter
    from pybuild.image.store import Store
    total = 0
    for dp, _, fns in os.walk(tree):
        for fn in fns:
            total += os.lstat(os.path.join(dp, fn)).st_size
    out = {}
    for comp in ("gzip", "zstd"):
        root = tempfile.mkdtemp(prefix=f"layer-{comp}-", dir=work)
        store = Store(root)
        t0 = time.monotonic()
        with LayerWriter(store, comp) as lw:
            lw.add_dir_tree(tree, "data")
        dt = time.monotonic() - t0
        out[comp] = (total / dt / 1e6, dt, lw.result["size"])
        _rm(root)
    return out, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--only", default="a,b,c,d")
    ap.add_argument("--runtime", default=os.environ.get("PYBUILD_RUNTIME", "runc"),
                    help="OCI runtime pybuild uses for RUN (default runc)")
    ap.add_argument("--pybuild", default=shutil.which("pybuild") or "pybuild")
    ap.add_argument("--no-buildah", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    args = ap.parse_args()
    global RUNTIME
    RUNTIME = args.runtime
    with_buildah = not args.no_buildah and shutil.which("buildah") is not None
    work = tempfile.mkdtemp(prefix="pybuild-bench-")
    try:
        print(f"pybuild bench: n={args.n}, pybuild RUN runtime={RUNTIME}, "
              f"buildah={'yes' if with_buildah else 'no'}, cpus={os.cpu_count()}")
        print(f"{'case':4} {'measure':8} {'pybuild s':>10} {'buildah s':>10} {'ratio':>7}")
        ctx_c = None
        for case in args.only.split(","):
            ctx = make_case(case, work, args.pybuild)
            if case == "c":
                ctx_c = ctx
            res = run_case(case, ctx, work, args.n, args.pybuild, with_buildah)
            for m in ("cold", "rebuild"):
                p = statistics.median(res["pybuild"][m])
                if with_buildah:
                    b = statistics.median(res["buildah"][m])
                    print(f"({case})  {m:8} {p:10.3f} {b:10.3f} {p / b:7.2f}x")
                else:
                    print(f"({case})  {m:8} {p:10.3f} {'-':>10} {'-':>7}")
            sys.stdout.flush()
        if not args.no_throughput:
            if ctx_c is None:
                ctx_c = os.path.join(work, "tp")
                _write_files(os.path.join(ctx_c, "data"), 10_000, 200 * 1024 * 1024, 3)
            tp, total = layer_throughput(os.path.join(ctx_c, "data"), work)
            for comp, (mbs, dt, size) in tp.items():
                print(f"layer write {comp}: {total / 1e6:.0f} MB in {dt:.2f}s = {mbs:.0f} MB/s "
                      f"(blob {size / 1e6:.0f} MB)")
    finally:
        _rm(work)


RUNTIME = "runc"

if __name__ == "__main__":
    main()
