"""COPY and ADD end to end: sources, destinations, owners, modes, archives, URLs."""
import bz2
import functools
import gzip
import http.server
import io
import lzma
import os
import tarfile
import threading

import pytest
import zstandard

from build_e2e import env  # noqa: F401  (fixture)
from build_e2e import busybox_base


def test_copy_file_dir_and_wildcards(env):
    env.write("a.txt", "A")
    env.write("b.txt", "B")
    env.write("c.md", "C")
    env.write("dir/sub/x", "X", mode=0o600)
    env.write("dir/y", "Y")
    os.symlink("y", os.path.join(env.ctx, "dir", "link"))
    env.dockerfile("""\
FROM scratch
COPY a.txt /single
COPY *.txt /many/
COPY dir /contents
COPY dir/ /contents2/
WORKDIR /w
COPY c.md rel
COPY --chmod=750 a.txt b.txt /modes/
""")
    env.build()
    files = env.rootfs()
    assert files["single"].data == b"A"
    assert files["many/a.txt"].data == b"A" and files["many/b.txt"].data == b"B"
    assert "many/c.md" not in files
    # a directory source copies its contents, not the directory itself
    assert files["contents/sub/x"].data == b"X" and files["contents/y"].data == b"Y"
    assert files["contents/sub/x"].mode == 0o600
    assert files["contents/link"].issym and files["contents/link"].linkname == "y"
    assert "contents/dir" not in files and files["contents2/y"].data == b"Y"
    assert files["w/rel"].data == b"C"
    assert files["modes/a.txt"].mode == 0o750 and files["modes/b.txt"].mode == 0o750
    # context files belong to root in the image whoever owns them on the host
    assert all(m.uid == 0 and m.gid == 0 for m in files.values())


def test_copy_chown_names_exclude_parents(env):
    env.write("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1234:2345::/home/app:/bin/sh\n")
    env.write("etc/group", "root:x:0:\nstaff:x:50:app\n")
    env.write("src/keep.py", "k")
    env.write("src/skip.pyc", "s")
    env.write("src/deep/more.py", "m")
    env.write("src/deep/junk.pyc", "j")
    env.dockerfile("""\
FROM scratch
COPY etc /etc/
COPY --chown=app src/keep.py /o/named
COPY --chown=app:staff src/keep.py /o/group
COPY --chown=42:43 src/keep.py /o/numeric
COPY --exclude=*.pyc src /ex/
COPY --exclude=**/*.pyc src /ex2/
COPY --parents src/deep/more.py /par/
COPY --parents ./src/./deep/more.py /pivot/
""")
    env.build()
    f = env.rootfs()
    assert (f["o/named"].uid, f["o/named"].gid) == (1234, 2345)
    assert (f["o/group"].uid, f["o/group"].gid) == (1234, 50)
    assert (f["o/numeric"].uid, f["o/numeric"].gid) == (42, 43)
    assert "ex/keep.py" in f and "ex/deep/more.py" in f
    # patternmatcher's rules, relative to the source: `*` stays in one directory (BuildKit)
    assert "ex/skip.pyc" not in f and "ex/deep/junk.pyc" in f
    assert "ex2/skip.pyc" not in f and "ex2/deep/junk.pyc" not in f and "ex2/keep.py" in f
    assert f["par/src/deep/more.py"].data == b"m"
    assert f["pivot/deep/more.py"].data == b"m"


def test_copy_unknown_user_fails(env):
    env.write("f", "x")
    env.dockerfile("FROM scratch\nCOPY --chown=nobody f /f\n")
    p = env.build(ok=False)
    assert "Dockerfile:2" in p.stderr and "nobody" in p.stderr


def test_copy_dest_through_symlinks_stays_in_rootfs(env):
    env.write("f", "payload")
    env.dockerfile(busybox_base(env, """\
RUN ln -s / /escape && ln -s ../../../../../tmp /dotdot && mkdir /real && ln -s /real /abs
COPY f /escape/etc/
COPY f /dotdot/
COPY f /abs/
"""))
    env.build()
    files = env.rootfs()
    # /escape -> / inside the image: the file lands in the image's /etc, nowhere else
    assert files["etc/f"].data == b"payload"
    assert files["tmp/f"].data == b"payload"
    assert files["real/f"].data == b"payload"
    assert not os.path.exists("/etc/f") or open("/etc/f").read() != "payload"


