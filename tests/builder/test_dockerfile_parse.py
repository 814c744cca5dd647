"""Dockerfile parser: structure, forms, flags, heredocs, directives, positions."""

import textwrap

import pytest

from ocispec.errors import OCIError
from pybuild.dockerfile import ast, parse


def df(text: str) -> ast.Dockerfile:
    return parse(textwrap.dedent(text).lstrip("\n"))


def insts(text: str) -> list[ast.Instruction]:
    return df(text).stages[0].instructions


def one(text: str) -> ast.Instruction:
    (i,) = insts("FROM scratch\n" + textwrap.dedent(text).lstrip("\n"))
    return i


def error(text: str, filename="Dockerfile") -> str:
    with pytest.raises(OCIError) as e:
        parse(textwrap.dedent(text).lstrip("\n"), filename=filename)
    return str(e.value)


# -- structure ---------------------------------------------------------------------------

def test_stages_names_and_global_args():
    d = df("""
        # syntax=docker/dockerfile:1
        ARG BASE=alpine
        ARG V
        FROM ${BASE}:3 AS Builder
        RUN make
        FROM --platform=$BUILDPLATFORM scratch
        COPY --from=builder /out /
    """)
    assert d.directives == {"syntax": "docker/dockerfile:1"}
    assert [a.decls for a in d.global_args] == [[ast.ArgDecl("BASE", "alpine")],
                                                [ast.ArgDecl("V", None)]]
    s0, s1 = d.stages
    assert (s0.index, s0.name, s0.base, s0.platform, s0.line) == (0, "builder", "${BASE}:3", None, 4)
    assert (s1.index, s1.name, s1.base, s1.platform) == (1, None, "scratch", "$BUILDPLATFORM")
    assert [i.kind for i in s0.instructions] == ["RUN"]
    assert isinstance(s1.instructions[0], ast.Copy) and s1.instructions[0].from_ == "builder"
    assert s0.from_.image_pos == (4, 6)


def test_keywords_case_insensitive_and_positions():
    (r,) = insts("""
        from scratch
          run echo hi
    """)
    assert (r.kind, r.line, r.column, r.end_line) == ("RUN", 2, 3, 2)
    assert r.original == "run echo hi"


def test_comments_blank_lines_and_continuations():
    (r, c) = insts("""
        FROM scratch

        # a comment
        RUN apt-get update && \\
            # a comment inside the continuation
            apt-get install -y \\
              curl
        CMD ["sh"]
    """)
    assert r.args == ["apt-get update &&     apt-get install -y       curl"]
    assert (r.line, r.end_line) == (4, 7)
    assert c.line == 8


def test_continuation_at_eof_and_escaped_escape():
    (r,) = insts("FROM scratch\nRUN something \\")
    assert r.args == ["something"]
    (r, c) = insts("FROM scratch\nRUN echo \\\\\nCMD x\n")
    assert r.args == ["echo \\\\"] and c.kind == "CMD"


def test_empty_continuation_line_is_a_warning():
    d = df("FROM scratch\nRUN a \\\n\n  b \\\n\n c\nRUN x \\\n# comment\n y\n")
    assert d.stages[0].instructions[0].args == ["a   b  c"]
    assert d.warnings == ['Dockerfile:3: empty continuation line in "RUN a   b  c"']


def test_crlf_and_bom():
    d = parse("\ufeffFROM scratch\r\nRUN a \\\r\n b\r\n")
    assert d.stages[0].instructions[0].args == ["a  b"]


# -- directives --------------------------------------------------------------------------

def test_escape_backtick():
    (r, w, c) = insts("""
        # escape=`
        FROM scratch
        RUN dir c:\\ `
            && echo hi
        WORKDIR c:\\windows\\
        COPY a.txt c:\\dest\\
    """)
    assert r.args == ["dir c:\\     && echo hi"]
    assert w.path == "c:\\windows\\"
    assert c.dest == "c:\\dest\\"


