"""pybuild pull / push / login / logout and FROM's --pull, against real registries on 127.0.0.1.

Everything goes through the installed `pybuild`; the registries are Debian's docker-registry
(anonymous, htpasswd, token auth, TLS), skopeo and podman read and write the same registry,
and small servers in this process fake the faults (500s, a cut connection, a corrupt blob).
Nothing here contacts any host but 127.0.0.1: bare names such as `busybox` are only parsed.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from build_e2e import Env, pybuild_cmd, remove_tree
from registry_fixtures import FakeRegistry, Proxy, Registry

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/docker-registry"),
                                reason="docker-registry is not installed")


class RegEnv(Env):
    """An Env whose pybuild never sees the host's credential files: HOME, XDG_RUNTIME_DIR and
    REGISTRY_AUTH_FILE point into the test's temp dir."""

    def __init__(self, base):
        super().__init__(base)
        self.home = os.path.join(base, "home")
        os.makedirs(self.home)
        self.authfile = os.path.join(base, "xdg", "containers", "auth.json")
        self.vars = {"HOME": self.home, "XDG_RUNTIME_DIR": os.path.join(base, "xdg"),
                     "REGISTRY_AUTH_FILE": self.authfile, "DOCKER_CONFIG": ""}
        self.registries = []

    def pybuild(self, *args, ok=True, env=None, root=None, runtime=True, input=None):
        e = dict(self.vars)
        e.update(env or {})
        if not e.get("DOCKER_CONFIG"):
            e.pop("DOCKER_CONFIG")
        if input is None:
            return super().pybuild(*args, ok=ok, env=e, root=root, runtime=runtime)
        cmd = [pybuild_cmd(), "--root", root or self.root, *args]
        full = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONFIG",)}
        full.update(e)
        p = subprocess.run(cmd, capture_output=True, text=True, env=full, input=input, timeout=120)
        if ok and p.returncode:
            pytest.fail(f"{cmd} failed: {p.stderr}")
        if ok is False and not p.returncode:
            pytest.fail(f"{cmd} succeeded but should have failed: {p.stderr}")
        return p

    def registry(self, **kw) -> Registry:
        r = Registry(self.base, **kw)
        self.registries.append(r)
        return r

    def image(self, tag="app:1", payload=b"", cmd='["/bin/busybox", "cat", "/hello"]'):
        """A small image without RUN: busybox, a file, optionally a big random layer."""
        self.busybox()
        self.write("hello", "hello from the registry\n")
        extra = ""
        if payload:
            self.write("payload.bin", payload)
            extra = "COPY payload.bin /payload.bin\n"
        self.dockerfile(f"FROM scratch\nCOPY busybox /bin/busybox\nCOPY hello /hello\n{extra}"
                        f"CMD {cmd}\n")
        self.build(tag=tag)
        return self.digest(tag)

    def digest(self, name, root=None) -> str:
        for m in self.index(root)["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
                return m["digest"]
        raise AssertionError(f"{name} not in {root or self.root}: {self.index(root)}")

    def names(self, root=None) -> list:
        return sorted(m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                      for m in self.index(root)["manifests"])

    def blobs(self, root=None) -> set:
        return set(os.listdir(os.path.join(root or self.root, "blobs", "sha256")))

    def tmp_files(self, root=None) -> list:
        return os.listdir(os.path.join(root or self.root, ".tmp"))


@pytest.fixture
def renv():
    base = tempfile.mkdtemp(prefix="pybuild-registry-")
    e = RegEnv(base)
    try:
        yield e
    finally:
        for r in e.registries:
            r.stop()
        remove_tree(base)


def last_line(p) -> str:
    lines = p.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def one_line_error(p, *words):
    line = last_line(p)
    assert "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"
    return line


def skopeo_digest(ref: str, *extra) -> str:
    p = subprocess.run(["skopeo", "inspect", "--raw", *extra, ref], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    import hashlib
    return "sha256:" + hashlib.sha256(p.stdout).hexdigest()


# -- names (parsing only: nothing is contacted) ---------------------------------------------------

def test_names_as_the_ecosystem_writes_them():
    from pybuild.registry.names import parse, store_candidates
    cases = {
        "busybox": "docker.io/library/busybox:latest",
        "busybox:1.36": "docker.io/library/busybox:1.36",
        "user/app": "docker.io/user/app:latest",
        "docker.io/busybox": "docker.io/library/busybox:latest",
        "index.docker.io/library/busybox:1": "docker.io/library/busybox:1",
        "docker://quay.io/org/app:v2": "quay.io/org/app:v2",
        "localhost/x": "localhost/x:latest",
        "localhost:5000/x/y:t": "localhost:5000/x/y:t",
        "127.0.0.1:5000/app": "127.0.0.1:5000/app:latest",
        "busybox@sha256:" + "a" * 64: "docker.io/library/busybox@sha256:" + "a" * 64,
        "h.io/a:t@sha256:" + "b" * 64: "h.io/a@sha256:" + "b" * 64,
    }
    for text, want in cases.items():
        assert str(parse(text)) == want, text
    r = parse("busybox")
    assert (r.domain, r.path, r.api_host) == ("docker.io", "library/busybox", "registry-1.docker.io")
    assert parse("localhost/x").is_local and not parse("localhost:5000/x").is_local
    assert parse("127.0.0.1:5000/x").is_loopback and not parse("example.com/x").is_loopback
    for bad in ("", "app/UPPER", "a b", "x:y:z", "busybox@sha256:abc", "a//b", "-x", "x:" + "t" * 200):
        with pytest.raises(Exception) as ei:
            parse(bad)
        assert "invalid image name" in str(ei.value)
    assert store_candidates("app:1") == ["app:1", "docker.io/library/app:1", "localhost/app:1"]


def test_auth_files_and_challenges(tmp_path, monkeypatch):
    import base64
    from pybuild.registry import auth
    for k in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".docker").mkdir()
    b = base64.b64encode(b"dock:pw1").decode()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": b}, "h.io": {"auth": b},
        "h.io/team": {"auth": base64.b64encode(b"team:pw2").decode()}}}))
    assert auth.lookup("docker.io/library/busybox").username == "dock"
    assert auth.lookup("h.io/team/app").username == "team"  # longest key wins
    assert auth.lookup("h.io/other").username == "dock"
    assert auth.lookup("other.io/x") is None
    c = auth.lookup("h.io/x")
    assert "pw1" not in repr(c)
    f = tmp_path / "mine.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(f))
    auth.save("h.io", auth.Credentials("me", "pw3"))
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    assert auth.lookup("h.io/x").username == "me"  # REGISTRY_AUTH_FILE first
    assert auth.remove("h.io") and auth.lookup("h.io/x").username == "dock"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(Exception) as ei:
        auth.lookup("h.io/x", str(tmp_path / "bad.json"))
    assert "bad.json" in str(ei.value)
    assert auth.parse_challenge('Bearer realm="https://a/t",service="reg",scope="repository:x:pull"') \
        == ("bearer", {"realm": "https://a/t", "service": "reg", "scope": "repository:x:pull"})
    assert auth.parse_challenge('Basic realm="r"') == ("basic", {"realm": "r"})


