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


# -- item 3: WORKDIR creates its directory, owned by the current USER ---------------------

def test_workdir_creates_directory_owned_by_user(env):
    env.write("passwd", "root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n")
    env.dockerfile("""\
FROM scratch
COPY passwd /etc/passwd
WORKDIR /a/b
USER app
WORKDIR /srv/app
WORKDIR /a/b
""")
    env.build(env={"SOURCE_DATE_EPOCH": "1700000000"})
    files = env.rootfs()
    assert files["a/b"].isdir and (files["a/b"].uid, files["a/b"].mode) == (0, 0o755)
    assert (files["srv"].uid, files["srv"].gid) == (1001, 1002)
    assert (files["srv/app"].uid, files["srv/app"].gid, files["srv/app"].mode) == (1001, 1002, 0o755)
    assert files["srv/app"].mtime == 1700000000
    _, cfg = env.manifest()
    hist = [(h["created_by"], bool(h.get("empty_layer"))) for h in cfg["history"]]
    # an existing directory makes no layer
    assert ("WORKDIR /a/b", False) in hist and hist[-1] == ("WORKDIR /a/b", True)


# -- item 5: RUN --mount=from=STAGE: rw is a throwaway view; the key follows content ------

def test_run_mount_from_stage_rw_and_cache_key(env):
    env.write("data.txt", "one")
    df = busybox_base(env, "").replace("FROM scratch\n", "FROM scratch AS base\n", 1) + """\
FROM scratch AS data
ARG NOISE
COPY data.txt /d/data.txt
LABEL noise=$NOISE
FROM base
RUN --mount=from=data,source=/d,target=/m,rw touch /m/new && ls /m > /seen-rw
RUN --mount=from=data,source=/d,target=/m cat /m/data.txt > /out && ls /m > /seen-ro
"""
    env.dockerfile(df)
    env.build("--build-arg", "NOISE=1")
    files = env.rootfs()
    assert files["seen-rw"].data == b"data.txt\nnew\n"
    assert files["seen-ro"].data == b"data.txt\n" and files["out"].data == b"one"
    assert not any(k.startswith("m/") for k in files)
    # the stage's history changed, the mounted content did not: the RUN is cached
    p = env.build("--build-arg", "NOISE=2")
    assert "ls /m > /seen-ro (cached)" in p.stderr
    env.write("data.txt", "two")
    p = env.build("--build-arg", "NOISE=2")
    assert "ls /m > /seen-ro (cached)" not in p.stderr
    assert env.rootfs()["out"].data == b"two"


# -- item 6: ONBUILD with a heredoc; triggers of a stage run in stages FROM it -------------

HEREDOC_TRIGGERS = """\
ONBUILD RUN <<EOT
echo from-heredoc > /hd
EOT
ONBUILD COPY <<EOT /copied
body
EOT
"""


def test_onbuild_heredoc_and_stage_triggers(env):
    env.dockerfile(busybox_base(env, HEREDOC_TRIGGERS))
    env.build(tag="ob:1")
    _, cfg = env.manifest("ob:1")
    assert cfg["config"]["OnBuild"][0] == "RUN <<EOT\necho from-heredoc > /hd\nEOT"
    env.dockerfile("FROM ob:1\n")
    env.build(tag="child:1")
    files = env.rootfs("child:1")
    assert files["hd"].data == b"from-heredoc\n" and files["copied"].data == b"body\n"
    # in one Dockerfile: the base stage's ONBUILD runs in the stage built FROM it
    env.dockerfile(busybox_base(env, "ONBUILD RUN echo stage-trigger > /st\n").replace(
        "FROM scratch\n", "FROM scratch AS base\n", 1) + "FROM base\nRUN cat /st > /seen\n")
    env.build(tag="multi:1")
    files = env.rootfs("multi:1")
    assert files["seen"].data == b"stage-trigger\n"
    _, cfg = env.manifest("multi:1")
    assert "OnBuild" not in cfg["config"]


# -- item 7: a bind mount without target is mounted at the working directory --------------

def test_bind_mount_without_target_uses_workdir(env):
    env.write("ctxfile", "ctx")
    env.dockerfile(busybox_base(env, """\
WORKDIR /work
RUN --mount=type=bind cat /work/ctxfile > /seen
"""))
    env.build()
    files = env.rootfs()
    assert files["seen"].data == b"ctx" and "work/ctxfile" not in files
    env.dockerfile(busybox_base(env, "RUN --mount=type=bind true\n"))
    p = env.build(ok=False)
    assert "invalid mount target" in p.stderr and "Traceback" not in p.stderr


# -- item 13: proxy build args: both spellings in RUN, not in the cache key ----------------

def test_proxy_args_both_spellings_not_in_key(env):
    env.dockerfile(busybox_base(env, 'RUN echo "$http_proxy|$HTTP_PROXY|$no_proxy|$NO_PROXY" > /p\n'))
    env.build("--build-arg", "HTTP_PROXY=http://p:1", "--build-arg", "no_proxy=local")
    assert env.rootfs()["p"].data == b"http://p:1|http://p:1|local|local\n"
    p = env.build("--build-arg", "HTTP_PROXY=http://other:2")
    assert "> /p (cached)" in p.stderr
    assert env.rootfs()["p"].data == b"http://p:1|http://p:1|local|local\n"


