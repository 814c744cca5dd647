"""Stage graph and ARG/ENV scoping."""

import textwrap

import pytest

from ocispec.errors import OCIError
from pybuild.dockerfile import Scope, parse, parse_platform, plan, predefined_args


def df(text: str):
    return parse(textwrap.dedent(text).lstrip("\n"))


def plan_error(text: str, **kw) -> str:
    with pytest.raises(OCIError) as e:
        plan(df(text), **kw)
    return str(e.value)


MULTI = """
    ARG GO=1.22
    FROM golang:${GO} AS build
    RUN go build
    FROM alpine:3 AS assets
    RUN make assets
    FROM build AS test
    RUN go test
    FROM scratch AS final
    COPY --from=build /app /app
    COPY --from=1 /assets /assets
    FROM debian AS unrelated
"""


# -- stage graph -------------------------------------------------------------------------

def test_target_needs_only_its_stages():
    p = plan(df(MULTI), target="final")
    assert [s.index for s in p.stages] == [0, 1, 3]
    assert p.target.index == 3 and p.target.base_kind == "scratch"
    assert p.target.deps == [0, 1]
    assert p.levels == [[0, 1], [3]]  # build and assets are independent
    assert p.images == ["golang:1.22", "alpine:3"]


def test_default_target_is_last_stage():
    p = plan(df(MULTI))
    assert [s.index for s in p.stages] == [4] and p.images == ["debian"]


def test_from_stage_dependency():
    p = plan(df(MULTI), target="test")
    assert [s.index for s in p.stages] == [0, 2]
    t = p.target
    assert (t.base_kind, t.base_stage, t.base) == ("stage", 0, "build")
    assert p.levels == [[0], [2]]


def test_global_arg_and_build_arg_in_from():
    p = plan(df(MULTI), target="build", build_args={"GO": "1.21"})
    assert p.target.base == "golang:1.21"


def test_copy_from_image_and_mount_from():
    p = plan(df("""
        FROM alpine AS a
        FROM scratch
        COPY --from=busybox:1.36 /bin/busybox /bin/
        RUN --mount=type=bind,from=a,target=/a --mount=type=cache,target=/c,from=oci:/srv/img:v1 true
    """))
    t = p.target
    assert t.deps == [0] and t.images == ["busybox:1.36", "oci:/srv/img:v1"]
    assert p.images == ["alpine", "busybox:1.36", "oci:/srv/img:v1"]


def test_stage_names_case_insensitive():
    p = plan(df("FROM alpine AS Build\nFROM scratch\nCOPY --from=BUILD /a /b\n"), target="BUILD")
    assert p.target.index == 0


def test_oci_layout_base():
    p = plan(df("ARG DIR=./img\nFROM oci:${DIR}:latest\n"))
    assert p.target.base == "oci:./img:latest" and p.target.base_kind == "image"


@pytest.mark.parametrize("text,kw,want", [
    ("FROM a AS builder\nFROM b\nCOPY --from=buidler /a /b\n", {},
     'Dockerfile:3:6: --from: unknown stage "buidler" (did you mean builder? '),
    ("FROM a\nCOPY --from=later /a /b\nFROM b AS later\n", {},
     'Dockerfile:2:6: --from: stage "later" is defined after the current stage "0"'),
    ("FROM a AS me\nCOPY --from=me /a /b\n", {},
     "Dockerfile:2:6: --from: circular dependency: stage \"me\" refers to itself"),
    ("FROM a\nCOPY --from=0 /a /b\n", {}, "circular dependency"),
    ("FROM a\nCOPY --from=5 /a /b\n", {}, "--from: invalid stage index 5"),
    ("FROM later\nFROM b AS later\n", {}, 'Dockerfile:1:6: FROM: stage "later" is defined after'),
    ("ARG X=1\nFROM a\nCOPY --from=$X /a /b\n", {}, "variable expansion is not supported"),
    ("FROM a\nRUN --mount=from=nope,target=/x,type=bind true\nFROM b AS nape\n", {},
     'Dockerfile:2:5: --mount from: unknown stage "nope"'),
    ("FROM ${EMPTY}\n", {}, "Dockerfile:1:6: base name (${EMPTY}) should not be blank"),
    ("FROM ${X:?setX}\n", {}, "Dockerfile:1:6: failed to process"),
    ("FROM a AS app\n", {"target": "ap"}, "target stage \"ap\" could not be found (did you mean app?)"),
    ("FROM --platform=linux/nope a\n", {}, "Dockerfile:1:6: --platform: invalid platform"),
    ("FROM a\n", {"platform": "windows/sparc"}, "--platform: invalid platform"),
])
def test_graph_errors(text, kw, want):
    assert want in plan_error(text, **kw)


