"""Bounded work: patterns that would backtrack, ADD of huge URLs and archive bombs, URLs
that never finish, and inputs that used to end in a traceback. Everything goes through
the installed `pybuild`; each case checks the bound (time, peak RSS) or that the error is
one line on stderr with a non-zero exit.

HTTP servers here listen on 127.0.0.1 only and are stopped by their fixture.
"""
import gzip
import hashlib
import http.server
import io
import os
import subprocess
import tarfile
import threading
import time
import types
import zlib

import pytest

from build_e2e import RUNTIME, busybox_base, pybuild_cmd
from build_e2e import env  # noqa: F401  (fixture)

MiB = 1 << 20
BIG = 300 * MiB  # a buffered copy of this shows in peak RSS; the streamed one must not
RSS_LIMIT_KB = 200 * 1024


def run_build(e, *flags, timeout=60, extra_env=None):
    """`pybuild build --progress quiet FLAGS CTX` with a wall-clock limit; returns rc,
    stdout, stderr, elapsed seconds and the child's own peak RSS in KiB (wait4)."""
    cmd = [pybuild_cmd(), "--root", e.root, "build", "--progress", "quiet", "--runtime",
           RUNTIME, "-t", "test:latest", *flags, e.ctx]
    envv = dict(os.environ)
    envv.pop("SOURCE_DATE_EPOCH", None)
    envv.update(extra_env or {})
    out_path, err_path = os.path.join(e.base, "stdout"), os.path.join(e.base, "stderr")
    t0 = time.monotonic()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=envv)
    timed_out = False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > timeout:
            timed_out = True
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    with open(out_path) as f:
        stdout = f.read()
    with open(err_path) as f:
        stderr = f.read()
    return types.SimpleNamespace(rc=p.returncode, stdout=stdout, stderr=stderr,
                                 elapsed=time.monotonic() - t0, maxrss_kb=ru.ru_maxrss,
                                 timed_out=timed_out)


def ok(r):
    assert not r.timed_out, f"pybuild build did not finish in {r.elapsed:.0f} s"
    assert r.rc == 0, f"pybuild build failed ({r.rc}):\n{r.stderr}"
    return r


def one_line_error(r, *words):
    """The build failed with exactly one line on stderr naming `words`, no traceback."""
    assert not r.timed_out, f"pybuild build did not finish in {r.elapsed:.0f} s"
    assert r.rc != 0, f"pybuild build succeeded but should have failed:\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"want one error line, got:\n{r.stderr}"
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    return lines[0]


def layer_file_sizes(e, name="test:latest") -> dict:
    """{path: size} of the regular files in an image's layers, without reading the data."""
    man, _ = e.manifest(name)
    out = {}
    for d in man["layers"]:
        with tarfile.open(e.blob(d["digest"]), "r|*") as tf:
            for m in tf:
                if m.isreg():
                    out[m.name] = m.size
    return out


# -- patterns that backtrack ----------------------------------------------------------------

def test_substitution_pattern_does_not_backtrack(env):
    """`${v#*a*a*a*a*a*a*a*a*a*b}` on 100 `a`s: Python's re backtracked for minutes; an
    automaton answers at once (BuildKit's Go regexps are linear too)."""
    stars = "*a" * 9 + "*b"
    env.dockerfile(f"""\
FROM scratch
ENV v={"a" * 100}
LABEL p="${{v#{stars}}}" s="${{v%%{stars}}}" r="${{v//{stars}/x}}" \\
      p2="${{v##{"*a" * 100 + "*b"}}}" \\
      short="${{v#*a*a}}" long="${{v##*a*a}}" suf="${{v%a?}}" all="${{v//aa/b}}"
""")
    r = ok(run_build(env, timeout=60))
    assert r.elapsed < 10, f"the build took {r.elapsed:.1f} s"
    labels = env.config()["config"]["Labels"]
    assert labels["p"] == labels["s"] == labels["r"] == labels["p2"] == "a" * 100  # no match
    assert labels["short"] == "a" * 98 and labels["long"] == "" and labels["suf"] == "a" * 98
    assert labels["all"] == "b" * 50