# -- the user's story ---------------------------------------------------------------------------------

def test_build_push_rmi_pull_run(renv, pyrunc_bin):
    reg = renv.registry()
    dg = renv.image("app:1")
    dest = f"{reg.host}/team/app:1"
    p = renv.pybuild("push", "--progress", "plain", "app:1", dest)
    assert p.stdout.split() == [dest, dg]
    assert reg.catalog_tags("team/app") == ["1"]
    assert skopeo_digest(f"docker://{dest}", "--tls-verify=false") == dg  # digest kept
    renv.pybuild("rmi", "app:1")
    assert "app:1" not in renv.names()
    # elsewhere: a fresh store pulls it back and runs it
    root2 = os.path.join(renv.base, "store2")
    p = renv.pybuild("pull", "--progress", "plain", dest, root=root2)
    assert p.stdout.split() == [dest, dg]
    assert "blob" in p.stderr and "done" in p.stderr
    assert renv.names(root2) == [dest]
    assert renv.digest(dest, root2) == dg
    # the store's copy is a plain OCI layout skopeo reads under the fully qualified name
    assert skopeo_digest(f"oci:{root2}:{dest}") == dg
    bundle = os.path.join(renv.base, "bundle")
    renv.pybuild("unpack", dest, bundle, root=root2)
    state = os.path.join(renv.base, "state")
    try:
        r = subprocess.run([pyrunc_bin, "--root", state, "run", "--bundle", bundle, "regtest"],
                           capture_output=True, text=True, timeout=60, cwd=bundle)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "hello from the registry\n"
    finally:
        subprocess.run([pyrunc_bin, "--root", state, "delete", "-f", "regtest"],
                       capture_output=True)
        renv.pybuild("rm", bundle, root=root2)  # an overlay bundle: unmounted and forgotten
    # pulled again: every blob is there already, and -q prints the digest only
    p = renv.pybuild("pull", "-q", dest, root=root2)
    assert p.stdout.strip() == dg
    # and by digest
    p = renv.pybuild("pull", "--progress", "json", f"{reg.host}/team/app@{dg}", root=root2)
    events = [json.loads(x) for x in p.stdout.splitlines()]
    assert {e["status"] for e in events if e["event"] == "blob"} == {"exists"}
    assert events[-1] == {"event": "result", "name": f"{reg.host}/team/app@{dg}", "digest": dg,
                          "time": events[-1]["time"]}


