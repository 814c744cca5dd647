"""Multi-stage builds: COPY --from, --target, FROM a stage / the store / an OCI layout."""
import os

from build_e2e import env  # noqa: F401  (fixture)
from build_e2e import busybox_base


def _steps(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "STEP" in line]


def test_copy_from_and_target_builds_only_needed_stages(env):
    env.dockerfile(busybox_base(env, """\
FROM scratch AS unused
COPY does-not-exist /x
FROM bb AS builder
ARG N=3
RUN seq $N > /numbers
FROM scratch AS final
COPY --from=builder /numbers /out/numbers
COPY --from=bb /bin/busybox /bin/
FROM final AS extended
LABEL extended=yes
""").replace("FROM scratch\n", "FROM scratch AS bb\n", 1))
    p = env.build("--target", "final", "--build-arg", "N=4")
    steps = _steps(p.stderr)
    assert not any("does-not-exist" in s for s in steps)  # the unused stage never ran
    assert not any("extended" in s for s in steps)
    files = env.rootfs()
    assert files["out/numbers"].data == b"1\n2\n3\n4\n"
    assert "bin/busybox" in files and "numbers" not in files
    env.build(tag="ext:1")
    assert env.config("ext:1")["config"]["Labels"] == {"extended": "yes"}


def test_independent_stages_build_concurrently(env):
    import json
    env.dockerfile(busybox_base(env, """\
FROM bb AS a
RUN sleep 1 && echo a > /a
FROM bb AS b
RUN sleep 1 && echo b > /b
FROM scratch
COPY --from=a /a /a
COPY --from=b /b /b
""").replace("FROM scratch\n", "FROM scratch AS bb\n", 1))
    p = env.pybuild("build", "--progress", "json", "-t", "test:latest", env.ctx)
    events = [json.loads(line) for line in p.stdout.splitlines()]
    spans = {}
    for e in events:
        if e["event"] == "step" and e["text"].startswith("RUN sleep"):
            spans.setdefault(e["text"], {})[e["status"]] = e["time"]
    assert len(spans) == 2
    starts = [s["running"] for s in spans.values()]
    ends = [s["done"] for s in spans.values()]
    assert max(starts) < min(ends), f"stages a and b ran one after the other: {spans}"
    files = env.rootfs()
    assert files["a"].data == b"a\n" and files["b"].data == b"b\n"


def test_from_store_name_and_oci_layout(env):
    env.dockerfile(busybox_base(env, "RUN echo base > /base\nENV LEVEL=base\n"))
    layout = os.path.join(env.base, "layout")
    archive = os.path.join(env.base, "base.tar")
    env.build("-o", f"oci:{layout}:v1", "-o", f"oci-archive:{archive}:v1", tag="mybase:1")
    env.dockerfile("FROM mybase:1\nRUN echo $LEVEL > /child\n")
    env.build(tag="child:1")
    assert env.rootfs("child:1")["child"].data == b"base\n"
    # a fresh store: the base comes from the OCI layout directory
    other = os.path.join(env.base, "store2")
    env.dockerfile(f"FROM oci:{layout}:v1\nRUN cat /base > /from-layout\n")
    env.build(tag="fromlayout:1", root=other)
    man, cfg = env.manifest("fromlayout:1", root=other)
    assert len(man["layers"]) == 4
    assert "LEVEL=base" in cfg["config"]["Env"]
    # and from an oci-archive file, in a third store
    third = os.path.join(env.base, "store3")
    env.dockerfile(f"FROM oci-archive:{archive}:v1\nRUN cat /base > /from-archive\n")
    env.build(tag="fromarchive:1", root=third)
    man, cfg = env.manifest("fromarchive:1", root=third)
    assert len(man["layers"]) == 4 and "LEVEL=base" in cfg["config"]["Env"]


def test_stage_errors(env):
    env.dockerfile("FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n")
    p = env.build(ok=False)
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("Dockerfile:2:") and '"b"' in last and "defined after" in last
    env.dockerfile("FROM scratch AS a\nCOPY --from=a /x /x\n")
    p = env.build(ok=False)
    assert "circular" in p.stderr.strip().splitlines()[-1]
    env.dockerfile("FROM scratch AS a\nENV A=1\n")
    p = env.build("--target", "nope", ok=False)
    assert "nope" in p.stderr and "could not be found" in p.stderr
    env.dockerfile("FROM no-such-image:1\n")
    p = env.build("--pull=never", ok=False)  # missing would ask docker.io: tests stay on loopback
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("Dockerfile:1") and "no-such-image" in last
