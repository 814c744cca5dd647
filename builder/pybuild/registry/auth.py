"""Registry credentials: the files the ecosystem uses, `pybuild login`/`logout`, challenges.

Credentials are looked up, in order, in `--authfile` (alone, when given), then
`$REGISTRY_AUTH_FILE`, containers' auth.json (`$XDG_RUNTIME_DIR/containers/auth.json`, or
`/run/containers/UID/auth.json`, then `~/.config/containers/auth.json`), docker's
`$DOCKER_CONFIG/config.json` (`~/.docker/config.json`) and `~/.dockercfg`. Each holds
`{"auths": {"host[:port][/namespace]": {"auth": base64("user:password")}}}`; the longest key
matching the repository wins, as in containers/image. `pybuild login` writes where podman
does. Secrets never reach a message, a log line or a traceback: errors name the file only.
"""
import base64
import json
import os
import re

from ocispec.errors import OCIError

from .names import DOCKER_HUB

_DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io",
                    "https://index.docker.io/v1/")


class Credentials:
    """A user name and a password (or identity token); repr never shows the secret."""
    __slots__ = ("username", "password", "source")

    def __init__(self, username: str, password: str, source: str = ""):
        self.username, self.password, self.source = username, password, source

    def __repr__(self):
        return f"Credentials({self.username!r}, <hidden>, {self.source!r})"

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def default_authfile() -> str:
    """Where `pybuild login` writes, as podman: $REGISTRY_AUTH_FILE, else the runtime dir's."""
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return env
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "containers", "auth.json")
    return f"/run/containers/{os.getuid()}/auth.json"


def search_path(authfile: str | None = None) -> list[str]:
    if authfile:
        return [authfile]
    home = os.path.expanduser("~")
    docker_dir = os.environ.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    out = [default_authfile(), os.path.join(home, ".config", "containers", "auth.json"),
           os.path.join(docker_dir, "config.json"), os.path.join(home, ".dockercfg")]
    if os.environ.get("REGISTRY_AUTH_FILE"):  # it is default_authfile() then; add podman's
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        out.insert(1, os.path.join(xdg, "containers", "auth.json") if xdg
                   else f"/run/containers/{os.getuid()}/auth.json")
    return out


def _norm_key(key: str) -> str:
    """Docker writes `https://host/v1/`; containers write `host[/ns]`."""
    k = re.sub(r"^https?://", "", key).rstrip("/")
    k = re.sub(r"/v[12]$", "", k)
    return DOCKER_HUB if k in ("index.docker.io", "registry-1.docker.io") else k


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        return {}
    except PermissionError:
        return {}
    except (OSError, ValueError):
        raise OCIError(f"{path}: not a readable JSON auth file", hint="fix or remove it") from None
    if not isinstance(doc, dict):
        raise OCIError(f"{path}: not a JSON object (want {{\"auths\": {{...}}}})")
    if os.path.basename(path) == ".dockercfg" and "auths" not in doc:
        return doc  # the legacy format is the auths map itself
    auths = doc.get("auths") or {}
    if not isinstance(auths, dict):
        raise OCIError(f"{path}: \"auths\" must be an object")
    return auths


def _decode(entry, path: str, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        raise OCIError(f"{path}: auths[{key!r}] must be an object")
    if entry.get("auth"):
        try:
            user, sep, pw = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise OCIError(f"{path}: auths[{key!r}].auth is not base64 of user:password")
        return Credentials(user, pw, path)
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"], path)
    return None


def lookup(repository: str, authfile: str | None = None) -> Credentials | None:
    """Credentials for `host[:port]/path` from the first file that has a matching key."""
    host = repository.split("/", 1)[0]
    for path in search_path(authfile):
        auths = _read(path)
        best = None
        for key, entry in auths.items():
            k = _norm_key(key)
            if k == host or repository == k or repository.startswith(k + "/"):
                if best is None or len(k) > len(best[0]):
                    best = (k, key, entry)
        if best is not None:
            cred = _decode(best[2], path, best[1])
            if cred is not None:
                return cred
    return None


def _write_auths(path: str, update) -> None:
    from ..image.store import write_atomic
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        doc = {}
    except (OSError, ValueError):
        raise OCIError(f"{path}: not a readable JSON auth file", hint="fix or remove it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("auths", {}), dict):
        raise OCIError(f"{path}: not an auth file (want {{\"auths\": {{...}}}})")
    auths = doc.setdefault("auths", {})
    changed = update(auths)
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    old = os.umask(0o077)
    try:
        write_atomic(path, json.dumps(doc, indent="\t").encode() + b"\n")
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return changed


def save(key: str, cred: Credentials, authfile: str | None = None) -> str:
    """Store credentials for a registry (or host/namespace) key; returns the file."""
    path = authfile or default_authfile()
    token = base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()

    def upd(auths):
        for k in [k for k in auths if _norm_key(k) == key]:
            del auths[k]
        auths[key] = {"auth": token}
    _write_auths(path, upd)
    return path


def remove(key: str | None, authfile: str | None = None) -> bool:
    """Forget credentials for `key` (None: all) in the login file; False when there were none."""
    path = authfile or default_authfile()
    if not os.path.exists(path):
        return False

    def upd(auths):
        gone = [k for k in auths if key is None or _norm_key(k) == key]
        for k in gone:
            del auths[k]
        return bool(gone)
    return _write_auths(path, upd)


def parse_challenge(header: str) -> tuple[str, dict]:
    """`Bearer realm="x",service="y"` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = (header or "").strip().partition(" ")
    params = {}
    for m in re.finditer(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', rest):
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return scheme.lower(), params