def test_from_near_a_stage_name_is_a_warning():
    p = plan(df("FROM debian AS base\nFROM bash\nCOPY --from=base:5 /a /b\n"))
    assert p.target.base_kind == "image" and p.images == ["bash", "base:5"]
    assert p.warnings == ["Dockerfile:2:6: FROM bash: no stage has this name, using it as an "
                          "image (did you mean stage base?)"]


def test_plan_carries_parse_warnings():
    p = plan(df("FROM a\nRUN x \\\n\n y\n"))
    assert p.warnings == ['Dockerfile:3: empty continuation line in "RUN x  y"']


def test_unrelated_image_names_are_not_typos():
    p = plan(df("FROM debian AS debian-build\nFROM debian\nCOPY --from=nginx /a /b\n"))
    assert p.target.base_kind == "image" and p.target.images == ["nginx"]


def test_onbuild_triggers_of_a_base_stage_add_dependencies():
    p = plan(df("""
        FROM alpine AS tools
        FROM scratch AS lib
        ONBUILD COPY --from=tools /bin/tool /bin/
        FROM lib
    """))
    assert [s.index for s in p.stages] == [0, 1, 2] and p.target.deps == [0, 1]
    # a trigger is only an error where it runs
    assert plan(df("FROM scratch AS lib\nONBUILD COPY --from=nowhere1 /a /b\n")).target.images == []


def test_levels_allow_parallel_chains():
    p = plan(df("""
        FROM a AS x1
        FROM x1 AS x2
        FROM b AS y1
        FROM scratch
        COPY --from=x2 /a /a
        COPY --from=y1 /b /b
    """))
    assert p.levels == [[0, 2], [1], [3]]


# -- predefined args and platforms ------------------------------------------------------

def test_platform_args():
    a = predefined_args(platform="linux/arm/v7", build_platform="linux/amd64", target="app")
    assert a == {"BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux", "BUILDARCH": "amd64",
                 "BUILDVARIANT": "", "TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux",
                 "TARGETARCH": "arm", "TARGETVARIANT": "v7", "TARGETSTAGE": "app"}
    assert predefined_args(build_platform="linux/arm64")["TARGETPLATFORM"] == "linux/arm64"


@pytest.mark.parametrize("spec,want", [
    ("linux/amd64", "linux/amd64"), ("linux/x86_64", "linux/amd64"),
    ("linux/aarch64", "linux/arm64"), ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm", "linux/arm/v7"), ("linux/armhf", "linux/arm/v7"), ("arm64", "linux/arm64"),
    ("Linux/AMD64", "linux/amd64"), ("linux/386", "linux/386"),
])
def test_parse_platform(spec, want):
    assert str(parse_platform(spec)) == want


def test_platform_args_in_from():
    p = plan(df("FROM --platform=$BUILDPLATFORM golang AS b\nFROM alpine:$TARGETARCH\n"),
             platform="linux/arm64", build_platform="linux/amd64")
    assert p.target.base == "alpine:arm64"
    assert plan(df("FROM --platform=$BUILDPLATFORM golang AS b\n"),
                build_platform="linux/amd64").target.platform == "linux/amd64"


def test_unused_build_args_warning():
    p = plan(df("ARG A\nFROM x\nARG B\nFROM y AS other\nARG C\n"), target=None,
             build_args={"A": "1", "B": "2", "C": "3", "D": "4", "HTTP_PROXY": "p",
                         "TARGETARCH": "arm64", "BUILDKIT_INLINE_CACHE": "1"})
    # the target (last stage, "other") declares C; A is global; B belongs to an unneeded stage
    assert p.unused_build_args == ["B", "D"]
    assert "B, D" in p.warnings[0]


# -- scopes ------------------------------------------------------------------------------

def stage_scope(text: str, build_args=None, **kw):
    d = df(text)
    p = plan(d, build_args=build_args or {}, **kw)
    sc = Scope.for_stage(d, build_args=p.build_args, globals_=p.globals)
    out = [sc.apply(i) for i in p.target.stage.instructions]
    return sc, out


def test_global_args_need_redeclaring_in_stage():
    sc, out = stage_scope("""
        ARG V=1.0
        ARG ONLYGLOBAL=g
        FROM alpine:$V
        ARG V
        LABEL v=$V g=${ONLYGLOBAL:-unset}
    """)
    assert [(p.key, p.value) for p in out[1].pairs] == [("v", "1.0"), ("g", "unset")]