def test_dockerignore_pattern_does_not_backtrack(env):
    """.dockerignore patterns became Python regexes (`[^/]*a[^/]*a...`, `(.*/)?(.*/)?...`)
    that backtracked exponentially on a long name; now an automaton matches them."""
    env.write(".dockerignore", "*a" * 30 + "*b\n" + "**/" * 15 + "c\n" + "*a*a*a*d\n")
    deep = "/".join(["a"] * 30)
    env.write("a" * 80, "kept")
    env.write(deep + "/kept", "kept")
    env.write("xaxaxad", "ignored")
    env.write("a" * 31 + "b", "ignored")
    env.write(deep + "/c", "ignored")
    env.dockerfile("FROM scratch\nCOPY . /ctx/\n")
    r = ok(run_build(env, timeout=60))
    assert r.elapsed < 10, f"the build took {r.elapsed:.1f} s"
    names = set(layer_file_sizes(env))
    assert "ctx/" + "a" * 80 in names and f"ctx/{deep}/kept" in names
    assert not {"ctx/xaxaxad", "ctx/" + "a" * 31 + "b", f"ctx/{deep}/c"} & names


# -- ADD: memory, time and size bounds -------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    """/zeros/N streams N generated zero bytes; /drip sends a byte every 0.5 s; /stall
    sends 10 bytes and then nothing."""

    def log_message(self, *args):
        pass

    def _head(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_GET(self):
        stop = self.server.stop
        try:
            if self.path.startswith("/zeros/"):
                n = int(self.path.split("/")[2])
                self._head(n)
                chunk = bytes(MiB)
                while n > 0 and not stop.is_set():
                    k = min(n, MiB)
                    self.wfile.write(chunk[:k])
                    n -= k
            elif self.path == "/drip":
                self._head(1000)
                for _ in range(1000):
                    if stop.wait(0.5):
                        return
                    self.wfile.write(b"x")
                    self.wfile.flush()
            elif self.path == "/stall":
                self._head(1000)
                self.wfile.write(b"x" * 10)
                self.wfile.flush()
                stop.wait(120)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.stop = threading.Event()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
        t.join(10)


def test_add_url_streams_with_bounded_memory(env, server):
    """ADD of a 300 MiB URL: downloaded and written into the layer in chunks (the old code
    read the download into memory, then copied it: >600 MB peak)."""
    env.dockerfile(f"FROM scratch\nADD {server}/zeros/{BIG} /big\n")
    r = ok(run_build(env, timeout=240))
    assert r.maxrss_kb < RSS_LIMIT_KB, f"peak RSS {r.maxrss_kb // 1024} MiB"
    assert layer_file_sizes(env)["big"] == BIG
    assert not os.listdir(os.path.join(env.root, ".tmp")), "download temp file left behind"


def _gzip_bomb(path: str, size: int) -> None:
    """A .tar.gz holding one file of `size` zero bytes, written without holding it."""
    ti = tarfile.TarInfo("zeros")
    ti.size = size
    ti.mode = 0o644
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        f.write(comp.compress(ti.tobuf(tarfile.GNU_FORMAT)))
        block = bytes(MiB)
        left = size + (-size % 512) + 1024  # data, padding, end-of-archive blocks
        while left:
            k = min(left, MiB)
            f.write(comp.compress(block[:k]))
            left -= k
        f.write(comp.flush())


def test_add_archive_bomb_bounded_memory(env):
    """A ~300 KB .tar.gz that unpacks to 300 MiB: members stream to disk (the old code read
    each member whole into memory, then copied it)."""
    _gzip_bomb(os.path.join(env.ctx, "bomb.tar.gz"), BIG)
    assert os.path.getsize(os.path.join(env.ctx, "bomb.tar.gz")) < 2 * MiB
    env.dockerfile("FROM scratch\nADD bomb.tar.gz /x/\n")
    r = ok(run_build(env, timeout=240))
    assert r.maxrss_kb < RSS_LIMIT_KB, f"peak RSS {r.maxrss_kb // 1024} MiB"
    assert layer_file_sizes(env)["x/zeros"] == BIG
    assert not os.listdir(os.path.join(env.root, ".tmp")), "spooled members left behind"


def test_add_max_size(env, server):
    _gzip_bomb(os.path.join(env.ctx, "bomb.tar.gz"), 64 * MiB)
    env.dockerfile("FROM scratch\nADD bomb.tar.gz /x/\n")
    one_line_error(run_build(env, "--add-max-size", "10M"),
                   "Dockerfile:2", "unpacks to more than 10 MiB", "--add-max-size")
    env.dockerfile(f"FROM scratch\nADD {server}/zeros/{64 * MiB} /big\n")
    one_line_error(run_build(env, extra_env={"PYBUILD_ADD_MAX_SIZE": "10M"}),
                   "Dockerfile:2", "larger than 10 MiB")
    one_line_error(run_build(env, "--add-max-size", "lots"), "--add-max-size", "want a size")
    assert not os.listdir(os.path.join(env.root, ".tmp"))


def test_add_url_total_timeout(env, server):
    """A server dripping a byte every 0.5 s never trips an idle timeout; the total one
    ends the download, at its deadline, with an error that names the flag."""
    env.dockerfile(f"FROM scratch\nADD {server}/drip /d\n")
    r = run_build(env, "--add-timeout", "3", timeout=60)
    one_line_error(r, "Dockerfile:2", "did not finish within 3 s", "--add-timeout")
    assert r.elapsed < 15, f"failed only after {r.elapsed:.1f} s"
    r = run_build(env, extra_env={"PYBUILD_ADD_TIMEOUT": "2"}, timeout=60)
    one_line_error(r, "did not finish within 2 s")
    assert r.elapsed < 15


def test_add_url_idle_timeout(env, server):
    env.dockerfile(f"FROM scratch\nADD {server}/stall /d\n")
    r = run_build(env, "--add-idle-timeout", "2", timeout=60)
    one_line_error(r, "Dockerfile:2", "no data for 2 s", "--add-idle-timeout")
    assert r.elapsed < 15, f"failed only after {r.elapsed:.1f} s"
    one_line_error(run_build(env, "--add-timeout", "-1"), "--add-timeout")


def test_add_truncated_targz(env):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = os.urandom(200_000)
        ti = tarfile.TarInfo("f")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    env.write("a.tar.gz", buf.getvalue()[:len(buf.getvalue()) // 2])
    env.dockerfile("FROM scratch\nADD a.tar.gz /\n")
    one_line_error(run_build(env), "Dockerfile:2", "a.tar.gz", "truncated or corrupt")


def test_add_checksum_with_trailing_newline_is_not_a_digest(env, server):
    """`$` in the digest grammar let `sha256:<hex>\\n` parse as a digest."""
    good = "sha256:" + hashlib.sha256(bytes(16)).hexdigest()
    env.dockerfile(f"FROM scratch\nARG SUM\nADD --checksum=${{SUM}} {server}/zeros/16 /z\n")
    one_line_error(run_build(env, "--build-arg", f"SUM={good}\n"), "invalid digest")
    ok(run_build(env, "--build-arg", f"SUM={good}"))


# -- one-line errors, never a traceback ------------------------------------------------------

def test_deeply_nested_substitution(env):
    deep = "${a:-" * 1000 + "x" + "}" * 1000
    env.dockerfile(f"FROM scratch\nENV A={deep}\n")
    one_line_error(run_build(env), "Dockerfile:2", "nested more than 100 deep")
    env.dockerfile("FROM scratch\nENV A=" + "${a:-" * 50 + "x" + "}" * 50 + "\n")
    ok(run_build(env))
    assert "A=x" in env.config()["config"]["Env"]


def test_workdir_too_long(env):
    env.dockerfile(busybox_base(env) + "WORKDIR /" + "/".join(["a"] * 5000) + "\nRUN pwd\n")
    # refused at the WORKDIR, which makes the directory (as BuildKit's mkdir fails there)
    one_line_error(run_build(env, timeout=120), "Dockerfile:4", "WORKDIR", "working directory",
                   "4096")


def test_deep_workdir_is_created(env):
    """1500 components (3000 bytes): created without recursion, and RUN runs there."""
    deep = "/" + "/".join(["d"] * 1500)
    env.dockerfile(busybox_base(env) + f"WORKDIR {deep}\nRUN pwd > /pwd.txt\n")
    ok(run_build(env, timeout=120))
    files = env.rootfs()
    assert files["pwd.txt"].data.decode().strip() == deep


def test_dockerfile_not_utf8(env):
    env.write("Dockerfile", b"FROM scratch\nLABEL a=\xff\xfe\n")
    one_line_error(run_build(env), "Dockerfile:2:9", "not UTF-8", "offset 21")
    env.write("Dockerfile", b"FROM scratch\nCOPY . /\n")
    env.write(".dockerignore", b"ok\n\xc3(\n")
    one_line_error(run_build(env), ".dockerignore:2:1", "not UTF-8")


@pytest.mark.parametrize("flag,words", [
    ("--chown=4294967296:0", ["Dockerfile:2:6", "--chown", "4294967296", "out of range"]),
    ("--chown=0:-1", ["Dockerfile:2:6", "--chown", "-1", "out of range"]),
    # BuildKit's message (dockerfile2llb/convert_copy.go)
    ("--chmod=17777", ["Dockerfile:2:6", "--chmod", "17777", "between 0 and 07777"]),
    ("--chmod=0778", ["Dockerfile:2:6", "--chmod", "'0778'", "between 0 and 07777"]),
])
def test_chown_chmod_out_of_range(env, flag, words):
    env.dockerfile(f"FROM scratch\nCOPY {flag} Dockerfile /x\n")
    one_line_error(run_build(env), *words)


def test_chown_chmod_out_of_range_after_expansion(env):
    env.dockerfile("FROM scratch\nARG U=99999999999\nCOPY --chown=${U} Dockerfile /x\n")
    one_line_error(run_build(env), "Dockerfile:3", "--chown=99999999999", "out of range")
    env.dockerfile("FROM scratch\nARG M=10000\nADD --chmod=$M Dockerfile /x\n")
    one_line_error(run_build(env), "Dockerfile:3", "--chmod=10000", "between 0 and 07777")
    env.dockerfile("FROM scratch\nARG M=4755\nCOPY --chown=4294967294:7 --chmod=$M Dockerfile /x\n")
    ok(run_build(env))
    (man, _) = env.manifest()
    with tarfile.open(env.blob(man["layers"][-1]["digest"])) as tf:
        m = tf.getmember("x")
    assert (m.uid, m.gid, m.mode) == (4294967294, 7, 0o4755)


def test_gzip_helper_makes_a_real_archive(tmp_path):
    """The bomb generator above writes a valid tar.gz (else the bomb tests prove nothing)."""
    p = str(tmp_path / "b.tar.gz")
    _gzip_bomb(p, 3 * MiB + 5)
    with gzip.open(p) as g, tarfile.open(fileobj=g, mode="r|") as tf:
        sizes = [m.size for m in tf]
    assert sizes == [3 * MiB + 5]


def test_build_help_names_the_limits():
    """`pybuild build --help` lists the ADD limits (it used to crash on rich markup)."""
    p = subprocess.run([pybuild_cmd(), "build", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    for flag in ("--add-timeout", "--add-idle-timeout", "--add-max-size"):
        assert flag in p.stdout
