"""pybuild.image.layer: one-pass digests, determinism, metadata, overlay whiteouts."""
import gzip
import hashlib
import io
import os
import random
import subprocess
import tarfile

import pytest
import zstandard

from ocispec import mediatypes as mt
from ocispec.errors import OCIError
from pybuild.image.layer import LayerWriter, layer_from_overlay_upper
from pybuild.image.store import Store


def _decompress(data, compression):
    if compression == "gzip":
        return gzip.decompress(data)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def _tree(root):
    os.makedirs(root / "d" / "sub")
    (root / "d" / "a.txt").write_bytes(b"alpha\n")
    (root / "big").write_bytes(os.urandom(3 << 20))
    os.link(root / "d" / "a.txt", root / "hard")
    os.symlink("d/a.txt", root / "link")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (root / "suid").write_bytes(b"#!/bin/sh\n")
    os.chown(root / "suid", 1234, 5678)
    os.chmod(root / "suid", 0o4755)
    os.setxattr(root / "d" / "a.txt", "trusted.pyoci", b"val")
    return root


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_digests_in_one_pass(tmp_path, compression):
    s = Store(tmp_path / "st")
    src = _tree(tmp_path / "src")
    with LayerWriter(s, compression) as lw:
        lw.add_dir_tree(src, "app")
    r = lw.result
    blob = open(s.blob_path(r["digest"]), "rb").read()
    assert r["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert r["size"] == len(blob)
    raw = _decompress(blob, compression)
    assert r["diff_id"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert r["media_type"] == mt.layer_media_type(compression)
    if compression == "gzip":
        assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0


def test_entries_sorted_with_metadata(tmp_path):
    s = Store(tmp_path / "st")
    src = _tree(tmp_path / "src")
    with LayerWriter(s, None) as lw:
        lw.add_file_bytes("zz/last", b"x", 0o600, 7, 8)
        lw.add_dir("zz", 0o700, 7, 8)
        lw.add_dir_tree(src, "app")
        lw.add_whiteout("etc/gone")
        lw.add_opaque("var/empty")
    tf = tarfile.open(s.blob_path(lw.result["digest"]))
    ms = {m.name.rstrip("/"): m for m in tf}
    names = [m.name.rstrip("/") for m in tf.getmembers()]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert ms["app/suid"].mode == 0o4755 and (ms["app/suid"].uid, ms["app/suid"].gid) == (1234, 5678)
    assert ms["app/link"].issym() and ms["app/link"].linkname == "d/a.txt"
    assert ms["app/d/a.txt"].isreg()  # first in order carries the data
    assert ms["app/hard"].islnk() and ms["app/hard"].linkname == "app/d/a.txt"
    assert ms["app/fifo"].isfifo()
    assert ms["app/null"].ischr() and (ms["app/null"].devmajor, ms["app/null"].devminor) == (1, 3)
    assert ms["app/d/a.txt"].pax_headers.get("SCHILY.xattr.trusted.pyoci") == "val"
    assert ms["etc/.wh.gone"].isreg() and ms["var/empty/.wh..wh..opq"].isreg()
    assert ms["zz"].isdir() and ms["zz"].mode == 0o700
    assert tf.extractfile(ms["zz/last"]).read() == b"x"
    assert ms["app/d"].uname == ""


def test_source_date_epoch_is_reproducible(tmp_path):
    s = Store(tmp_path / "st")
    src = _tree(tmp_path / "src")
    results = []
    for i in range(2):
        os.utime(src / "d" / "a.txt", (2_000_000_000 + i, 2_000_000_000 + i))
        for comp in ("gzip", "zstd"):
            with LayerWriter(s, comp, source_date_epoch=1_000_000) as lw:
                lw.add_dir_tree(src)
            results.append(lw.result)
    assert results[0] == results[2] and results[1] == results[3]
    tf = tarfile.open(fileobj=io.BytesIO(_decompress(open(s.blob_path(results[0]["digest"]), "rb").read(), "gzip")))
    assert {m.mtime for m in tf} == {1_000_000}
    # clamp, not set: older times stay
    os.utime(src / "big", (10, 10))
    with LayerWriter(s, None, source_date_epoch=1_000_000) as lw:
        lw.add_path(src / "big", "big")
    assert tarfile.open(s.blob_path(lw.result["digest"])).getmember("big").mtime == 10


def test_bad_names_and_failures_leave_no_blob(tmp_path):
    s = Store(tmp_path / "st")
    with pytest.raises(OCIError, match=r"must not contain '\.\.'"):
        LayerWriter(s).add_file_bytes("../x", b"", 0o644, 0, 0)
    with pytest.raises(OCIError, match="unknown layer compression"):
        LayerWriter(s, "lz4")
    f = tmp_path / "vanishing"
    f.write_bytes(b"abc")
    lw = LayerWriter(s)
    lw.add_path(f, "v")
    f.unlink()
    with pytest.raises(FileNotFoundError):
        lw.close()
    assert os.listdir(s.tmp_dir) == [] and os.listdir(s.blobs_dir) == []


def _mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def test_overlay_upper_whiteouts(tmp_path):
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "gone.txt").write_text("x")
    (lower / "keep.txt").write_text("k")
    (lower / "opq").mkdir()
    (lower / "opq" / "old").write_text("o")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        os.unlink(merged / "gone.txt")
        os.system(f"rm -rf {merged / 'opq'}")
        (merged / "opq").mkdir()
        (merged / "opq" / "new").write_text("n")
        (merged / "added").write_text("a")
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert not _mounted(merged)
    s = Store(tmp_path / "st")
    r = layer_from_overlay_upper(s, upper, compression=None)
    tf = tarfile.open(s.blob_path(r["digest"]))
    names = {m.name.rstrip("/") for m in tf}
    assert names == {".wh.gone.txt", "added", "opq", "opq/.wh..wh..opq", "opq/new"}
    assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for m in tf for k in m.pax_headers)