def test_directives_only_at_top():
    d = df("""
        # check=skip=all
        # syntax = docker/dockerfile:1.7
        FROM scratch
        # escape=`
        RUN a \\
          b
    """)
    assert d.directives == {"check": "skip=all", "syntax": "docker/dockerfile:1.7"}
    assert d.escape == "\\"
    assert d.stages[0].instructions[0].args == ["a   b"]


def test_directive_may_be_indented():
    d = df("  # escape=`\nFROM scratch\nRUN a `\n b\n")
    assert d.escape == "`" and d.stages[0].instructions[0].args == ["a  b"]
    assert error("  # escape=x\nFROM scratch\n").startswith("Dockerfile:1:12:")


def test_directive_after_comment_is_a_comment():
    d = df("# hello\n# escape=`\nFROM scratch\n")
    assert d.directives == {} and d.escape == "\\"


def test_unknown_directive_ends_directives():
    d = df("# foo=bar\n# syntax=x\nFROM scratch\n")
    assert d.directives == {}


def test_directive_errors():
    assert error("# escape=x\nFROM scratch\n").startswith("Dockerfile:1:10: invalid escape token")
    assert "only one syntax parser directive" in error("# syntax=a\n# syntax=b\nFROM scratch\n")


# -- shell and JSON forms ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["RUN", "CMD", "ENTRYPOINT"])
def test_json_and_shell_forms(kind):
    i = one(f'{kind} ["echo", "a b"]')
    assert i.json_form and i.args == ["echo", "a b"] and i.command == ["echo", "a b"]
    i = one(f"{kind} echo 'a b'")
    assert not i.json_form and i.args == ["echo 'a b'"] and i.command == "echo 'a b'"


@pytest.mark.parametrize("text", ['["echo", "a"', "[echo, a]", "['echo']", '["a" "b"]'])
def test_invalid_json_falls_back_to_shell_form(text):
    i = one("CMD " + text)
    assert not i.json_form and i.args == [text]


def test_json_array_of_non_strings_is_an_error():
    assert "must hold only strings" in error('FROM scratch\nCMD ["a", 1]\n')


def test_json_escapes():
    i = one(r'CMD ["a\"b", "\u00e9", "c\\d"]')
    assert i.args == ['a"b', "é", "c\\d"]


def test_shell_requires_json():
    assert one('SHELL ["/bin/bash", "-c"]').shell == ["/bin/bash", "-c"]
    assert "SHELL requires the arguments in JSON form" in error("FROM scratch\nSHELL /bin/sh -c\n")


# -- ENV, LABEL, ARG -------------------------------------------------------------------

def test_env_pairs_raw_values():
    e = one('ENV a=1 b="x y" c=${a} d=\\$x e=')
    assert [(p.key, p.value) for p in e.pairs] == [
        ("a", "1"), ("b", '"x y"'), ("c", "${a}"), ("d", "\\$x"), ("e", "")]
    assert not any(p.legacy for p in e.pairs)


def test_env_legacy_form():
    e = one("ENV MY_VAR some value with spaces")
    assert e.pairs == [ast.KeyValue("MY_VAR", "some value with spaces", legacy=True)]
    assert "ENV must have two arguments" in error("FROM scratch\nENV ONLYKEY\n")


def test_env_errors():
    assert "can't find = in" in error("FROM scratch\nENV a=1 b\n")
    assert "name can't be blank" in error("FROM scratch\nENV =x\n")


def test_label_pairs_with_quoted_keys_and_continuations():
    lab = one('LABEL "com.example.vendor"="ACME Inc" version=1.0 \\\n  description="multi\\\n line"')
    assert [(p.key, p.value) for p in lab.pairs] == [
        ('"com.example.vendor"', '"ACME Inc"'), ("version", "1.0"),
        ("description", '"multi line"')]


def test_arg_decls():
    a = one("ARG A B=2 C=\"x y\"")
    assert a.decls == [ast.ArgDecl("A"), ast.ArgDecl("B", "2"), ast.ArgDecl("C", '"x y"')]


