"""A Docker Registry HTTP API v2 / OCI distribution client on http.client and ssl.

One Client per registry host. It finds the scheme (HTTPS, verified against the system CAs plus
`--cert-dir`/certs.d; plain HTTP only for loopback registries or with `--tls-verify=false`),
answers the auth challenge of `GET /v2/` (anonymous, Basic, or a Bearer token fetched from the
realm, cached per scope), follows redirects (without credentials to another host), and turns
registry errors into one-line OCIErrors. Connections are kept per thread, so transfers can run
in parallel threads.

The standard library is enough here: the protocol is a handful of requests, and http.client
gives the streaming and Range control that transfers need without another dependency.
"""
import glob
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
from ..recordclass import record

from ocispec.errors import OCIError

from . import auth as _auth

TIMEOUT = float(os.environ.get("PYBUILD_REGISTRY_TIMEOUT", "60"))  # idle seconds per socket read
_MAX_REDIRECTS = 5
_CERT_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
# Network errors after which a request (or the rest of a blob) is worth one more try.
NET_ERRORS = (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException,
              ssl.SSLError, OSError)


class RegistryError(OCIError):
    """A registry answered with an error (status, code) or could not be reached."""

    def __init__(self, message, *, status: int | None = None, code: str | None = None, hint=None):
        super().__init__(message, hint=hint)
        self.status, self.code = status, code


@record
class Options:
    tls_verify: bool = True
    cert_dir: str | None = None
    authfile: str | None = None
    creds: "_auth.Credentials | None" = None
    platform: dict | None = None


def parse_bool(text: str, flag: str) -> bool:
    t = str(text).strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise OCIError(f"{flag} {text!r}: want true or false")


def _errors_text(body: bytes) -> tuple[str, str | None]:
    """A registry's {"errors": [{"code", "message"}]} as text, and the first code."""
    try:
        errs = json.loads(body).get("errors") or []
        parts = [f"{e.get('message') or e.get('code')} ({e.get('code')})" for e in errs
                 if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)[:300], errs[0].get("code")
    except (ValueError, AttributeError):
        pass
    text = body[:200].decode("utf-8", "replace").strip().replace("\n", " ")
    return text, None