def test_from_pulls_what_the_store_lacks(renv):
    reg = renv.registry()
    base_dg = renv.image("base:1")
    base = f"{reg.host}/base:1"
    renv.pybuild("push", "base:1", base)
    ctx_df = f"FROM {base}\nCOPY hello /again\n"
    renv.dockerfile(ctx_df)
    root2 = os.path.join(renv.base, "store2")
    p = renv.build(tag="child:1", root=root2)  # --pull=missing by default
    assert renv.names(root2) == [base, "child:1"]
    assert renv.digest(base, root2) == base_dg
    # never: the store must have it
    root3 = os.path.join(renv.base, "store3")
    p = renv.build("--pull=never", tag="child:1", root=root3, ok=False)
    one_line_error(p, "Dockerfile:1", base, "not in the local store")
    # a new base under the same tag: missing keeps the stored one, always takes the new one
    new_dg = renv.image("base:2", cmd='["/bin/busybox", "true"]')
    renv.pybuild("push", "base:2", base)
    renv.dockerfile(ctx_df)
    renv.build("--pull=missing", tag="child:1", root=root2)
    assert renv.digest(base, root2) == base_dg
    p = renv.build("--pull=always", tag="child:2", root=root2)
    assert renv.digest(base, root2) == new_dg
    _, cfg = renv.manifest("child:2", root=root2)
    assert cfg["config"]["Cmd"] == ["/bin/busybox", "true"]
    p = renv.build("--pull=sometimes", tag="child:3", root=root2, ok=False)
    one_line_error(p, "--pull", "missing, always or never")


def test_push_skips_existing_blobs_and_mounts_across_repositories(renv):
    reg = renv.registry()
    renv.image("app:1", payload=os.urandom(300_000))

    def statuses(p):
        return [json.loads(x)["status"] for x in p.stdout.splitlines()
                if json.loads(x)["event"] == "blob" and json.loads(x)["status"] != "running"
                and json.loads(x)["status"] != "progress"]
    p = renv.pybuild("push", "--progress", "json", "app:1", f"{reg.host}/a/app:1")
    assert statuses(p) == ["done"] * 4
    p = renv.pybuild("push", "--progress", "json", "app:1", f"{reg.host}/a/app:2")
    assert statuses(p) == ["exists"] * 4  # HEAD first
    p = renv.pybuild("push", "--progress", "json", "app:1", f"docker://{reg.host}/b/app:1")
    assert statuses(p) == ["mounted"] * 4  # cross-repository mount, no upload
    assert reg.catalog_tags("b/app") == ["1"]


def test_chunked_upload_and_resumed_download(renv):
    reg = renv.registry()
    dg = renv.image("big:1", payload=os.urandom(700_000))
    man, _ = renv.manifest("big:1")
    big = max(man["layers"], key=lambda d: d["size"])
    renv.pybuild("push", "big:1", f"{reg.host}/big:1", env={"PYBUILD_PUSH_CHUNK": "65536"})
    assert skopeo_digest(f"docker://{reg.host}/big:1", "--tls-verify=false") == dg
    proxy = Proxy(reg.port)
    try:
        proxy.cut.add(big["digest"])
        root2 = os.path.join(renv.base, "store2")
        renv.pybuild("pull", f"127.0.0.1:{proxy.port}/big:1", root=root2)
        assert any(r and r.startswith("bytes=") and r != "bytes=0-" for r in proxy.ranges), \
            proxy.ranges
        assert renv.digest(f"127.0.0.1:{proxy.port}/big:1", root2) == dg
        with open(renv.blob(big["digest"], root2), "rb") as f:
            import hashlib
            assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == big["digest"]
        assert renv.tmp_files(root2) == []
    finally:
        proxy.stop()