# -- COPY / ADD ------------------------------------------------------------------------

def test_copy_flags_and_sources():
    c = one("COPY --from=build --chown=app:app --chmod=0644 --link --exclude=*.tmp "
            "--exclude=.git --parents a b* dir/ /dest/")
    assert isinstance(c, ast.Copy) and not isinstance(c, ast.Add)
    assert c.sources == ["a", "b*", "dir/"] and c.dest == "/dest/"
    assert (c.from_, c.chown, c.chmod, c.link, c.parents) == ("build", "app:app", "0644", True, True)
    assert c.exclude == ["*.tmp", ".git"]
    assert c.flags["exclude"] == ["*.tmp", ".git"]


def test_copy_json_form_and_spaces():
    c = one('COPY ["my file", "other", "/d st/"]')
    assert c.json_form and c.sources == ["my file", "other"] and c.dest == "/d st/"


def test_copy_needs_two_args():
    assert "COPY requires at least two arguments" in error("FROM scratch\nCOPY onlyone\n")


def test_copy_link_false_and_bool_errors():
    assert one("COPY --link=false a b").link is False
    assert "expects true or false" in error("FROM scratch\nCOPY --link=maybe a b\n")


def test_add_flags():
    a = one("ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false https://x/y.tar /d")
    assert isinstance(a, ast.Add)
    assert (a.checksum, a.keep_git_dir, a.unpack) == ("sha256:abc", True, False)
    assert a.sources == ["https://x/y.tar"]
    assert "ADD: unknown flag --from" in error("FROM scratch\nADD --from=x a b\n")


def test_flag_quoting_and_double_dash():
    c = one('COPY --chown="a b" -- --weird /d')
    assert c.chown == "a b" and c.sources == ["--weird"]


# -- other instructions ----------------------------------------------------------------

def test_expose_volume_user_workdir_stopsignal_maintainer():
    d = insts("""
        FROM scratch
        EXPOSE 80/tcp 443 ${PORT}/udp
        VOLUME ["/data", "/logs"]
        VOLUME /a /b
        USER app:staff
        USER 1000
        WORKDIR /srv/$APP
        STOPSIGNAL SIGTERM
        MAINTAINER Jane <jane@example.com>
    """)
    ex, v1, v2, u1, u2, w, s, m = d
    assert ex.ports == ["80/tcp", "443", "${PORT}/udp"]
    assert v1.paths == ["/data", "/logs"] and v1.json_form
    assert v2.paths == ["/a", "/b"] and not v2.json_form
    assert (u1.user, u1.group) == ("app", "staff") and (u2.user, u2.group) == ("1000", None)
    assert w.path == "/srv/$APP"
    assert s.signal == "SIGTERM"
    assert m.name == "Jane <jane@example.com>"


def test_volume_empty_string():
    assert "VOLUME specified can not be an empty string" in error('FROM scratch\nVOLUME [""]\n')


def test_healthcheck():
    h = one("HEALTHCHECK --interval=30s --timeout=1m30s --start-period=5s "
            "--start-interval=500ms --retries=3 CMD curl -f http://localhost/ || exit 1")
    assert h.test == ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]
    assert (h.interval, h.timeout, h.start_period, h.start_interval, h.retries) == (
        30_000_000_000, 90_000_000_000, 5_000_000_000, 500_000_000, 3)
    h = one('HEALTHCHECK cmd ["/check", "-q"]')
    assert h.test == ["CMD", "/check", "-q"] and h.interval is None
    h = one("HEALTHCHECK NONE")
    assert h.none and h.test == ["NONE"]
    h = one("HEALTHCHECK --interval=0s CMD true")
    assert h.interval == 0