def test_stage_arg_default_and_override():
    sc, out = stage_scope("FROM x\nARG A=def B\nWORKDIR /$A/$B\n", build_args={"B": "b"})
    assert out[1].path == "/def/b"
    sc, out = stage_scope("FROM x\nARG A=def\nWORKDIR /$A\n", build_args={"A": "cli"})
    assert out[1].path == "/cli"


def test_arg_default_uses_earlier_values():
    sc, out = stage_scope("FROM x\nARG A=1\nARG B=${A}2\nENV C=$B\n")
    assert sc.env == {"C": "12"} and sc.args == {"A": "1", "B": "12"}


def test_env_shadows_arg():
    sc, out = stage_scope("FROM x\nARG V=arg\nENV V=env\nWORKDIR /$V\n", build_args={"V": "cli"})
    assert out[2].path == "/env"


def test_later_assignment_wins():
    # BuildKit adds ARG values to the build environment: an ARG after an ENV wins there,
    # while the image config keeps the ENV value
    sc, out = stage_scope("FROM x\nENV V=env\nARG V=arg\nWORKDIR /$V\n")
    assert out[2].path == "/arg" and sc.env == {"V": "env"} and sc.run_env() == {"V": "arg"}


def test_env_pairs_see_values_before_the_instruction():
    sc, out = stage_scope("FROM x\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n")
    assert sc.env == {"abc": "bye", "def": "hello", "ghi": "bye"}


def test_env_legacy_and_quotes():
    sc, _ = stage_scope("FROM x\nENV A hello   world\nENV B=\"a b\" C='$A' D=\\$A\n")
    assert sc.env == {"A": "hello   world", "B": "a b", "C": "$A", "D": "$A"}


def test_what_is_expanded():
    sc, out = stage_scope("""
        FROM x
        ARG P=8080 U=app D=/data N=TERM F=f.txt
        EXPOSE $P ${P}/udp
        USER ${U}:grp
        VOLUME $D /logs
        STOPSIGNAL SIG$N
        COPY --chown=$U --exclude=$F $F ${D}/
        ADD --checksum=sha256:$P $F /x
        RUN echo $P
        CMD ["echo", "$P"]
        LABEL "my key"="${U} x"
        ONBUILD RUN echo $P
    """)
    ex, us, vol, sig, cp, add, run, cmd, lab, onb = out[1:]
    assert ex.ports == ["8080", "8080/udp"]
    assert (us.user, us.group) == ("app", "grp")
    assert vol.paths == ["/data", "/logs"]
    assert sig.signal == "SIGTERM"
    assert (cp.chown, cp.sources, cp.dest) == ("app", ["f.txt"], "/data/")
    assert cp.exclude == ["$F"]  # patterns are not expanded
    assert add.checksum == "sha256:8080"
    assert run.command == "echo $P" and cmd.command == ["echo", "$P"]  # left to the shell
    assert (lab.pairs[0].key, lab.pairs[0].value) == ("my key", "app x")
    assert onb.expression == "RUN echo $P"


def test_volume_paths_are_single_words_and_not_empty():
    sc, out = stage_scope('FROM x\nARG D="/a b"\nVOLUME $D /c\nVOLUME ["$D"]\n')
    assert out[1].paths == ["/a b", "/c"] and out[2].paths == ["/a b"]
    with pytest.raises(OCIError) as e:
        stage_scope("FROM x\nVOLUME $NOPE\n")
    assert str(e.value) == "Dockerfile:2:1: VOLUME specified can not be an empty string"


def test_copy_heredoc_expansion():
    sc, out = stage_scope("""
        FROM x
        ARG NAME=world
        COPY <<EOF <<'RAW' /d/
        hello "$NAME" \\$NAME
        EOF
        keep $NAME
        RAW
    """)
    a, b = out[1].heredocs
    assert a.content == 'hello "world" $NAME\n'
    assert b.content == "keep $NAME\n"


def test_stage_from_stage_inherits_args_and_env():
    d = df("FROM x AS base\nARG A=1\nENV E=2\nFROM base\nWORKDIR /$A/$E\n")
    p = plan(d)
    parent = Scope.for_stage(d, build_args={}, globals_=p.globals)
    for i in d.stages[0].instructions:
        parent.apply(i)
    child = Scope.for_stage(d, build_args={}, globals_=p.globals, parent=parent,
                            base_env={"PATH": "/bin"})
    assert child.apply(d.stages[1].instructions[0]).path == "/1/2"
    assert child.run_env() == {"A": "1", "E": "2", "PATH": "/bin"}


def test_run_env_has_proxy_args_but_expansion_does_not():
    sc, out = stage_scope("FROM x\nWORKDIR /${HTTP_PROXY:-none}\n", build_args={"HTTP_PROXY": "p:1"})
    assert out[0].path == "/none" and sc.run_env() == {"HTTP_PROXY": "p:1", "http_proxy": "p:1"}  # both (BuildKit)


