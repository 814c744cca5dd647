"""Real registries for pybuild's registry tests, all on 127.0.0.1.

- Registry: Debian's `docker-registry` (distribution 2.8) with a config in a temp dir, on a
  free port, stopped by pid: anonymous, htpasswd (bcrypt from the C library's crypt(3)),
  token auth (a TokenServer in this process signs JWTs with a key made here), or TLS (a CA
  made here).
- TokenServer: the Docker token protocol (`GET realm?service=&scope=` with Basic auth) issuing
  RS256 JWTs whose `kid` is the libtrust key id docker-registry derives from rootcertbundle.
- Proxy: forwards to a registry, and can cut a blob download mid-way or corrupt it.
- FakeRegistry: answers GET /v2/ and then a fixed status (500s).
"""
import base64
import datetime
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import warnings

import pytest

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bcrypt_hash(password: str) -> str:
    """htpasswd's bcrypt entry, from glibc/libxcrypt's crypt(3) (no bcrypt package needed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            crypt = None
    if crypt is not None and crypt.METHOD_BLOWFISH in crypt.methods:
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
    try:
        import bcrypt
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()
    except ImportError:
        pytest.skip("no bcrypt: neither crypt(3) with $2b$ nor the bcrypt package")


# -- keys and certificates (cryptography) -------------------------------------------------

def _name(cn):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: str):
    """(CA key, CA cert, path of ca.crt)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("pybuild test CA"))
            .issuer_name(_name("pybuild test CA")).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = os.path.join(directory, "ca.crt")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(directory: str, ca_key, ca_cert):
    """(cert path, key path) for 127.0.0.1 and localhost, signed by the CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    cpath, kpath = os.path.join(directory, "server.crt"), os.path.join(directory, "server.key")
    with open(cpath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(kpath, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    os.chmod(kpath, 0o600)
    return cpath, kpath


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_kid(public_key) -> str:
    """docker/libtrust's key id: sha256 of the DER public key, 240 bits, base32, in 4s."""
    from cryptography.hazmat.primitives import serialization
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(b32[i:i + 4] for i in range(0, 48, 4))


# -- servers in this process ------------------------------------------------------------------

class _Server:
    def __init__(self, handler):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class TokenServer(_Server):
    """Issues RS256 JWTs for the scopes asked to users that authenticate with Basic."""

    def __init__(self, directory, users: dict, service="pybuild-test", issuer="pybuild-test-issuer"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        self.users, self.service, self.issuer = users, service, issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(_name("token"))
                .issuer_name(_name("token")).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(self.key, hashes.SHA256()))
        self.bundle = os.path.join(directory, "token.crt")
        with open(self.bundle, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        self.kid = libtrust_kid(self.key.public_key())
        self.requests = []  # (user or None, [scopes]) per token request
        super().__init__(_TokenHandler)

    @property
    def realm(self):
        return f"http://127.0.0.1:{self.port}/token"

    def token(self, user, scopes) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        access = []
        for s in scopes:
            typ, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": typ, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing = f"{_b64u(json.dumps(header).encode())}.{_b64u(json.dumps(claims).encode())}"
        sig = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64u(sig)}"


class _TokenHandler(_Quiet):
    def do_GET(self):
        srv = self.server.owner
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        user = None
        h = self.headers.get("Authorization", "")
        if h.startswith("Basic "):
            u, _, p = base64.b64decode(h[6:]).decode().partition(":")
            if srv.users.get(u) != p:
                srv.requests.append(("<bad>", q.get("scope", [])))
                return self._send(401, b'{"details":"invalid credentials"}')
            user = u
        srv.requests.append((user, q.get("scope", [])))
        if user is None:
            return self._send(401, b'{"details":"authentication required"}')
        tok = srv.token(user, q.get("scope", []))
        body = json.dumps({"token": tok, "expires_in": 300}).encode()
        self._send(200, body, {"Content-Type": "application/json"})