@pytest.mark.parametrize("line,msg", [
    ("HEALTHCHECK NONE extra", "HEALTHCHECK NONE takes no arguments"),
    ("HEALTHCHECK CONNECT TCP 7000", 'unknown type "CONNECT" in HEALTHCHECK'),
    ("HEALTHCHECK --interval=10 CMD x", 'invalid duration "10"'),
    ("HEALTHCHECK --interval=10us CMD x", "cannot be less than 1ms"),
    ("HEALTHCHECK --retries=-1 CMD x", "cannot be negative"),
    ("HEALTHCHECK --retries=x CMD x", "expected a number"),
    ("HEALTHCHECK CMD", "HEALTHCHECK CMD requires a command"),
])
def test_healthcheck_errors(line, msg):
    assert msg in error("FROM scratch\n" + line + "\n")


def test_onbuild():
    o = one("ONBUILD COPY --chown=1 . /app")
    assert isinstance(o, ast.Onbuild) and o.expression == "COPY --chown=1 . /app"
    assert isinstance(o.trigger, ast.Copy) and o.trigger.chown == "1"
    assert (o.trigger.line, o.trigger.column) == (2, 9)
    assert "chaining ONBUILD" in error("FROM scratch\nONBUILD ONBUILD RUN x\n")
    assert "FROM isn't allowed as an ONBUILD trigger" in error("FROM scratch\nONBUILD FROM x\n")
    assert error("FROM scratch\nONBUILD RUNN x\n").startswith("Dockerfile:2:9: unknown instruction")


# -- RUN flags ---------------------------------------------------------------------------

def test_run_mounts():
    r = one("RUN --mount=type=cache,target=/root/.cache,sharing=locked,id=pip "
            "--mount=type=bind,from=build,source=/out,target=/in,rw "
            "--mount=type=tmpfs,target=/tmp,size=64m "
            "--mount=type=secret,id=token,required "
            "--mount=target=/ctx "
            "--mount=type=cache,target=/c,mode=0755,uid=1000,gid=1000 "
            "--network=none --security=insecure make")
    cache, bind, tmpfs, secret, default, cache2 = r.mounts
    assert (cache.type, cache.target, cache.sharing, cache.id, cache.readonly) == (
        "cache", "/root/.cache", "locked", "pip", False)
    assert (bind.type, bind.from_, bind.source, bind.target, bind.readonly) == (
        "bind", "build", "/out", "/in", False)
    assert (tmpfs.type, tmpfs.size) == ("tmpfs", 64 * 1024 * 1024)
    assert (secret.type, secret.id, secret.required, secret.target) == (
        "secret", "token", True, "/run/secrets/token")
    assert (default.type, default.readonly) == ("bind", True)
    assert (cache2.mode, cache2.uid, cache2.gid, cache2.id) == (0o755, 1000, 1000, "/c")
    assert (r.network, r.security, r.command) == ("none", "insecure", "make")
    assert r.flags["mount"][0] == "type=cache,target=/root/.cache,sharing=locked,id=pip"


@pytest.mark.parametrize("flag,msg", [
    ("--mount=type=nfs,target=/x", 'unsupported mount type "nfs"'),
    ("--mount=type=bind,target=/x,mode=0700", "mode not allowed"),
    ("--mount=type=bind,target=/x,sharing=locked", "invalid cache sharing"),
    ("--mount=type=cache,target=/x,sharing=wild", 'unsupported sharing value "wild"'),
    ("--mount=type=tmpfs,target=/x,size=huge", 'invalid size "huge"'),
    ("--mount=type=bind,target=/x,required", "unexpected key 'required'"),
    ("--mount=type=secret,from=x,id=a", "secret mount should not have a from"),
    ("--mount=type=bind,target=/x,bogus=1", 'unexpected key "bogus"'),
    ("--mount=type=bind,target=/x,flag", 'invalid field "flag"'),
    ("--network=bridge", 'unsupported network mode "bridge"'),
    ("--security=wide", 'unsupported security mode "wide"'),
])
def test_run_flag_errors(flag, msg):
    e = error(f"FROM scratch\nRUN {flag} true\n")
    assert msg in e and e.startswith("Dockerfile:2:5: RUN: --")


