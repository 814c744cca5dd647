"""Dockerfile behaviours where pybuild must give BuildKit's result (frontend
docker/dockerfile:1): each test builds through the installed `pybuild` and checks what
BuildKit's dockerfile2llb / fsutil copy / shell lexer produce for the same input."""
import io
import os
import socket
import tarfile

from build_e2e import env  # noqa: F401  (fixture)
from build_e2e import busybox_base


# -- item 2: COPY into an existing directory keeps that directory's owner and mode --------

def test_copy_into_existing_dir_keeps_its_metadata(env):
    env.write("f", "F")
    env.dockerfile(busybox_base(env, """\
RUN mkdir /d && chown 5:6 /d && chmod 700 /d
COPY f /d/
RUN touch /d/x && stat -c '%u:%g %a' /d > /seen
"""))
    env.build()
    files = env.rootfs()
    # BuildKit copies into the parent snapshot: /d stays 5:6 0700 for the RUN and in the image
    assert files["seen"].data == b"5:6 700\n"
    assert (files["d"].uid, files["d"].gid, files["d"].mode) == (5, 6, 0o700)
    # the COPY layer itself carries /d with the image's metadata, not a default 0:0 0755
    copy_layer = env.all_layers()[2]
    assert (copy_layer["d"].uid, copy_layer["d"].gid, copy_layer["d"].mode) == (5, 6, 0o700)


# -- item 4: an empty destination is the working directory ----------------------------------

def test_copy_empty_destination_goes_into_workdir(env):
    env.write("f", "F")
    env.dockerfile(busybox_base(env, """\
WORKDIR /var/www
ARG unset
COPY f $unset
RUN test -d /var/www && cat /var/www/f > /seen
"""))
    env.build()
    files = env.rootfs()
    assert files["var/www/f"].data == b"F" and files["seen"].data == b"F"
    assert files["var/www"].isdir


# -- item 8: `\/` in trim and replace patterns ---------------------------------------------

def test_substitution_patterns_with_escaped_slash(env):
    env.dockerfile(r"""FROM scratch
ENV FOO=/a/b/
ENV R1=${FOO//\//-} R2=${FOO%\/} R3=${FOO#\/} R4=${FOO/\//_}
""")
    env.build()
    cfg_env = env.config()["config"]["Env"]
    # BuildKit's convertShellPatternToRegex drops the backslash before `/` as before `}`
    assert "R1=-a-b-" in cfg_env and "R2=/a/b" in cfg_env
    assert "R3=a/b/" in cfg_env and "R4=_a/b/" in cfg_env


# -- item 10: wildcards: Go's filepath.Match for sources, patternmatcher for the rest -------

def test_copy_wildcards_follow_go_semantics(env):
    for name in ("a.txt", "d/b.txt", "d/e/c.txt", "ab", "cb", "!b", "README.md", "docs/x.md"):
        env.write(name, name)
    env.dockerfile("""\
FROM scratch
COPY **/*.txt /g1/
COPY [^a]b /g2/
COPY [!a]b /g3/
COPY a.txt nomatch* /g4/
COPY --exclude=*.md . /g5/
COPY --parents **/*.txt /g6/
COPY --parents nomatch* a.txt /g7/
COPY *.none /g8/
COPY d/*.txt /single
""")
    env.build()
    files = env.rootfs()

    def under(d):
        return sorted(k[len(d) + 1:] for k, m in files.items() if k.startswith(d + "/") and m.isreg)
    # filepath.Match: `**` is `*`, neither crosses `/` (fsutil's ResolveWildcards)
    assert under("g1") == ["b.txt"]
    assert under("g2") == ["!b", "cb"]  # `[^a]` negates
    assert under("g3") == ["!b", "ab"]  # `[!a]` is the class {!, a} in Go
    assert under("g4") == ["a.txt"]  # a wildcard matching nothing beside another source
    # --exclude is matched below the source: `*.md` is top-level only
    assert "g5/README.md" not in files and files["g5/docs/x.md"].data == b"docs/x.md"
    # --parents uses include patterns: `**` crosses directories
    assert under("g6") == ["a.txt", "d/b.txt", "d/e/c.txt"]
    assert under("g7") == ["a.txt"]
    assert "g8" not in files  # a lone wildcard that matches nothing copies nothing
    assert files["single"].data == b"d/b.txt"