class Proxy(_Server):
    """Forwards to a registry. `cut` blob digests: the first GET sends half the body and
    drops the connection. `corrupt` blob digests: one byte flipped on every GET."""

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.cut: set = set()
        self.corrupt: set = set()
        self.stall: set = set()  # send half the blob, then nothing until stop()
        self.released = threading.Event()
        self.ranges: list = []  # Range headers seen on blob GETs
        self.blob_gets = 0
        super().__init__(_ProxyHandler)


class _ProxyHandler(_Quiet):
    def _forward(self):
        srv = self.server.owner
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn = http.client.HTTPConnection("127.0.0.1", srv.upstream, timeout=30)
        conn.request(self.command, self.path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        digest = self.path.rsplit("/", 1)[-1] if "/blobs/sha256:" in self.path else None
        if digest and self.command == "GET":
            srv.blob_gets += 1
            srv.ranges.append(self.headers.get("Range"))
            if digest in srv.corrupt and data:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            if (digest in srv.cut or digest in srv.stall) and len(data) > 1:
                srv.cut.discard(digest)
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                if digest in srv.stall:
                    srv.released.wait(60)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


Proxy.stop = lambda self: (self.released.set(), _Server.stop(self))


class FakeRegistry(_Server):
    """GET /v2/ answers 200; a manifest GET answers `manifest` (bytes, media type) when given;
    everything else answers `status` with a registry error body."""

    def __init__(self, status=500, manifest=None):
        self.status, self.manifest = status, manifest
        super().__init__(_FakeHandler)


class _FakeHandler(_Quiet):
    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.path == "/v2/":
            return self._send(200, b"{}", {"Content-Type": "application/json"})
        srv = self.server.owner
        if srv.manifest and "/manifests/" in self.path:
            return self._send(200, srv.manifest[0], {"Content-Type": srv.manifest[1]})
        body = json.dumps({"errors": [{"code": "UNKNOWN", "message": "the storage is on fire"}]})
        self._send(self.server.owner.status, body.encode(), {"Content-Type": "application/json"})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _any


# -- docker-registry --------------------------------------------------------------------------

class Registry:
    """docker-registry on 127.0.0.1:<free port>; `auth` None, "htpasswd" or "token"."""

    def __init__(self, base: str, *, auth=None, tls=False, users=None):
        self.base = os.path.join(base, f"registry-{auth or 'anon'}{'-tls' if tls else ''}")
        os.makedirs(self.base)
        self.port = free_port()
        self.users = users or {"alice": "s3cret-pw"}
        self.token = None
        self.ca = None
        lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
                 "storage:", "  filesystem:", f"    rootdirectory: {self.base}/data",
                 "  delete:", "    enabled: true", "http:", f"  addr: 127.0.0.1:{self.port}",
                 "  secret: pybuild-test-secret"]
        if tls:
            ca_key, ca_cert, self.ca = make_ca(self.base)
            cert, key = make_server_cert(self.base, ca_key, ca_cert)
            lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if auth == "htpasswd":
            path = os.path.join(self.base, "htpasswd")
            with open(path, "w") as f:
                for u, p in self.users.items():
                    f.write(f"{u}:{bcrypt_hash(p)}\n")
            lines += ["auth:", "  htpasswd:", "    realm: pybuild-test", f"    path: {path}"]
        elif auth == "token":
            self.token = TokenServer(self.base, self.users)
            lines += ["auth:", "  token:", f"    realm: {self.token.realm}",
                      f"    service: {self.token.service}", f"    issuer: {self.token.issuer}",
                      f"    rootcertbundle: {self.token.bundle}"]
        self.config = os.path.join(self.base, "config.yml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = open(os.path.join(self.base, "registry.log"), "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.scheme = "https" if tls else "http"
        self._wait()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _wait(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(self.log.name, "rb") as f:
                    pytest.fail(f"docker-registry exited: {f.read()[-2000:]!r}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        pytest.fail("docker-registry did not start listening in 20s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.token:
            self.token.stop()

    def catalog_tags(self, repo: str) -> list:
        """Tags of a repository, read from the storage directory (no auth needed)."""
        d = os.path.join(self.base, "data", "docker", "registry", "v2", "repositories", repo,
                         "_manifests", "tags")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []
