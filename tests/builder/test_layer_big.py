"""Big layers (many 1 MiB chunks; zstd on several threads): one valid stream whose bytes
depend on the content alone, digests as the manifest and config say."""
import hashlib
import io
import os
import random
import subprocess
import tarfile

import pytest
import zstandard

from build_e2e import env  # noqa: F401


def _content(n: int, seed: int) -> bytes:
    """Half compressible text, half random."""
    r = random.Random(seed)
    words = [bytes(r.choice(b"abcdefghij") for _ in range(r.randint(2, 8))) for _ in range(300)]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(r.choice(words) for _ in range(20000)) if r.random() < 0.5 \
            else r.randbytes(300_000)
    return bytes(out[:n])


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