# -- item 14: no USER: RUN and unpack agree, root gets its supplementary groups -------------

def test_root_supplementary_groups_in_run_and_unpack(env):
    import json
    env.write("group", "root:x:0:\nwheel:x:10:root\nstaff:x:50:other,root\n")
    env.write("passwd", "root:x:0:0::/root:/bin/sh\n")
    env.dockerfile(busybox_base(env, """\
COPY group passwd /etc/
RUN id -G > /groups
CMD ["true"]
"""))
    env.build()
    assert env.rootfs()["groups"].data.split() == [b"0", b"10", b"50"]
    bundle = os.path.join(env.base, "bundle")
    env.pybuild("unpack", "test:latest", bundle)
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            user = json.load(f)["process"]["user"]
    finally:
        env.pybuild("rm", bundle)  # an overlay bundle: unmounted and forgotten
    assert user == {"uid": 0, "gid": 0, "additionalGids": [10, 50]}


# -- item 15: FROM scratch has BuildKit's default PATH and WorkingDir ----------------------

def test_scratch_config_defaults(env):
    env.dockerfile("FROM scratch\nLABEL a=b\n")
    env.build()
    c = env.config()["config"]
    assert c["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert c["WorkingDir"] == "/"


# -- item 16: TARGETSTAGE is the last stage's name without --target ------------------------

def test_targetstage_defaults_to_last_stage_name(env):
    env.dockerfile("ARG TARGETSTAGE\nFROM scratch AS first\nFROM scratch AS final\n"
                   "ARG TARGETSTAGE\nLABEL t=$TARGETSTAGE\n")
    env.build()
    assert env.config()["config"]["Labels"]["t"] == "final"
    env.dockerfile("FROM scratch\nARG TARGETSTAGE\nLABEL t=$TARGETSTAGE\n")
    env.build()
    assert env.config()["config"]["Labels"]["t"] == "default"


# -- item 17: context sockets; the lower-case dockerfile fallback ---------------------------

def test_context_socket_and_lowercase_dockerfile(env):
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(os.path.join(env.ctx, "s.sock"))
        os.chmod(os.path.join(env.ctx, "s.sock"), 0o750)
        env.write("dockerfile", "FROM scratch\nCOPY . /c/\n")
        env.build()
    finally:
        sock.close()
    files = env.rootfs()
    # fsutil clears the socket bit: an empty regular file with the socket's permissions
    assert files["c/s.sock"].isreg and files["c/s.sock"].size == 0
    assert files["c/s.sock"].mode == 0o750


# -- item 18: SOURCE_DATE_EPOCH as a build arg ----------------------------------------------

def test_source_date_epoch_build_arg(env):
    env.write("f", "F")
    env.dockerfile("FROM scratch\nCOPY f /f\n")
    env.build("--build-arg", "SOURCE_DATE_EPOCH=1600000000")
    assert env.rootfs()["f"].mtime == 1600000000
    assert env.config()["created"].startswith("2020-09-13T12:26:40")
    # an empty value means unset, even over the environment's
    env.build("--build-arg", "SOURCE_DATE_EPOCH=", env={"SOURCE_DATE_EPOCH": "1600000000"})
    assert not env.config()["created"].startswith("2020-09-13")


# -- item 19: the RUN overlay has redirect_dir=off: renaming a lower directory works -------

def test_run_renames_lower_directory(env):
    env.dockerfile(busybox_base(env, """\
RUN mkdir -p /d/sub && echo x > /d/sub/f
RUN mv /d /e
"""))
    env.build()
    files = env.rootfs()
    assert files["e/sub/f"].data == b"x\n" and "d" not in files


# -- beyond BuildKit: why did the cache miss? ---------------------------------------------

def test_cache_miss_is_explained(env):
    import json
    env.write("a.txt", "A")
    env.write("b.txt", "B")
    env.dockerfile(busybox_base(env, """\
ARG V=1
COPY a.txt b.txt /d/
RUN echo $V > /v
"""))
    p = env.build()
    assert "cache miss: no earlier build had this step" in p.stderr
    p = env.build()
    assert "cache miss" not in p.stderr
    # a context file changed: the COPY names it, the RUN after it names its parent
    env.write("b.txt", "B2")
    p = env.build()
    copy_line = next(x for x in p.stderr.splitlines() if "COPY a.txt" in x and "cache miss" in x)
    assert "context files changed: b.txt" in copy_line and "a.txt," not in copy_line
    run_line = next(x for x in p.stderr.splitlines() if "RUN echo" in x and "cache miss" in x)
    assert "the parent changed" in run_line
    # a build arg changed: said with its old and new value, in json progress too
    p = env.pybuild("build", "--progress", "json", "-t", "test:latest", "--build-arg", "V=2",
                    env.ctx)
    misses = {json.loads(x)["text"].split()[0]: json.loads(x)["reasons"]
              for x in p.stdout.splitlines() if '"cache_miss"' in x}
    assert any("V changed: '1' -> '2'" in r for r in misses["RUN"])
    # --explain-cache prints every miss of the build at the end, even when quiet
    env.write("a.txt", "A2")
    p = env.pybuild("build", "-q", "--explain-cache", "--build-arg", "V=2", env.ctx)
    assert "cache: 2 step(s) missed" in p.stderr
    assert "context files changed: a.txt" in p.stderr and "the parent changed" in p.stderr