# -- auth ---------------------------------------------------------------------------------------------

def _no_secret(p, secret):
    assert secret not in p.stdout and secret not in p.stderr


def test_htpasswd_basic_auth_login_logout(renv):
    reg = renv.registry(auth="htpasswd")
    renv.image("app:1")
    dest = f"{reg.host}/app:1"
    p = renv.pybuild("push", "app:1", dest, ok=False)
    one_line_error(p, f"push {dest}", "authentication required", "pybuild login")
    p = renv.pybuild("login", "-u", "alice", "--password-stdin", reg.host, input="wrong-pw\n",
                     ok=False)
    one_line_error(p, "unauthorized")
    _no_secret(p, "wrong-pw")
    assert not os.path.exists(renv.authfile)
    p = renv.pybuild("login", "-u", "alice", "--password-stdin", reg.host, input="s3cret-pw\n")
    assert "Login Succeeded" in p.stdout
    _no_secret(p, "s3cret-pw")
    assert os.stat(renv.authfile).st_mode & 0o777 == 0o600
    assert reg.host in json.load(open(renv.authfile))["auths"]
    p = renv.pybuild("push", "--progress", "plain", "app:1", dest)
    _no_secret(p, "s3cret-pw")
    root2 = os.path.join(renv.base, "store2")
    renv.pybuild("pull", dest, root=root2)
    renv.pybuild("logout", reg.host)
    p = renv.pybuild("pull", dest, root=root2, ok=False)
    one_line_error(p, "authentication required")
    p = renv.pybuild("logout", reg.host, ok=False)
    one_line_error(p, "not logged into")
    # docker's ~/.docker/config.json is read too (HOME is the test's)
    import base64
    os.makedirs(os.path.join(renv.home, ".docker"))
    with open(os.path.join(renv.home, ".docker", "config.json"), "w") as f:
        json.dump({"auths": {f"http://{reg.host}": {
            "auth": base64.b64encode(b"alice:s3cret-pw").decode()}}}, f)
    renv.pybuild("pull", dest, root=root2)
    # --creds on the command line
    os.unlink(os.path.join(renv.home, ".docker", "config.json"))
    renv.pybuild("pull", "--creds", "alice:s3cret-pw", dest, root=root2)


def test_bearer_token_auth(renv):
    reg = renv.registry(auth="token")
    renv.image("app:1")
    dest = f"{reg.host}/team/app:1"
    p = renv.pybuild("push", "app:1", dest, ok=False)
    one_line_error(p, "authentication required", "pybuild login")
    p = renv.pybuild("login", "-u", "alice", "-p", "nope", reg.host, ok=False)
    one_line_error(p, "invalid username or password")
    renv.pybuild("login", "-u", "alice", "--password-stdin", reg.host, input="s3cret-pw")
    renv.pybuild("push", "app:1", dest)
    root2 = os.path.join(renv.base, "store2")
    renv.pybuild("pull", dest, root=root2)
    assert renv.digest(dest, root2) == renv.digest("app:1")
    scopes = [s for user, ss in reg.token.requests if user == "alice" for s in ss]
    assert "repository:team/app:pull,push" in scopes and "repository:team/app:pull" in scopes


def test_tls_verified_with_cert_dir(renv):
    reg = renv.registry(tls=True)
    renv.image("app:1")
    dest = f"{reg.host}/app:1"
    p = renv.pybuild("push", "app:1", dest, ok=False)
    one_line_error(p, "TLS certificate not trusted", "--cert-dir")
    certs = os.path.join(renv.base, "certs")
    os.makedirs(certs)
    shutil.copy(reg.ca, os.path.join(certs, "ca.crt"))
    renv.pybuild("push", "--cert-dir", certs, "app:1", dest)
    root2 = os.path.join(renv.base, "store2")
    renv.pybuild("pull", "--cert-dir", certs, dest, root=root2)
    renv.pybuild("pull", "--tls-verify=false", dest, root=os.path.join(renv.base, "store3"))
    p = renv.pybuild("pull", "--tls-verify=maybe", dest, root=root2, ok=False)
    one_line_error(p, "--tls-verify", "true or false")


# -- interop ------------------------------------------------------------------------------------------

