"""Layer write throughput: MB/s of input for LayerWriter (gzip, zstd, none).

Makes ~200 MB in ~10,000 files (half random, half text-like, sizes spread like a real tree),
then writes it as a layer with each compression: median (and best) of N runs. Also times the
bare compressor (median of 3) on the same bytes, the layer's uncompressed tar fed in the
writer's 1 MiB chunks on one thread (as bench/pybuild_bench.py's throughput figure does),
and gives each write as a % of it.

    python bench/layer_write.py [--mb 200] [--files 10000] [--runs 5]
"""
import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

from pybuild.image.extract import apply_layer
from pybuild.image.layer import LayerWriter
from pybuild.image.store import Store


def make_tree(root, total_mb, nfiles, seed=1):
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 10)))
             for _ in range(2000)]
    avg = total_mb * (1 << 20) // nfiles
    total = 0
    for i in range(nfiles):
        d = os.path.join(root, f"d{i % 100:02d}", f"s{i % 7}")
        os.makedirs(d, exist_ok=True)
        size = max(1, int(rnd.expovariate(1 / avg)))
        if i % 2:
            data = os.urandom(size)
        else:
            chunk = b" ".join(rnd.choice(words) for _ in range(4096)) + b"\n"
            data = (chunk * (size // len(chunk) + 1))[:size]
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(data)
        total += size
    return total


def warm(root):
    """Read every file of root: a machine that drops page cache unused for a few seconds
    (this kind of VM runs DAMON's proactive reclaim) would otherwise have the write read
    the tree from disk, which the compressor alone is never timed doing."""
    for dirpath, _, files in os.walk(root):
        for n in files:
            with open(os.path.join(dirpath, n), "rb") as f:
                while f.read(1 << 20):
                    pass


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="pyoci-bench-layer-")
    try:
        src = os.path.join(tmp, "src")
        total = make_tree(src, a.mb, a.files)
        mb = total / (1 << 20)
        print(f"input: {mb:.0f} MB in {a.files} files")
        writes = {}
        for comp in ("gzip", "zstd", None):
            times, best_ex = [], None
            for _ in range(a.runs):
                store = Store(os.path.join(tmp, "store"))
                os.sync()  # the last round's extraction is written out before, not during, this write
                warm(src)  # in the page cache, as a RUN's upper dir it has just written
                t = time.perf_counter()
                with LayerWriter(store, comp, source_date_epoch=0) as lw:
                    lw.add_dir_tree(src)
                times.append(time.perf_counter() - t)
                out = lw.result["size"] / (1 << 20)
                dest = os.path.join(tmp, "dest")
                os.mkdir(dest)
                t = time.perf_counter()
                apply_layer(store.blob_path(lw.result["digest"]), lw.result["media_type"], dest)
                ex = time.perf_counter() - t
                best_ex = ex if best_ex is None else min(best_ex, ex)
                shutil.rmtree(dest)
                shutil.rmtree(os.path.join(tmp, "store"))
            med = writes[comp] = statistics.median(times)
            print(f"{str(comp):5s} write {mb / med:5.0f} MB/s (median {med:.3f} s, best "
                  f"{min(times):.3f} s, blob {out:.0f} MB)   apply {mb / best_ex:5.0f} MB/s "
                  f"({best_ex:.2f} s)")
        # The yardstick: the layer's own tar bytes (the uncompressed layer just written, with
        # its 512-byte headers and padding: ~20% slower to compress than the files' contents
        # alone) through the writer's compressor on one thread, in the 1 MiB chunks the writer
        # feeds it, with nothing else to do; and the bare hash.
        store = Store(os.path.join(tmp, "store"))
        with LayerWriter(store, None, source_date_epoch=0) as lw:
            lw.add_dir_tree(src)
        with open(store.blob_path(lw.result["digest"]), "rb") as f:
            chunks = list(iter(lambda: f.read(1 << 20), b""))
        import hashlib

        def compress(comp):
            c = LayerWriter(store, comp)._compressor(parallel=False)
            for b in chunks:
                c.compress(b)
            c.flush()

        def sha256():
            h = hashlib.sha256()
            for b in chunks:
                h.update(b)

        for name, comp, fn in (("isal gzip -1", "gzip", lambda: compress("gzip")),
                               ("zstd -1", "zstd", lambda: compress("zstd")),
                               ("sha256", None, sha256)):
            times = []
            for _ in range(3):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            ratio = f"   layer write {100 * med / writes[comp]:3.0f}% of it" if comp else ""
            print(f"{name:12s} alone {mb / med:5.0f} MB/s{ratio}")
    finally:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