def test_copy_dest_dotdot_stays_in_rootfs(env):
    env.write("f", "dots")
    env.dockerfile("FROM scratch\nWORKDIR /a/b\nCOPY f ../../../../../../outside\n"
                   "COPY f /../../up/\n")
    env.build()
    files = env.rootfs()
    assert files["outside"].data == b"dots" and files["up/f"].data == b"dots"
    assert not any(name.startswith("..") for name in files)


def test_copy_source_outside_context_fails(env):
    env.dockerfile("FROM scratch\nCOPY ../../etc/passwd /x\n")
    p = env.build(ok=False)
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("Dockerfile:2: COPY") and "outside the build context" in last


def test_copy_missing_source_and_no_match(env):
    env.dockerfile("FROM scratch\nCOPY nothere /x\n")
    p = env.build(ok=False)
    assert "Dockerfile:2" in p.stderr and "nothere" in p.stderr
    # a wildcard that matches nothing copies nothing (BuildKit's AllowEmptyWildcard)
    env.dockerfile("FROM scratch\nCOPY *.none /x/\n")
    env.build()
    assert "x" not in env.rootfs()


def test_copy_heredoc(env):
    env.dockerfile("""\
FROM scratch
ARG WHO=world
COPY <<EOF /greeting
hello $WHO
EOF
""")
    env.build()
    assert env.rootfs()["greeting"].data == b"hello world\n"


def test_dockerignore_with_exceptions(env):
    env.write("keep.txt", "k")
    env.write("secret.key", "s")
    env.write("logs/a.log", "a")
    env.write("logs/important.log", "i")
    env.write(".dockerignore", "*.key\nlogs\n!logs/important.log\n")
    env.dockerfile("FROM scratch\nCOPY . /app/\n")
    env.build()
    files = env.rootfs()
    assert "app/keep.txt" in files
    assert "app/secret.key" not in files
    assert "app/logs/a.log" not in files
    assert files["app/logs/important.log"].data == b"i"


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("pkg/bin/tool", b"#!/bin/sh\necho tool\n"), ("pkg/README", b"doc")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o755 if "bin" in name else 0o644
            ti.uid = 7
            tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("pkg/link")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "README"
        tf.addfile(ti)
    return buf.getvalue()


def test_add_extracts_archives_by_content(env):
    raw = _tar_bytes()
    # names lie about the format on purpose: detection is by content
    env.write("plain.bin", raw)
    env.write("gz.dat", gzip.compress(raw))
    env.write("xz.tar.gz", lzma.compress(raw))
    env.write("bz.zip", bz2.compress(raw))
    env.write("zst.xz", zstandard.ZstdCompressor().compress(raw))
    notatar = gzip.compress(b"just text")
    env.write("notatar.gz", notatar)
    env.dockerfile("""\
FROM scratch
ADD plain.bin /t/
ADD gz.dat /g/
ADD xz.tar.gz /x/
ADD bz.zip /b/
ADD zst.xz /z/
ADD notatar.gz /n/
COPY gz.dat /c/
""")
    env.build()
    files = env.rootfs()
    for d in "tgxbz":
        assert files[f"{d}/pkg/bin/tool"].data.startswith(b"#!/bin/sh"), d
        assert files[f"{d}/pkg/bin/tool"].mode == 0o755 and files[f"{d}/pkg/bin/tool"].uid == 7
        assert files[f"{d}/pkg/link"].linkname == "README"
    assert files["n/notatar.gz"].data == notatar
    assert "c/gz.dat" in files and "c/pkg" not in files  # COPY never extracts


def test_add_archive_cannot_escape(env):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("../../evil")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"e"))
    env.write("evil.tar", buf.getvalue())
    env.dockerfile("FROM scratch\nADD evil.tar /x/\n")
    p = env.build(ok=False)
    assert "Dockerfile:2" in p.stderr and "outside" in p.stderr


@pytest.fixture
def http_dir(tmp_path):
    (tmp_path / "file.txt").write_bytes(b"served content\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_add_url_with_checksum(env, http_dir):
    import hashlib
    good = "sha256:" + hashlib.sha256(b"served content\n").hexdigest()
    env.dockerfile(f"FROM scratch\nADD --checksum={good} {http_dir}/file.txt /dl/\n")
    env.build()
    f = env.rootfs()["dl/file.txt"]
    assert f.data == b"served content\n" and f.mode == 0o600
    bad = "sha256:" + "0" * 64
    env.dockerfile(f"FROM scratch\nADD --checksum={bad} {http_dir}/file.txt /dl/\n")
    p = env.build(ok=False, tag="bad:1")
    assert "Dockerfile:2" in p.stderr and "checksum" in p.stderr
    assert not any(m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "bad:1"
                   for m in env.index()["manifests"])