def test_skopeo_and_podman_interop(renv):
    for tool in ("skopeo", "podman"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    reg = renv.registry()
    dg = renv.image("app:1")
    # skopeo pushes from pybuild's store, pybuild pulls it
    sk = f"{reg.host}/from-skopeo:1"
    r = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{renv.root}:app:1",
                        f"docker://{sk}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    root2 = os.path.join(renv.base, "store2")
    renv.pybuild("pull", sk, root=root2)
    assert renv.digest(sk, root2) == skopeo_digest(f"docker://{sk}", "--tls-verify=false")
    # pybuild pushes, podman pulls (registries.conf marks the registry insecure)
    pb = f"{reg.host}/from-pybuild:1"
    renv.pybuild("push", "app:1", pb)
    conf = os.path.join(renv.base, "registries.conf")
    with open(conf, "w") as f:
        f.write(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
    proot, prun = os.path.join(renv.base, "podman-root"), os.path.join(renv.base, "podman-run")
    podman = ["podman", "--root", proot, "--runroot", prun, "--storage-driver", "vfs",
              "--events-backend", "none"]
    penv = dict(os.environ, CONTAINERS_REGISTRIES_CONF=conf, HOME=renv.home,
                XDG_RUNTIME_DIR=os.path.join(renv.base, "xdg"))
    try:
        r = subprocess.run(podman + ["pull", pb], capture_output=True, text=True, env=penv,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(podman + ["image", "inspect", "--format", "{{.Digest}}", pb],
                           capture_output=True, text=True, env=penv, timeout=60)
        assert r.stdout.strip() == dg
    finally:
        subprocess.run(podman + ["rmi", "-a", "-f"], capture_output=True, env=penv)
        remove_tree(prun)
        remove_tree(proot)


def test_index_platform_selection_and_schema1(renv):
    reg = renv.registry()
    amd = renv.image("plat:amd64")
    renv.build("--platform", "linux/arm64", tag="plat:arm64")
    arm = renv.digest("plat:arm64")
    # an index of both, tagged in the store by the ocispec/store API (as `pybuild manifest`
    # would), pushed as is
    from ocispec import image as _image
    from ocispec import mediatypes as mt
    from pybuild.image.store import Store
    st = Store(renv.root)
    descs = []
    for dg, arch in ((amd, "amd64"), (arm, "arm64")):
        descs.append(_image.descriptor(mt.IMAGE_MANIFEST, dg, st.blob_size(dg),
                                       platform={"os": "linux", "architecture": arch}))
    idx = st.put_json(_image.index(descs), mt.IMAGE_INDEX)
    st.tag("multi:1", idx.descriptor())
    p = renv.pybuild("push", "multi:1", f"{reg.host}/multi:1")
    assert p.stdout.split()[1] == idx.digest
    root2 = os.path.join(renv.base, "store2")
    renv.pybuild("pull", "--platform", "linux/arm64", f"{reg.host}/multi:1", root=root2)
    assert renv.digest(f"{reg.host}/multi:1", root2) == arm
    renv.pybuild("pull", f"{reg.host}/multi:1", root=root2)  # default: this host
    import platform as _p
    if _p.machine() in ("x86_64", "amd64"):
        assert renv.digest(f"{reg.host}/multi:1", root2) == amd
    p = renv.pybuild("pull", "--platform", "linux/s390x", f"{reg.host}/multi:1", root=root2,
                     ok=False)
    one_line_error(p, "no manifest for platform linux/s390x")
    # a schema 1 manifest is refused with a clear message
    s1 = json.dumps({"schemaVersion": 1, "name": "old", "tag": "1", "fsLayers": []}).encode()
    fake = FakeRegistry(manifest=(s1, "application/vnd.docker.distribution.manifest.v1+prettyjws"))
    try:
        p = renv.pybuild("pull", f"127.0.0.1:{fake.port}/old:1", root=root2, ok=False)
        one_line_error(p, "schema 1", "not supported")
    finally:
        fake.stop()


# -- faults -------------------------------------------------------------------------------------------

def test_registry_errors_are_one_line(renv):
    reg = renv.registry()
    root2 = os.path.join(renv.base, "store2")
    p = renv.pybuild("pull", f"{reg.host}/nothing:here", root=root2, ok=False)
    one_line_error(p, f"pull {reg.host}/nothing:here", "not found", "MANIFEST_UNKNOWN")
    fake = FakeRegistry(500)
    try:
        p = renv.pybuild("pull", f"127.0.0.1:{fake.port}/x:1", root=root2, ok=False)
        one_line_error(p, "answered 500", "the storage is on fire")
        renv.image("app:1")
        p = renv.pybuild("push", "app:1", f"127.0.0.1:{fake.port}/x:1", ok=False)
        one_line_error(p, "answered 500")
    finally:
        fake.stop()
    port = __import__("registry_fixtures").free_port()
    p = renv.pybuild("pull", f"127.0.0.1:{port}/x:1", root=root2, ok=False)
    one_line_error(p, "cannot connect")
    p = renv.pybuild("push", "no-such:1", f"{reg.host}/x:1", ok=False)
    one_line_error(p, "no-such:1", "does not exist")
    assert renv.names(root2) == []
    assert renv.tmp_files(root2) == []


def test_corrupt_blob_is_refused_and_nothing_stored(renv):
    reg = renv.registry()
    renv.image("app:1", payload=os.urandom(50_000))
    renv.pybuild("push", "app:1", f"{reg.host}/app:1")
    man, _ = renv.manifest("app:1")
    bad = man["layers"][-1]["digest"]
    proxy = Proxy(reg.port)
    try:
        proxy.corrupt.add(bad)
        root2 = os.path.join(renv.base, "store2")
        p = renv.pybuild("pull", f"127.0.0.1:{proxy.port}/app:1", root=root2, ok=False)
        one_line_error(p, bad, "does not match", "nothing stored")
        assert bad.split(":")[1] not in renv.blobs(root2)
        assert renv.names(root2) == []
        assert renv.tmp_files(root2) == []
    finally:
        proxy.stop()


def test_full_disk_leaves_a_consistent_store(renv):
    reg = renv.registry()
    renv.image("big:1", payload=os.urandom(3 << 20))
    renv.pybuild("push", "big:1", f"{reg.host}/big:1")
    small = os.path.join(renv.base, "small")
    os.makedirs(small)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        root2 = os.path.join(small, "store")
        p = renv.pybuild("pull", f"{reg.host}/big:1", root=root2, ok=False)
        one_line_error(p, "No space left on device", f"pull {reg.host}/big:1")
        assert renv.names(root2) == []
        assert renv.tmp_files(root2) == []
        for name in renv.blobs(root2):  # whatever was committed is whole
            import hashlib
            with open(os.path.join(root2, "blobs", "sha256", name), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == name
    finally:
        subprocess.run(["umount", small], check=False)


def _largest_temp(tmp: str) -> int:
    """Size of the largest file in a store's .tmp (0 when none); files come and go as the
    pull writes and renames them."""
    sizes = [0]
    for f in os.listdir(tmp) if os.path.isdir(tmp) else ():
        try:
            sizes.append(os.path.getsize(os.path.join(tmp, f)))
        except FileNotFoundError:
            pass
    return max(sizes)


def test_killed_pull_leaves_nothing_prune_does_not_clean(renv):
    reg = renv.registry()
    dg = renv.image("big:1", payload=os.urandom(2 << 20))
    renv.pybuild("push", "big:1", f"{reg.host}/big:1")
    man, _ = renv.manifest("big:1")
    big = max(man["layers"], key=lambda d: d["size"])["digest"]
    proxy = Proxy(reg.port)
    root2 = os.path.join(renv.base, "store2")
    name = f"127.0.0.1:{proxy.port}/big:1"
    try:
        proxy.stall.add(big)
        env = dict(os.environ, **renv.vars)
        env.pop("DOCKER_CONFIG")
        proc = subprocess.Popen([pybuild_cmd(), "--root", root2, "pull", name], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until half the blob is in a temp file
            if _largest_temp(os.path.join(root2, ".tmp")) > (512 << 10):
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail("the pull never started writing the blob")
        proc.kill()  # SIGKILL mid-blob
        proc.wait()
        assert big.split(":")[1] not in renv.blobs(root2)  # nothing half-written under a digest
        assert renv.names(root2) == []
        assert renv.tmp_files(root2)  # the dead pull's temp file ...
        renv.pybuild("prune", root=root2)
        assert renv.tmp_files(root2) == []  # ... which the next run cleans
        proxy.stall.clear()
        renv.pybuild("pull", name, root=root2)
        assert renv.digest(name, root2) == dg
    finally:
        proxy.stop()