class Response:
    """A finished or streaming response; .read() chunks, .close() frees the connection."""

    def __init__(self, resp, conn, client):
        self.status = resp.status
        self.headers = resp.headers
        self._resp, self._conn, self._client = resp, conn, client

    def read(self, n: int = -1) -> bytes:
        return self._resp.read(n) if n >= 0 else self._resp.read()

    def header(self, name: str) -> str | None:
        return self._resp.getheader(name)

    def close(self) -> None:
        """Keep the connection if the body was read to the end, else drop it."""
        if not self._resp.isclosed():
            self._conn.close()
        self._resp.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class Client:
    def __init__(self, host: str, opts: Options | None = None, *, display: str | None = None):
        self.host = host  # API host[:port]
        self.display = display or host
        self.opts = opts or Options()
        self.scheme = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._challenge = None  # (scheme, params) of GET /v2/'s 401, None: anonymous
        self._tokens: dict[str, str] = {}
        self._ctx = None
        loopback = host.split(":")[0] in ("localhost", "127.0.0.1", "[::1]") or \
            host.startswith("127.")
        self.allow_http = loopback or not self.opts.tls_verify

    # -- connections ------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ctx is None:
            ctx = ssl.create_default_context()
            if not self.opts.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            dirs = [self.opts.cert_dir] if self.opts.cert_dir else \
                [os.path.join(d, self.host) for d in _CERT_DIRS]
            for d in dirs:
                if self.opts.cert_dir and not os.path.isdir(d):
                    raise OCIError(f"--cert-dir {d}: not a directory")
                for ca in sorted(glob.glob(os.path.join(d, "*.crt"))):
                    try:
                        ctx.load_verify_locations(cafile=ca)
                    except (ssl.SSLError, OSError) as e:
                        raise OCIError(f"{ca}: not a PEM CA certificate ({e})") from None
                for cert in sorted(glob.glob(os.path.join(d, "*.cert"))):
                    key = cert[:-len(".cert")] + ".key"
                    try:
                        ctx.load_cert_chain(cert, key)
                    except (ssl.SSLError, OSError) as e:
                        raise OCIError(f"{cert}: client certificate and {key} do not load "
                                       f"({e})") from None
            self._ctx = ctx
        return self._ctx

    def _conn(self, scheme: str, netloc: str, fresh: bool = False):
        pool = self._local.__dict__.setdefault("pool", {})
        key = (scheme, netloc)
        conn = pool.get(key)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=TIMEOUT,
                                                   context=self._ssl_context())
            else:
                conn = http.client.HTTPConnection(netloc, timeout=TIMEOUT)
            pool[key] = conn
        return conn

    def close(self) -> None:
        for conn in getattr(self._local, "pool", {}).values():
            conn.close()

    def _raw(self, method, url, headers, body):
        """One HTTP exchange on a kept connection (one retry if a kept one went stale)."""
        u = urllib.parse.urlsplit(url)
        target = u.path + ("?" + u.query if u.query else "")
        for attempt in (0, 1):
            conn = self._conn(u.scheme, u.netloc, fresh=attempt > 0)
            if hasattr(body, "seek"):
                body.seek(0)
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                return Response(resp, conn, self)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if attempt:
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _net_error(self, e: BaseException) -> RegistryError:
        if isinstance(e, ssl.SSLCertVerificationError):
            return RegistryError(
                f"registry {self.display}: TLS certificate not trusted: {e.verify_message}",
                hint="give its CA with --cert-dir DIR, or --tls-verify=false")
        if isinstance(e, (socket.timeout, TimeoutError)):
            return RegistryError(f"registry {self.display}: no answer for {TIMEOUT:.0f}s")
        if isinstance(e, socket.gaierror):
            return RegistryError(f"registry {self.display}: cannot resolve the host name "
                                 f"({e.strerror})")
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return RegistryError(f"registry {self.display}: cannot connect: {why}")

    # -- scheme and auth ----------------------------------------------------------------

    def ping(self) -> None:
        """Find the scheme and the auth challenge (GET /v2/), once."""
        with self._lock:
            if self.scheme is not None:
                return
            schemes = ["https", "http"] if self.allow_http else ["https"]
            last = None
            for scheme in schemes:
                try:
                    with self._raw("GET", f"{scheme}://{self.host}/v2/", {}, None) as r:
                        body = r.read()
                        status, challenge = r.status, r.header("WWW-Authenticate")
                except ssl.SSLCertVerificationError as e:
                    raise self._net_error(e) from None
                except NET_ERRORS as e:
                    last = e
                    continue
                if status in (200, 401):
                    self.scheme = scheme
                    self._challenge = _auth.parse_challenge(challenge) if status == 401 else None
                    return
                if status == 404 and scheme == "https" and "http" in schemes:
                    continue
                msg, _ = _errors_text(body)
                raise RegistryError(f"registry {self.display}: GET /v2/ answered {status}"
                                    + (f": {msg}" if msg else "")
                                    + " (is this a registry?)", status=status)
            raise self._net_error(last)

    def credentials(self, repository: str | None = None):
        if self.opts.creds is not None:
            return self.opts.creds
        return _auth.lookup(repository or self.display, self.opts.authfile)

    def _token(self, scopes: tuple, repository: str | None, force: bool = False) -> str:
        key = " ".join(scopes)
        if not force and key in self._tokens:
            return self._tokens[key]
        _, params = self._challenge
        realm = params.get("realm")
        if not realm or urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise RegistryError(f"registry {self.display}: Bearer challenge without a usable "
                                f"realm")
        q = [("service", params["service"])] if params.get("service") else []
        q += [("scope", s) for s in scopes]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(q)
        headers = {"Accept": "application/json"}
        cred = self.credentials(repository)
        if cred is not None:
            headers["Authorization"] = cred.basic()
        try:
            r = self._raw("GET", url, headers, None)
        except ssl.SSLCertVerificationError as e:
            raise self._net_error(e) from None
        except NET_ERRORS as e:
            raise RegistryError(f"registry {self.display}: token server "
                                f"{urllib.parse.urlsplit(realm).netloc}: cannot connect: "
                                f"{getattr(e, 'strerror', None) or e}") from None
        with r:
            body = r.read(1 << 20)
        if r.status in (401, 403):
            raise RegistryError(f"registry {self.display}: "
                                + ("invalid username or password" if cred else
                                   "authentication required"), status=r.status,
                                hint=None if cred else f"pybuild login {self.display}")
        if r.status != 200:
            raise RegistryError(f"registry {self.display}: token server answered {r.status}",
                                status=r.status)
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {self.display}: token server sent no token")
        self._tokens[key] = token
        return token

    def _auth_header(self, scopes: tuple, repository: str | None, force=False) -> dict:
        if self._challenge is None:
            return {}
        scheme, _ = self._challenge
        if scheme == "bearer":
            return {"Authorization": "Bearer " + self._token(scopes, repository, force)}
        if scheme == "basic":
            cred = self.credentials(repository)
            return {"Authorization": cred.basic()} if cred else {}
        raise RegistryError(f"registry {self.display}: unsupported auth scheme {scheme!r}")

    # -- requests -------------------------------------------------------------------------

    def request(self, method: str, path_or_url: str, *, headers=None, body=None,
                scopes: tuple = (), repository: str | None = None, ok=(200,),
                what: str = "") -> Response:
        """Send a request with auth; follow redirects for GET/HEAD; RegistryError unless the
        status is in `ok`. The caller reads and closes the Response."""
        self.ping()
        url = path_or_url if "://" in path_or_url else f"{self.scheme}://{self.host}{path_or_url}"
        hdrs = dict(headers or {})
        origin = urllib.parse.urlsplit(url).netloc
        retried_auth = False
        for _ in range(_MAX_REDIRECTS + 1):
            same = urllib.parse.urlsplit(url).netloc == origin
            h = dict(hdrs)
            if same:
                h.update(self._auth_header(scopes, repository, force=retried_auth))
            try:
                r = self._raw(method, url, h, body)
            except ssl.SSLCertVerificationError as e:
                raise self._net_error(e) from None
            except NET_ERRORS as e:
                raise self._net_error(e) from None
            if r.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                loc = r.header("Location")
                r.read()
                r.close()
                if not loc:
                    break
                url = urllib.parse.urljoin(url, loc)
                continue
            if r.status == 401 and same and not retried_auth and self._challenge and \
                    self._challenge[0] == "bearer":
                # the token may lack a scope the registry wants (or have expired): once more
                chal = _auth.parse_challenge(r.header("WWW-Authenticate") or "")
                r.read()
                r.close()
                extra = chal[1].get("scope")
                if extra and extra not in scopes:
                    scopes = tuple(scopes) + (extra,)
                retried_auth = True
                continue
            if r.status in ok:
                return r
            return self._fail(r, method, what or url)
        raise RegistryError(f"registry {self.display}: too many redirects for {what or url}")

    def _fail(self, r: Response, method: str, what: str):
        body = r.read(1 << 16) if method != "HEAD" else b""
        r.close()
        msg, code = _errors_text(body)
        status = r.status
        if status == 401:
            cred = self.credentials()
            raise RegistryError(f"{what}: " + ("unauthorized: the registry refused the "
                                               "credentials" if cred else
                                               "authentication required"),
                                status=status, code=code,
                                hint=None if cred else f"pybuild login {self.display}")
        if status == 403:
            raise RegistryError(f"{what}: access denied" + (f": {msg}" if msg else ""),
                                status=status, code=code)
        if status == 404:
            raise RegistryError(f"{what}: not found" + (f": {msg}" if msg else ""),
                                status=status, code=code)
        raise RegistryError(f"{what}: registry {self.display} answered {status}"
                            + (f": {msg}" if msg else ""), status=status, code=code)

    def login(self, repository: str | None = None) -> None:
        """Check the credentials: a Bearer token or a Basic-authenticated GET /v2/."""
        self.ping()
        if self._challenge is None:
            return  # an open registry accepts anything
        if self._challenge[0] == "bearer":
            self._token((), repository, force=True)
            return
        r = self.request("GET", "/v2/", repository=repository, what=f"login to {self.display}")
        r.read()
        r.close()


def retry_sleep(attempt: int) -> None:
    time.sleep(min(2.0, 0.2 * (2 ** attempt)))
