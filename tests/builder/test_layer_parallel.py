"""Layers compressed on several threads (ParallelGzip, threaded zstd): one valid stream whose
bytes depend on the content alone, digests checked, and a failing compression thread a
clear error that leaves no blob."""
import gzip
import hashlib
import io
import os
import random
import subprocess
import tarfile

import pytest
import zstandard

from ocispec.errors import OCIError
from pybuild.image.layer import LayerWriter, ParallelGzip
from pybuild.image.store import Store

from build_e2e import env  # noqa: F401


def _content(n: int, seed: int) -> bytes:
    """Half compressible text, half random: blocks compress at different speeds, so the
    pool finishes them out of order."""
    r = random.Random(seed)
    words = [bytes(r.choice(b"abcdefghij") for _ in range(r.randint(2, 8))) for _ in range(300)]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(r.choice(words) for _ in range(20000)) if r.random() < 0.5 \
            else r.randbytes(300_000)
    return bytes(out[:n])


@pytest.mark.parametrize("n", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, (7 << 20) + 5])
def test_parallel_gzip_stream(n):
    data = _content(n, n)
    pg = ParallelGzip(1)
    parts = []
    for i in range(0, len(data), 1 << 20):
        parts += pg.submit(data[i:i + (1 << 20)])
    parts += pg.finish()
    out = b"".join(p if isinstance(p, bytes) else p.result() for p in parts)
    assert gzip.decompress(out) == data
    if n <= 1 << 20:  # one block: byte for byte what a single compressor gives
        from isal import isal_zlib
        c = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
        assert out == c.compress(data) + c.flush()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_build_big_layer_is_one_stream_and_reproducible(env, compression):
    """A COPY of 9 MiB (many compression blocks) built in two fresh stores: the same blob
    (SOURCE_DATE_EPOCH pins the created /data's mtime), a valid stream for the system's
    gzip/zstd, digests as the manifest and config say."""
    env.write("big.bin", _content(9 << 20, 7))
    env.write("small.txt", "hello\n")
    env.dockerfile("FROM scratch\nCOPY big.bin small.txt /data/\n")
    digests = []
    for root in ("a", "b"):
        r = os.path.join(env.base, root)
        env.build("--compression", compression, root=r,
                  env={"SOURCE_DATE_EPOCH": "1700000000"})
        man, cfg = env.manifest(root=r)
        layer = man["layers"][0]
        path = env.blob(layer["digest"], root=r)
        blob = open(path, "rb").read()
        assert layer["size"] == len(blob)
        assert layer["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
        tool = ["gzip", "-dc"] if compression == "gzip" else ["zstd", "-dcq"]
        raw = subprocess.run(tool + [path], capture_output=True, check=True).stdout
        assert cfg["rootfs"]["diff_ids"][0] == "sha256:" + hashlib.sha256(raw).hexdigest()
        if compression == "zstd":
            assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read() == raw
        digests.append(layer["digest"])
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            assert tf.extractfile("data/big.bin").read() == _content(9 << 20, 7)
    assert digests[0] == digests[1]


def test_failing_compression_thread_leaves_no_blob(tmp_path):
    """A compression thread that fails (here: a level isal does not have) fails the layer
    with the compressor's error, and neither a temp file nor a blob stays in the store."""
    s = Store(tmp_path / "st")
    src = tmp_path / "f"
    src.write_bytes(_content(3 << 20, 1))
    lw = LayerWriter(s, "gzip", level=9)
    lw.add_path(src, "f")
    with pytest.raises(OCIError, match="compressing the layer failed"):
        lw.close()
    assert lw.result is None
    assert os.listdir(s.tmp_dir) == [] and os.listdir(s.blobs_dir) == []
    with LayerWriter(s, "gzip") as ok:  # the shared pool still works afterwards
        ok.add_path(src, "f")
    assert os.path.exists(s.blob_path(ok.result["digest"]))