def test_more_than_one_source_is_judged_as_written(env):
    env.write("a.txt", "A")
    env.dockerfile("FROM scratch\nCOPY a.txt nomatch* /x\n")
    p = env.build(ok=False)
    assert "Dockerfile:2" in p.stderr and "must end with /" in p.stderr
    assert "Traceback" not in p.stderr


# -- item 11: --chmod symbolic modes, range, parents ---------------------------------------

def test_copy_chmod_symbolic_and_parents(env):
    env.write("f", "F", mode=0o666)
    env.write("x", "X", mode=0o640)
    env.write("tree/sub/g", "G", mode=0o600)
    os.chmod(os.path.join(env.ctx, "tree", "sub"), 0o700)
    env.dockerfile("""\
FROM scratch
COPY --chmod=go-w f /s1
COPY --chmod=u=rw,g=r,o=r f /s2
COPY --chmod=a+X tree /s3/
COPY --chmod=a+X x /s4
COPY --chmod=4755 f /s5
COPY --chmod=700 f /new/sub/f
COPY --chmod=go-w f /sym/new/f
""")
    env.build()
    files = env.rootfs()
    assert files["s1"].mode == 0o644 and files["s2"].mode == 0o644
    # X: execute for directories (and files already executable by someone)
    assert files["s3/sub"].mode == 0o711 and files["s3/sub/g"].mode == 0o600
    assert files["s4"].mode == 0o640
    assert files["s5"].mode == 0o4755
    # fsutil's MkdirAll gets the octal mode for the directories it creates, 0755 otherwise
    assert files["new"].mode == 0o700 and files["new/sub"].mode == 0o700
    assert files["sym"].mode == 0o755 and files["sym/new"].mode == 0o755


def test_copy_chmod_out_of_range_refused(env):
    env.write("f", "F")
    for bad in ("10000", "8", "u+q"):
        env.dockerfile(f"FROM scratch\nCOPY --chmod={bad} f /f\n")
        p = env.build(ok=False)
        assert "Dockerfile:2" in p.stderr and "Traceback" not in p.stderr
    env.dockerfile("FROM scratch\nARG M=10000\nCOPY --chmod=$M f /f\n")
    p = env.build(ok=False)
    assert "between 0 and 07777" in p.stderr


# -- item 12: ADD --chown applies to the members of an archive -----------------------------

def test_add_chown_applies_to_archive_members(env):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        d = tarfile.TarInfo("top")
        d.type, d.mode, d.uid, d.gid = tarfile.DIRTYPE, 0o750, 11, 12
        tf.addfile(d)
        f = tarfile.TarInfo("top/file")
        f.size, f.uid, f.gid, f.mode = 1, 11, 12, 0o640
        tf.addfile(f, io.BytesIO(b"z"))
        ln = tarfile.TarInfo("top/link")
        ln.type, ln.linkname, ln.uid, ln.gid = tarfile.SYMTYPE, "file", 11, 12
        tf.addfile(ln)
    env.write("a.tar", buf.getvalue())
    env.dockerfile("FROM scratch\nADD --chown=7:8 a.tar /out/\nADD a.tar /plain/\n")
    env.build()
    files = env.rootfs()
    for name in ("out/top", "out/top/file", "out/top/link"):
        assert (files[name].uid, files[name].gid) == (7, 8), name
    assert files["out"].uid == 7 and files["out/top/file"].mode == 0o640
    assert (files["plain/top/file"].uid, files["plain/top/file"].gid) == (11, 12)