def test_gnu_tar_reads_headers(tmp_path):
    """Our hand-made ustar headers and the PAX fallback both read back with GNU tar."""
    s = Store(tmp_path / "st")
    long = "d/" + "x" * 120
    with LayerWriter(s, None, source_date_epoch=5) as lw:
        lw.add_dir("d", 0o750, 3, 4)
        lw.add_file_bytes("d/short", b"abc", 0o640, 1, 2)
        lw.add_file_bytes(long, b"long", 0o600, 5_000_000, 6)  # long name, big uid: PAX
        lw.add_file_bytes("d/ünï", b"u", 0o644, 0, 0)
        lw.add_symlink("d/l", "short")
        lw.add_hardlink("d/h", "d/short")
    path = s.blob_path(lw.result["digest"])
    out = subprocess.run(["tar", "--numeric-owner", "-tvf", path], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("drwxr-x--- 3/4") and lines[0].endswith(" d/")
    assert any(line.startswith("-rw-r----- 1/2") and line.endswith(" d/h") for line in lines)
    assert any(line.startswith("-rw------- 5000000/6") and line.endswith(long) for line in lines)
    assert any("d/l -> short" in line for line in lines) and any("d/short link to d/h" in line for line in lines)
    assert any(line.endswith("d/ünï") for line in lines)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-xf", path, "-C", str(dest)], check=True)
    assert (dest / long).read_bytes() == b"long" and (dest / "d" / "short").read_bytes() == b"abc"


def test_overlay_redirect_refused(tmp_path):
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(OCIError, match="redirect entry in the upper dir"):
        layer_from_overlay_upper(Store(tmp_path / "st"), upper)


def _snapshot(root):
    """{relpath: (type, mode, uid, gid, content-or-target)} of a tree."""
    import stat as st_
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            s = os.lstat(p)
            rel = os.path.relpath(p, root)
            if st_.S_ISLNK(s.st_mode):
                v = ("l", os.readlink(p))
            elif st_.S_ISDIR(s.st_mode):
                v = ("d", None)
            else:
                v = ("f", open(p, "rb").read())
            out[rel] = (*v, st_.S_IMODE(s.st_mode), s.st_uid, s.st_gid)
    return out


def test_overlay_upper_roundtrip(tmp_path):
    """lower + layer(upper) applied with pybuild.image.extract == what the overlay showed."""
    from pybuild.image.extract import apply_layer
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "etc").mkdir()
    (lower / "etc" / "conf").write_text("old")
    (lower / "etc" / "gone").write_text("x")
    (lower / "var" / "cache" / "deep").mkdir(parents=True)
    (lower / "var" / "cache" / "deep" / "f").write_text("c")
    (lower / "dir2file").mkdir()
    (lower / "dir2file" / "x").write_text("x")
    (lower / "file2dir").write_text("f")
    (lower / "link").symlink_to("etc/conf")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off",
                    str(merged)], check=True)
    try:
        (merged / "etc" / "conf").write_text("new")
        os.unlink(merged / "etc" / "gone")
        subprocess.run(["rm", "-rf", str(merged / "var" / "cache")], check=True)
        (merged / "var" / "cache").mkdir()
        (merged / "var" / "cache" / "fresh").write_text("fresh")
        subprocess.run(["rm", "-rf", str(merged / "dir2file")], check=True)
        (merged / "dir2file").write_text("now file")
        os.unlink(merged / "file2dir")
        (merged / "file2dir").mkdir()
        (merged / "file2dir" / "in").write_text("i")
        os.unlink(merged / "link")
        (merged / "link").symlink_to("var/cache/fresh")
        (merged / "new").write_text("n")
        os.link(merged / "new", merged / "new-hard")
        os.chown(merged / "etc" / "conf", 12, 34)
        os.chmod(merged / "etc" / "conf", 0o600)
        want = _snapshot(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    s = Store(tmp_path / "st")
    r = layer_from_overlay_upper(s, upper, compression="zstd")
    apply_layer(s.blob_path(r["digest"]), r["media_type"], lower)
    got = _snapshot(lower)
    assert got == want
    assert os.lstat(lower / "new").st_ino == os.lstat(lower / "new-hard").st_ino


def test_concurrent_writers_one_store(tmp_path):
    import threading
    s = Store(tmp_path / "st")
    results, errors = {}, []

    def work(i):
        try:
            with LayerWriter(s, "gzip" if i % 2 else "zstd", source_date_epoch=0) as lw:
                for j in range(200):
                    lw.add_file_bytes(f"d{i}/f{j}", os.urandom(2048) if j % 3 else b"same", 0o644, 0, 0)
            results[i] = lw.result
        except Exception as e:  # reported below
            errors.append(e)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and len(results) == 6
    for r in results.values():
        blob = open(s.blob_path(r["digest"]), "rb").read()
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == r["digest"]
        comp = "gzip" if r["media_type"].endswith("gzip") else "zstd"
        assert "sha256:" + hashlib.sha256(_decompress(blob, comp)).hexdigest() == r["diff_id"]
    assert os.listdir(s.tmp_dir) == []


@pytest.mark.parametrize("change, message", [(b"more", "grew"), (None, "shrank")])
def test_file_changed_while_writing_leaves_no_blob(tmp_path, change, message):
    """A file's size is taken when it is added; if it differs when its bytes are read, the
    layer fails (whether or not the last read ends at a chunk boundary) and stores nothing."""
    s = Store(tmp_path / "st")
    for size in (10, (1 << 20) - 512, 3 << 20):
        f = tmp_path / f"f{size}"
        f.write_bytes(os.urandom(size))
        lw = LayerWriter(s, "gzip")
        lw.add_path(f, "f")
        if change is None:
            os.truncate(f, size - 5)
        else:
            with open(f, "ab") as fh:
                fh.write(change)
        with pytest.raises(OCIError, match=f"file {message} while writing the layer"):
            lw.close()
        assert os.listdir(s.tmp_dir) == [] and os.listdir(s.blobs_dir) == []


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_tree_written_as_walked_is_the_same_layer(tmp_path, compression):
    """A writer holding one tree walks it at close and writes entries as it walks; the bytes
    equal those of the same tree walked first (len() forces that) and written sorted: names
    that sort around "/" ("a" "a-b" "a.b" "a/x"), whiteouts beside real ".wh." names, an
    opaque dir with a real ".wh..wh..opq" file, hard links across dirs, excluded paths."""
    upper = tmp_path / "upper"
    for n in ("a", "a0", "a.b", "a-b", "A", "_a", "a b"):
        os.makedirs(upper / n / "c")
        (upper / n / "c" / "f").write_bytes(n.encode())
        (upper / f"{n}-file").write_bytes(b"x" * 513)
    os.makedirs(upper / "opq" / "in")
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    (upper / "opq" / ".wh..wh..opq").write_bytes(b"real")
    (upper / "opq" / "in" / "big").write_bytes(os.urandom((1 << 20) + 3))
    os.link(upper / "opq" / "in" / "big", upper / "a" / "hl")
    (upper / ".wh.y").write_bytes(b"real whiteout name")
    os.mknod(upper / "y", 0o600 | 0o020000, os.makedev(0, 0))
    os.makedirs(upper / ".wh.dd" / "in")
    os.mknod(upper / "dd", 0o600 | 0o020000, os.makedev(0, 0))
    (upper / "skip").write_bytes(b"s")
    store = Store(tmp_path / "st")

    def layer(walk_first):
        lw = LayerWriter(store, compression, 0)
        lw.add_dir_tree(upper, "p/q", exclude=lambda rel: rel == "skip", _overlay=True)
        if walk_first:
            assert len(lw) > 20
        return lw.close()

    streamed, walked = layer(False), layer(True)
    assert streamed == walked
    with open(store.blob_path(streamed["digest"]), "rb") as f:
        names = tarfile.open(fileobj=io.BytesIO(_decompress(f.read(), compression))).getnames()
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert "p/q/.wh.y" in names and "p/q/.wh.dd/in" in names and "p/q/skip" not in names
    assert "p/q/opq/.wh..wh..opq" in names


def _pinned_tree(root, files: int = 120):
    """`files` files, random and text-like, 0 bytes to ~1 MiB (120: ~25 MB, a tar of more
    1 MiB chunks than the writer has buffers), with fixed modes and mtimes: the same bytes
    on every machine."""
    r = random.Random(14)
    words = [bytes(r.choice(b"abcdefghij") for _ in range(r.randint(2, 8))) for _ in range(300)]
    for i in range(files):
        d = os.path.join(root, f"d{i % 5}")
        os.makedirs(d, exist_ok=True)
        n = r.choice((0, 1, 511, 512, 513, 70_000, (1 << 20) - 300, 600_000))
        data = (b" ".join(r.choice(words) for _ in range(n // 4 + 1))[:n] if i % 2
                else r.randbytes(n))
        p = os.path.join(d, f"f{i}")
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o644)
        os.utime(p, (1_600_000_000 + i, 1_600_000_000 + i))
    for i in range(5):
        os.chmod(os.path.join(root, f"d{i}"), 0o755)
        os.utime(os.path.join(root, f"d{i}"), (1_600_000_000, 1_600_000_000))


_PINNED_DIFF_ID = "sha256:221b2829fe76121e3448850a95fa5466bf1c3f4aa135fbebfdd5334e92d43d48"
# The compressed bytes depend on the compressor's version too: pinned for these.
_PINNED_BLOBS = {
    ("gzip", "isal", "1.9.1"): "sha256:a1247a1fb3ecc2fd2ec7f25214209226a77b6d18ca9767c8b3004bf7f4175dc5",
    ("zstd", "libzstd", "1.5.7"): "sha256:0fd3487aea808f27c01d86c9aa8d5e54042002488761f3fb7e57935af9c33c0b",
}


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_layer_bytes_are_pinned(tmp_path, compression):
    """The layer of a fixed tree has the bytes it had before the writer's threads were
    rearranged (how the chunks travel between threads, and their buffers come back to be
    used again, must never show in the bytes)."""
    _pinned_tree(tmp_path / "src")
    s = Store(tmp_path / "st")
    with LayerWriter(s, compression) as lw:
        lw.add_dir_tree(tmp_path / "src", "app", chown=(0, 0))
    assert lw.result["diff_id"] == _PINNED_DIFF_ID
    if compression is None:
        assert lw.result["digest"] == _PINNED_DIFF_ID
        return
    if compression == "gzip":
        import isal
        lib = ("isal", isal.__version__)
    else:
        lib = ("libzstd", ".".join(map(str, zstandard.ZSTD_VERSION)))
    want = _PINNED_BLOBS.get((compression, *lib))
    if want is None:
        pytest.skip(f"compressed bytes pinned for another {lib[0]} than {lib[1]}")
    assert lw.result["digest"] == want


def _worker_threads():
    import threading
    return [t for t in threading.enumerate() if t is not threading.current_thread()]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressor_failure_leaves_no_blob_or_thread(tmp_path, monkeypatch, compression):
    """The compressor failing mid-stream (on the writer's worker thread) fails the layer
    with its error; nothing is stored and no thread is left behind."""
    _pinned_tree(tmp_path / "src", 40)  # ~7 MB
    s = Store(tmp_path / "st")
    real = LayerWriter._compressor

    class Failing:
        def __init__(self, c):
            self.c, self.n = c, 0

        def compress(self, b):
            self.n += 1
            if self.n == 3:
                raise OSError("compressor broke")
            return self.c.compress(b)

        def flush(self):
            return self.c.flush()

    monkeypatch.setattr(LayerWriter, "_compressor", lambda self: Failing(real(self)))
    before = _worker_threads()
    lw = LayerWriter(s, compression)
    lw.add_dir_tree(tmp_path / "src")
    with pytest.raises(OSError, match="compressor broke"):
        lw.close()
    assert os.listdir(s.tmp_dir) == [] and os.listdir(s.blobs_dir) == []
    assert _worker_threads() == before


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_blob_write_failure_leaves_no_blob_or_thread(tmp_path, monkeypatch, compression):
    """The blob's writes failing (a full disk) partway, on whichever thread writes them,
    fail the layer with that error; nothing is stored and no thread is left behind."""
    import errno
    from pybuild.image import layer
    _pinned_tree(tmp_path / "src", 40)  # ~7 MB
    s = Store(tmp_path / "st")
    real = layer._writer

    def writer(f):
        write, left = real(f), [1 << 20]

        def limited(b):
            left[0] -= len(b)
            if left[0] < 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            write(b)
        return limited

    monkeypatch.setattr(layer, "_writer", writer)
    before = _worker_threads()
    lw = LayerWriter(s, compression)
    lw.add_dir_tree(tmp_path / "src")
    with pytest.raises(OSError, match="No space left"):
        lw.close()
    assert os.listdir(s.tmp_dir) == [] and os.listdir(s.blobs_dir) == []
    assert _worker_threads() == before
