"""Metadata instructions change only the image config and history (end to end)."""
import json

from build_e2e import env  # noqa: F401  (fixture)
from build_e2e import busybox_base


def test_every_metadata_instruction(env):
    env.busybox()
    env.dockerfile("""\
ARG BASE_GREETING=hello
FROM scratch
ARG GREETING=${BASE_GREETING}
ARG UNSET
COPY busybox /bin/busybox
MAINTAINER someone <someone@example.org>
ENV PATH=/bin GREETING_ENV=$GREETING-world
ENV OLD=legacy-form
LABEL org.example.a="one two" b=$GREETING
EXPOSE 80 53/udp 8000-8002/tcp
VOLUME ["/data", "/cache"]
USER 1000:1000
WORKDIR /srv
WORKDIR app
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --timeout=3s --retries=2 CMD ["/bin/busybox", "true"]
SHELL ["/bin/busybox", "sh", "-c"]
ONBUILD RUN echo triggered
ENTRYPOINT ["/bin/busybox"]
CMD echo $GREETING_ENV
""")
    env.build("--label", "from.cli=yes", "--build-arg", "GREETING=hi")
    man, cfg = env.manifest()
    c = cfg["config"]
    assert cfg["author"] == "someone <someone@example.org>"
    assert "PATH=/bin" in c["Env"] and "GREETING_ENV=hi-world" in c["Env"]
    assert "OLD=legacy-form" in c["Env"]
    assert c["Labels"] == {"org.example.a": "one two", "b": "hi", "from.cli": "yes"}
    assert c["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {},
                                 "8002/tcp": {}}
    assert c["Volumes"] == {"/data": {}, "/cache": {}}
    assert c["User"] == "1000:1000"
    assert c["WorkingDir"] == "/srv/app"
    assert c["StopSignal"] == "SIGUSR1"
    assert c["Healthcheck"] == {"Test": ["CMD", "/bin/busybox", "true"], "Interval": 5_000_000_000,
                                "Timeout": 3_000_000_000, "Retries": 2}
    assert c["Shell"] == ["/bin/busybox", "sh", "-c"]
    assert c["OnBuild"] == ["RUN echo triggered"]
    assert c["Entrypoint"] == ["/bin/busybox"]
    # shell-form CMD uses the SHELL in effect
    assert c["Cmd"] == ["/bin/busybox", "sh", "-c", "echo $GREETING_ENV"]
    # layers: the COPY and the two WORKDIRs (BuildKit makes each directory, a layer);
    # every other step is an empty_layer history entry
    assert len(man["layers"]) == 3 == len(cfg["rootfs"]["diff_ids"])
    layered = [h["created_by"] for h in cfg["history"] if not h.get("empty_layer")]
    assert layered[0].startswith("COPY busybox")
    assert layered[1:] == ["WORKDIR /srv", "WORKDIR /srv/app"]
    assert any(h["created_by"] == "ARG GREETING=hi" for h in cfg["history"])
    assert cfg["architecture"] and cfg["os"] == "linux"
    assert man["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"


def test_entrypoint_drops_base_cmd_and_onbuild_runs(env):
    env.dockerfile(busybox_base(env, 'CMD ["sh"]\nONBUILD RUN echo onbuild > /onbuilt\n'))
    env.build(tag="base:1")
    env.dockerfile('FROM base:1\nENTRYPOINT ["/bin/sh"]\n')
    env.build(tag="child:1")
    _, cfg = env.manifest("child:1")
    assert "Cmd" not in cfg["config"]
    assert "OnBuild" not in cfg["config"]
    files = env.rootfs("child:1")
    assert files["onbuilt"].data == b"onbuild\n"


def test_healthcheck_none_and_stopsignal_number(env):
    env.dockerfile("FROM scratch\nHEALTHCHECK NONE\nSTOPSIGNAL 9\n")
    env.build()
    c = env.config()["config"]
    assert c["Healthcheck"] == {"Test": ["NONE"]}
    assert c["StopSignal"] == "9"


def test_json_progress_and_quiet(env):
    env.dockerfile("FROM scratch\nENV A=1\n")
    sde = {"SOURCE_DATE_EPOCH": "1700000000"}
    p = env.pybuild("build", "--progress", "json", env.ctx, env=sde)
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert events[-1]["event"] == "result" and events[-1]["digest"].startswith("sha256:")
    assert any(e["event"] == "step" and e["text"] == "ENV A=1" and e["status"] == "done"
               for e in events)
    q = env.pybuild("build", "--progress", "quiet", env.ctx, env=sde)
    assert q.stdout.strip() == events[-1]["digest"]
    assert q.stderr == ""


def test_platform_sets_config(env):
    env.write("f", "x")
    env.dockerfile("FROM --platform=$TARGETPLATFORM scratch\nARG TARGETARCH\nCOPY f /f\n"
                   "LABEL arch=$TARGETARCH\n")
    env.build("--platform", "linux/arm64")
    cfg = env.config()
    assert (cfg["os"], cfg["architecture"]) == ("linux", "arm64")
    assert cfg["config"]["Labels"]["arch"] == "arm64"