# -- heredocs --------------------------------------------------------------------------

def test_heredoc_run_script():
    (r, c) = insts("""
        FROM scratch
        RUN <<EOF
        apt-get update
        # not a Dockerfile comment
        echo $HOME
        EOF
        CMD x
    """)
    assert r.args == ["<<EOF"]
    (h,) = r.heredocs
    assert (h.name, h.expand, h.chomp, h.path) == ("EOF", True, False, None)
    assert h.content == "apt-get update\n# not a Dockerfile comment\necho $HOME\n"
    assert (r.line, r.end_line, c.line) == (2, 6, 7)


def test_heredoc_chomp_and_quoted_delimiters():
    text = "FROM scratch\nRUN <<-'A' python3 - <<\"B\"\n\tone $X\n\tA\n\ttwo\nB\n"
    (r,) = parse(text).stages[0].instructions
    a, b = r.heredocs
    assert (a.name, a.content, a.chomp, a.expand) == ("A", "one $X\n", True, False)
    assert (b.name, b.content, b.chomp, b.expand) == ("B", "\ttwo\n", False, False)


@pytest.mark.parametrize("marker,name,expand", [
    ("<<EOF", "EOF", True), ("<<'EOF'", "EOF", False), ('<<"EOF"', "EOF", False),
    ("<<eo'f'", "eof", False), ("<<eo\\'f", "eo'f", True), ("<<  EOF", "EOF", True),
    ("3<<EOF", "EOF", True), ("<<$EOF", "$EOF", True),
])
def test_heredoc_delimiter_forms(marker, name, expand):
    (r,) = parse(f"FROM scratch\nRUN {marker}\nbody\n{name}\n").stages[0].instructions
    (h,) = r.heredocs
    assert (h.name, h.expand, h.content) == (name, expand, "body\n")
    assert h.fd == (3 if marker.startswith("3") else 0)


def test_several_spaced_heredocs_on_one_line():
    (r,) = parse("FROM scratch\nRUN cat << A - << 'B' > out\na\nA\nb\nB\n").stages[0].instructions
    assert [(h.name, h.content, h.expand) for h in r.heredocs] == [("A", "a\n", True),
                                                                    ("B", "b\n", False)]


def test_heredoc_not_in_quotes_or_json():
    (r1, r2) = insts("""
        FROM scratch
        RUN echo "<<NOT"
        RUN ["<<EOF"]
    """)
    assert r1.heredocs == [] and r2.heredocs == []


def test_copy_heredocs():
    (c,) = insts("""
        FROM scratch
        COPY --chmod=755 <<one.sh <<'two.sh' /usr/bin/
        echo $one
        one.sh
        echo $two
        two.sh
    """)
    assert c.sources == [] and c.dest == "/usr/bin/"
    assert [(h.name, h.path, h.content, h.expand) for h in c.heredocs] == [
        ("one.sh", "one.sh", "echo $one\n", True), ("two.sh", "two.sh", "echo $two\n", False)]


def test_copy_mixes_files_and_heredocs():
    (c,) = insts("""
        FROM scratch
        COPY a.txt <<X b.txt /d/
        x
        X
    """)
    assert c.sources == ["a.txt", "b.txt"] and [h.path for h in c.heredocs] == ["X"]


def test_heredoc_delimiter_lines_swap():
    (c,) = insts("""
        FROM scratch
        COPY <<X <<Y /dest
        Y
        X
        X
        Y
    """)
    assert [(h.name, h.content) for h in c.heredocs] == [("X", "Y\n"), ("Y", "X\n")]


def test_heredoc_errors():
    e = error("FROM scratch\nRUN echo hi && cat <<EOF\nbody\n")
    assert e.startswith('Dockerfile:2:20: unterminated heredoc "EOF"')
    assert "cannot take a heredoc as the destination" in error(
        "FROM scratch\nCOPY a <<EOF\nx\nEOF\n")


