"""pybuild's other commands (images, rmi, unpack) and the bundled example."""
import json
import os
import shutil
import subprocess

from build_e2e import RUNTIME, env, pybuild_cmd  # noqa: F401  (env is a fixture)
from build_e2e import busybox_base

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def test_images_rmi_unpack(env):
    env.dockerfile(busybox_base(env, 'RUN echo unpacked > /marker\nCMD ["cat", "/marker"]\n'))
    env.build(tag="one:1")
    env.build(tag="two:2")
    def names():
        rows = json.loads(env.pybuild("images", "--format", "json").stdout)
        return [f"{r['Repository']}:{r['Tag']}" for r in rows]
    assert names() == ["one:1", "two:2"]
    bundle = os.path.join(env.base, "bundle")
    env.pybuild("unpack", "one:1", bundle)
    with open(os.path.join(bundle, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["process"]["args"] == ["cat", "/marker"]
    with open(os.path.join(bundle, "rootfs", "marker")) as f:
        assert f.read() == "unpacked\n"
    env.pybuild("rm", bundle)  # an overlay bundle: unmounted and removed (its image is in use till then)
    env.pybuild("rmi", "one:1")
    assert names() == ["two:2"]
    p = env.pybuild("rmi", "one:1", ok=False)
    assert "does not exist" in p.stderr
    # bad usage: one line, exit 1 (or click's usage status 2)
    p = env.pybuild("build", "--progress", "fancy", env.ctx, ok=False)
    assert "--progress" in p.stderr


def test_hello_example():
    runtime = os.environ.get("PYRUNC", RUNTIME)
    if "/" not in runtime and not shutil.which(runtime):
        runtime = os.path.join(os.path.dirname(pybuild_cmd()), runtime)  # same venv
    env_ = dict(os.environ, PYBUILD=pybuild_cmd(), PYRUNC=runtime)
    p = subprocess.run(["bash", os.path.join(REPO, "examples", "hello", "run.sh")],
                       capture_output=True, text=True, env=env_, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "hello from a pybuild image"
    assert "pid 1" in p.stdout


def test_build_ends_without_interpreter_teardown(env):
    """`pybuild build` flushes its output and ends with os._exit, as pyrunc does (the
    interpreter's teardown took ~15 ms after a cold build): an atexit hook (a sitecustomize
    on PYTHONPATH) never runs after a build, whether it succeeds or fails, and the output
    is whole; other commands end normally and run it."""
    hook = os.path.join(env.base, "hook")
    os.mkdir(hook)
    marker = os.path.join(env.base, "teardown-ran")
    with open(os.path.join(hook, "sitecustomize.py"), "w") as f:
        f.write(f"import atexit\natexit.register(lambda: open({marker!r}, 'a').write('x'))\n")
    pp = {"PYTHONPATH": hook + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.dockerfile(busybox_base(env, "RUN echo hi\n"))
    p = env.pybuild("build", "--progress", "json", "-t", "t:1", env.ctx, env=pp)
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert events[-1]["event"] == "result" and p.stdout.endswith("}\n")
    assert any(e.get("line") == "hi" for e in events)
    assert not os.path.exists(marker)
    env.dockerfile(busybox_base(env, "RUN echo failing && exit 3\n"))
    p = env.pybuild("build", "-t", "t:2", env.ctx, ok=False, env=pp)
    assert p.returncode == 1, p.stderr
    assert "exited with status 3" in p.stderr.strip().splitlines()[-1]
    assert not os.path.exists(marker)
    env.pybuild("images", env=pp)
    assert os.path.exists(marker)