def test_predefined_args_in_stage_need_declaring():
    sc, out = stage_scope("FROM x\nWORKDIR /a$TARGETARCH\nARG TARGETARCH\nWORKDIR /b$TARGETARCH\n",
                          platform="linux/arm64")
    assert out[0].path == "/a" and out[2].path == "/barm64"


def test_expansion_error_has_position():
    with pytest.raises(OCIError) as e:
        stage_scope("FROM x\nWORKDIR ${NOPE:?must be set}\n")
    assert str(e.value) == 'Dockerfile:2:1: failed to process "${NOPE:?must be set}": NOPE: must be set'


def test_apply_does_not_modify_the_ast():
    d = df("FROM x\nARG A=1\nENV B=$A\n")
    before = repr(d)
    sc = Scope.for_stage(d, build_args={}, globals_={})
    for i in d.stages[0].instructions:
        sc.apply(i)
    assert repr(d) == before


def test_run_mount_options_are_expanded_in_the_stage():
    sc, out = stage_scope("""
        FROM x
        ARG CACHE=/root/.cache UID=1000 KIND=cache
        RUN --mount=type=$KIND,target=${CACHE}/pip,uid=$UID,id=pip-$UID pip install x
    """)
    (m,) = out[1].mounts
    assert (m.type, m.target, m.uid, m.id) == ("cache", "/root/.cache/pip", 1000, "pip-1000")
    assert out[1].command == "pip install x"


def test_run_mount_expansion_errors_are_checked_late():
    d = df("FROM x\nARG U=abc\nRUN --mount=type=cache,target=/c,uid=$U true\n")
    (m,) = d.stages[0].instructions[1].mounts  # parse time: the raw value is kept
    assert m.options["uid"] == "$U" and m.uid is None
    with pytest.raises(OCIError) as e:
        stage_scope("FROM x\nARG U=abc\nRUN --mount=type=cache,target=/c,uid=$U true\n")
    assert str(e.value) == 'Dockerfile:3:1: RUN: --mount: invalid uid "abc"'


# -- the Dockerfile reference's here-document examples -----------------------------------

def test_reference_heredoc_examples():
    d = df("""
        # syntax=docker/dockerfile:1
        FROM alpine
        ARG FOO=bar
        RUN <<EOT bash
          set -ex
          apt-get update
        EOT
        RUN <<EOT
        #!/usr/bin/env python
        print("hello world")
        EOT
        RUN <<FILE1 cat > file1 && <<FILE2 cat > file2
        I am
        first
        FILE1
        I am
        second
        FILE2
        COPY <<EOF greeting.txt
        hello world
        EOF
        COPY <<-EOT /script.sh
          echo "hello ${FOO}"
        EOT
        COPY <<-"EOT" /script2.sh
          echo "hello ${FOO}"
        EOT
        ENTRYPOINT ash /script.sh
    """)
    runs = d.stages[0].instructions
    assert runs[1].command == "<<EOT bash" and runs[1].heredocs[0].content == "  set -ex\n  apt-get update\n"
    assert runs[2].heredocs[0].content.startswith("#!/usr/bin/env python\n")
    assert [(h.name, h.content) for h in runs[3].heredocs] == [("FILE1", "I am\nfirst\n"),
                                                               ("FILE2", "I am\nsecond\n")]
    p = plan(d)
    sc = Scope.for_stage(d, build_args={}, globals_=p.globals)
    out = [sc.apply(i) for i in runs]
    greet, script, script2 = out[4], out[5], out[6]
    assert (greet.dest, greet.heredocs[0].path, greet.heredocs[0].content) == (
        "greeting.txt", "EOF", "hello world\n")
    assert script.heredocs[0].content == '  echo "hello bar"\n'        # expanded at build time
    assert script2.heredocs[0].content == '  echo "hello ${FOO}"\n'    # quoted word: left alone
    assert out[7].command == "ash /script.sh"


def test_debug_entry_point(tmp_path, capsys):
    import json

    from pybuild.dockerfile.__main__ import main
    f = tmp_path / "Dockerfile"
    f.write_text("ARG B=alpine\nFROM $B AS a\nFROM scratch\nCOPY --from=a /x /y\n")
    assert main([str(f), "--build-arg", "B=debian"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["levels"] == [[0], [1]] and out["plan"]["images"] == ["debian"]
    f.write_text("FROM a\nRUNN x\n")
    assert main([str(f)]) == 1
    assert capsys.readouterr().err.startswith(f"{f}:2:1: unknown instruction")