def test_onbuild_heredoc():
    (o,) = insts("FROM scratch\nONBUILD RUN <<EOF\necho hi\nEOF\n")
    assert o.trigger.heredocs[0].content == "echo hi\n" and o.end_line == 4


# -- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("FROM scratch\nRUNN x\n", 'Dockerfile:2:1: unknown instruction "RUNN" (did you mean RUN?)'),
    ("FROM scratch\n  COPPY a b\n", 'Dockerfile:2:3: unknown instruction "COPPY" (did you mean COPY?)'),
    ("FROM scratch\nBOGUS\n", 'Dockerfile:2:1: unknown instruction "BOGUS"'),
    ("RUN x\nFROM scratch\n", "Dockerfile:1:1: RUN before the first FROM"),
    ("", "Dockerfile:1:1: file with no instructions"),
    ("# only\n\n# comments\n", "file with no instructions"),
    ("ARG X=1\n", "Dockerfile:1:1: no FROM instruction"),
    ("FROM\n", "FROM requires at least one argument"),
    ("FROM a b\n", "FROM requires either one or three arguments"),
    ("FROM a AS 1bad\n", 'Dockerfile:1:11: invalid stage name "1bad"'),
    ("FROM a AS x\nFROM b AS X\n", "Dockerfile:2:1: duplicate stage name \"x\""),
    ("FROM scratch\nCOPY --fro=x a b\n", "Dockerfile:2:6: COPY: unknown flag --fro (did you mean --from?)"),
    ("FROM scratch\nCOPY --from a b\n", "Dockerfile:2:6: COPY: missing a value on flag --from"),
    ("FROM scratch\nCOPY --from=a --from=b a b\n", "Dockerfile:2:15: COPY: duplicate flag --from"),
    ("FROM scratch\nENV --x=1 a=b\n", "Dockerfile:2:5: ENV: unknown flag --x (ENV takes no flags)"),
    ("FROM scratch\nRUN\n", "Dockerfile:2:1: RUN requires at least one argument"),
    ("FROM scratch\nRUN a \\\n  --b \\\n  && c\nCOPY \\\n  --nope=1 a b\n", "Dockerfile:6:3: COPY: unknown flag --nope"),
])
def test_error_positions(text, want):
    e = error(text)
    if want.startswith("Dockerfile"):
        assert e.startswith(want)
    else:
        assert want in e and e.startswith("Dockerfile:1:1: ")


def test_error_uses_filename():
    assert error("FROM scratch\nRUNN x\n", filename="build/Containerfile").startswith(
        "build/Containerfile:2:1:")


def test_parse_is_pure_and_repeatable():
    text = "FROM scratch\nRUN --mount=type=cache,target=/c x\n"
    assert parse(text) == parse(text)


def test_lookup_helpers():
    d = df("FROM a AS Build\nFROM b\nCOPY --exclude=x --exclude=y a b\n")
    assert d.stage("build").index == 0 and d.stage("BUILD").index == 0
    assert d.stage("1").index == 1 and d.stage("2") is None and d.stage("nope") is None
    c = d.stages[1].instructions[0]
    assert c.flag("exclude") == "y" and c.flag("from") is None and c.flag("from", "ctx") == "ctx"
    assert c.flag_pos["exclude"] == [(3, 6), (3, 18)]


def test_mount_error_points_at_its_flag():
    e = error("FROM scratch\nRUN --mount=type=cache,target=/a --mount=type=nfs true\n")
    assert e.startswith('Dockerfile:2:34: RUN: --mount: unsupported mount type "nfs"')


def test_mount_csv_quoting():
    # the flag word loses one level of quotes (as in BuildKit), CSV the next
    r = one('RUN --mount=type=bind,\'"source=a,b"\',target=/x true')
    assert r.mounts[0].source == "a,b"
    assert "invalid field" in error('FROM scratch\nRUN --mount=type=bind,"source=a,b",target=/x true\n')
