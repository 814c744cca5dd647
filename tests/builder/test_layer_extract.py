"""pybuild.image.extract: layers apply with whiteouts and metadata, and never write outside dest."""
import io
import os
import stat
import tarfile

import pytest

from ocispec.errors import OCIError
from pybuild.image.extract import apply_layer
from pybuild.image.layer import LayerWriter
from pybuild.image.store import Store


def _tar(entries, compression=None):
    """entries: (name, kind, extra) -> raw tar bytes (optionally gzip/zstd)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, extra in entries:
            ti = tarfile.TarInfo(name)
            data = b""
            if kind == "file":
                data = extra
                ti.size = len(data)
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, extra
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, extra
            tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    if compression == "gzip":
        import gzip
        return gzip.compress(raw)
    if compression == "zstd":
        import zstandard
        return zstandard.ZstdCompressor().compress(raw)
    return raw


def _apply(data, dest, media_type="application/vnd.oci.image.layer.v1.tar"):
    apply_layer(io.BytesIO(data), media_type, dest)


@pytest.fixture
def jail(tmp_path):
    """dest dir inside a box, with a sentinel sibling that must stay untouched."""
    box = tmp_path / "box"
    dest = box / "rootfs"
    dest.mkdir(parents=True)
    (box / "outside").mkdir()
    return dest


def _outside_untouched(dest):
    box = dest.parent
    assert sorted(os.listdir(box)) == ["outside", "rootfs"]
    assert os.listdir(box / "outside") == []


def test_roundtrip_metadata(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"data")
    os.chown(src / "d" / "f", 1001, 1002)
    os.chmod(src / "d" / "f", 0o2750)
    os.link(src / "d" / "f", src / "h")
    os.symlink("/d/f", src / "abs")
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(src / "p")
    os.setxattr(src / "d" / "f", "trusted.pyoci", b"x")
    os.utime(src / "d", (12345, 12345))
    s = Store(tmp_path / "st")
    for comp in ("gzip", "zstd", None):
        with LayerWriter(s, comp) as lw:
            lw.add_dir_tree(src)
        dest = tmp_path / f"out-{comp}"
        dest.mkdir()
        # media type says tar: compression must come from the bytes
        apply_layer(s.blob_path(lw.result["digest"]), "application/vnd.oci.image.layer.v1.tar", dest)
        st = os.lstat(dest / "d" / "f")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1001, 1002, 0o2750)
        assert st.st_ino == os.lstat(dest / "h").st_ino
        assert os.readlink(dest / "abs") == "/d/f"
        assert os.lstat(dest / "null").st_rdev == os.makedev(1, 3)
        assert stat.S_ISFIFO(os.lstat(dest / "p").st_mode)
        assert os.getxattr(dest / "d" / "f", "trusted.pyoci") == b"x"
        assert os.lstat(dest / "d").st_mtime == 12345


def test_whiteouts_and_opaque(tmp_path):
    dest = tmp_path / "r"
    _apply(_tar([("a", "dir", None), ("a/x", "file", b"1"), ("a/y", "file", b"2"),
                 ("b", "dir", None), ("b/old", "file", b"o"), ("c", "file", b"c")]), dest if dest.mkdir() is None else dest)
    _apply(_tar([("a/.wh.x", "file", b""), ("b/.wh..wh..opq", "file", b""), ("b/new", "file", b"n"),
                 (".wh.c", "file", b""), ("b/0first", "file", b"z"), (".wh.missing", "file", b""),
                 ("nodir/.wh.z", "file", b"")], "gzip"), dest)
    assert sorted(os.listdir(dest / "a")) == ["y"]
    assert sorted(os.listdir(dest / "b")) == ["0first", "new"]
    assert not (dest / "c").exists() and not (dest / "nodir").exists()
    # a file replaces a directory and vice versa
    _apply(_tar([("a", "file", b"now a file"), ("c", "dir", None)], "zstd"), dest)
    assert (dest / "a").read_bytes() == b"now a file" and (dest / "c").is_dir()


def test_dotdot_refused(jail):
    with pytest.raises(OCIError, match="escapes the root"):
        _apply(_tar([("../outside/x", "file", b"evil")]), jail)
    with pytest.raises(OCIError, match="escapes the root"):
        _apply(_tar([("a/../../outside/x", "file", b"evil")]), jail)
    _outside_untouched(jail)


def test_absolute_names_stay_inside(jail):
    _apply(_tar([("/etc/x", "file", b"inside")]), jail)
    assert (jail / "etc" / "x").read_bytes() == b"inside"
    _outside_untouched(jail)


@pytest.mark.parametrize("target", ["../outside", "/", "../../..", "/../outside", "../outside/."])
def test_symlink_then_write_through_it(jail, target):
    _apply(_tar([("evil", "sym", target), ("evil/pwned", "file", b"evil"),
                 ("evil/sub/deep", "file", b"evil")]), jail)
    _outside_untouched(jail)
    # everything landed under dest (where the link resolves when dest is "/")
    found = [os.path.join(r, f) for r, _, fs in os.walk(jail) for f in fs]
    assert found and all(p.startswith(str(jail) + "/") for p in found)


def test_symlink_already_in_tree(jail):
    os.symlink(str(jail.parent / "outside"), jail / "lib")  # absolute host path
    os.symlink("../../outside", jail / "rel")
    _apply(_tar([("lib/x", "file", b"evil"), ("rel/y", "file", b"evil")]), jail)
    _outside_untouched(jail)
    # an in-root link is followed, as merged-/usr images need
    (jail / "usr" / "lib").mkdir(parents=True)
    os.symlink("usr/lib", jail / "lib2")
    _apply(_tar([("lib2/libc.so", "file", b"ok")]), jail)
    assert (jail / "usr" / "lib" / "libc.so").read_bytes() == b"ok"


def test_final_symlink_is_replaced_not_followed(jail):
    victim = jail.parent / "outside" / "victim"
    os.symlink(str(victim), jail / "f")
    _apply(_tar([("f", "file", b"new")]), jail)
    assert not os.path.lexists(victim) and (jail / "f").read_bytes() == b"new"
    # a hard link may not point outside either
    with pytest.raises(OCIError, match="escapes the root"):
        _apply(_tar([("h", "hard", "../outside/victim")]), jail)
    os.symlink("/", jail / "up")
    with pytest.raises((OCIError, OSError)):
        _apply(_tar([("h2", "hard", "up/../../etc/passwd")]), jail)
    _outside_untouched(jail)


def test_whiteout_through_symlink_stays_inside(jail):
    (jail.parent / "outside" / "keep").write_text("k")
    os.symlink("../outside", jail / "w")
    _apply(_tar([("w/.wh.keep", "file", b""), ("w/.wh..wh..opq", "file", b"")]), jail)
    assert (jail.parent / "outside" / "keep").read_text() == "k"


def test_not_a_tar(jail):
    with pytest.raises(OCIError, match="not a valid tar"):
        _apply(b"\x1f\x8b" + b"garbage" * 100, jail)


def test_layer_cannot_set_overlay_xattrs(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("d")
        ti.type = tarfile.DIRTYPE
        ti.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.trusted.ok": "1"}
        tf.addfile(ti)
    dest = tmp_path / "r"
    dest.mkdir()
    _apply(buf.getvalue(), dest)
    assert os.getxattr(dest / "d", "trusted.ok") == b"1"
    with pytest.raises(OSError):
        os.getxattr(dest / "d", "trusted.overlay.opaque")


def test_overlay_whiteout_mode(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    apply_layer(io.BytesIO(_tar([("a/.wh.x", "file", b""), ("b/.wh..wh..opq", "file", b""),
                                 ("b/keep", "file", b"k")])), None, dest, whiteouts="overlay")
    st = os.lstat(dest / "a" / "x")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dest / "b", "trusted.overlay.opaque") == b"y"
    assert (dest / "b" / "keep").read_bytes() == b"k"


def test_many_directories_bounded_fds(tmp_path):
    entries = []
    for i in range(600):
        entries += [(f"d{i}", "dir", None), (f"d{i}/f", "file", b"x")]
    dest = tmp_path / "r"
    dest.mkdir()
    before = len(os.listdir("/proc/self/fd"))
    _apply(_tar(entries), dest)
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(os.listdir(dest)) == 600


def test_plain_archive_mode_keeps_wh_names(tmp_path):
    dest = tmp_path / "r"
    dest.mkdir()
    (dest / "x").write_text("stays")
    data = _tar([(".wh.x", "file", b"literal"), ("bz/f", "file", b"1")])
    import bz2
    apply_layer(io.BytesIO(bz2.compress(data)), None, dest, whiteouts="none")
    assert (dest / "x").read_text() == "stays" and (dest / ".wh.x").read_bytes() == b"literal"
    assert (dest / "bz" / "f").read_bytes() == b"1"


def test_whiteout_never_hides_same_layer(tmp_path):
    dest = tmp_path / "r"
    dest.mkdir()
    (dest / "-a").write_text("lower")
    # '-' sorts before '.', so the new file precedes its whiteout in the stream
    _apply(_tar([("-a", "file", b"upper"), (".wh.-a", "file", b"")]), dest)
    assert (dest / "-a").read_bytes() == b"upper"
