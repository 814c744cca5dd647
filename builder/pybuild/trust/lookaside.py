"""Where simple signatures live: registries.d's lookaside locations, as containers/image reads
and writes them (docs: containers-registries.d(5), containers-signature(5)).

A registries.d directory holds YAML files with `default-docker:` and `docker: {SCOPE: ...}`
entries; each gives `lookaside` (read) and `lookaside-staging` (write; `sigstore` and
`sigstore-staging` are their old names). The most specific scope wins (NAME:TAG or
NAME@DIGEST, the repository, its namespaces, the host). Signature N of manifest DIGEST of
host/path is at `BASE/path@sha256=HEX/signature-N`, N from 1. Reads take file://, http:// and
https://; writes only file:// (as containers/image).
"""
import os
import urllib.parse
import urllib.request

from ocispec.errors import OCIError

MAX_SIGNATURES = 64
MAX_SIGNATURE_SIZE = 4 << 20
_KEYS = {"lookaside", "lookaside-staging", "sigstore", "sigstore-staging",
         "use-sigstore-attachments"}


def default_dir() -> str:
    user = os.path.join(os.path.expanduser("~"), ".config", "containers", "registries.d")
    return user if os.path.isdir(user) else "/etc/containers/registries.d"


def builtin_default() -> str:
    if os.geteuid() == 0:
        return "file:///var/lib/containers/sigstore"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return "file://" + os.path.join(data, "containers", "sigstore")


def _check_entry(entry, where: str) -> dict:
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise OCIError(f"{where}: want a mapping of lookaside settings")
    for k, v in entry.items():
        if k not in _KEYS:
            raise OCIError(f"{where}: unknown key {k!r} (want one of {', '.join(sorted(_KEYS))})")
        if k == "use-sigstore-attachments":
            if not isinstance(v, bool):
                raise OCIError(f"{where}.{k}: want true or false")
        elif not isinstance(v, str) or urllib.parse.urlsplit(v).scheme not in (
                "file", "http", "https"):
            raise OCIError(f"{where}.{k}: want a file://, http:// or https:// URL")
    return entry


def load(directory: str | None) -> tuple[dict, dict]:
    """(default-docker entry, {scope: entry}) merged from DIR/*.yaml (one file may not
    repeat what another defines, as in containers/image)."""
    import yaml
    d = directory or default_dir()
    default, scopes, default_from = {}, {}, None
    if directory and not os.path.isdir(directory):
        raise OCIError(f"--registries.d {directory}: not a directory")
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".yaml"))
    except OSError:
        return default, scopes
    for n in names:
        path = os.path.join(d, n)
        try:
            with open(path, "rb") as f:
                doc = yaml.safe_load(f.read(1 << 20))
        except OSError as e:
            raise OCIError(f"{path}: cannot read: {e.strerror}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark else ""
            raise OCIError(f"{path}: not valid YAML{at}") from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise OCIError(f"{path}: want a mapping with default-docker and docker")
        for k in doc:
            if k not in ("default-docker", "docker"):
                raise OCIError(f"{path}: unknown key {k!r} (want default-docker or docker)")
        if doc.get("default-docker") is not None:
            if default_from:
                raise OCIError(f"{path}: default-docker is already defined in {default_from}")
            default = _check_entry(doc["default-docker"], f"{path}: default-docker")
            default_from = path
        docker = doc.get("docker") or {}
        if not isinstance(docker, dict):
            raise OCIError(f"{path}: docker: want a mapping of scopes")
        for scope, entry in docker.items():
            if scope in scopes:
                raise OCIError(f"{path}: docker scope {scope!r} is defined twice")
            scopes[str(scope)] = _check_entry(entry, f"{path}: docker.{scope}")
    return default, scopes


def scope_candidates(ref) -> list[str]:
    """Most specific first: NAME:TAG/NAME@DIGEST, the repository, its namespaces, the host,
    then *.DOMAIN wildcards."""
    out = [str(ref)]
    repo = ref.repository
    while True:
        out.append(repo)
        if "/" not in repo:
            break
        repo = repo.rsplit("/", 1)[0]
    host = ref.domain.split(":")[0]
    labels = host.split(".")
    out += ["*." + ".".join(labels[i:]) for i in range(1, len(labels))]
    return out


def entry_for(config: tuple[dict, dict], ref) -> dict:
    default, scopes = config
    for cand in scope_candidates(ref):
        if cand in scopes:
            return scopes[cand]
    return default


def base_url(config, ref, *, write: bool) -> str:
    e = entry_for(config, ref)
    keys = ("lookaside-staging", "sigstore-staging", "lookaside", "sigstore") if write else \
        ("lookaside", "sigstore")
    for k in keys:
        if e.get(k):
            return e[k]
    return builtin_default()


def signature_url(base: str, ref, digest: str, index: int) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{base.rstrip('/')}/{ref.path}@{algo}={hexpart}/signature-{index}"


def _local_path(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    if u.netloc not in ("", "localhost"):
        raise OCIError(f"lookaside {url}: file:// URLs name a local path (no host)")
    return urllib.parse.unquote(u.path)


def read_signatures(config, ref, digest: str) -> tuple[list[bytes], str]:
    """(signatures, where they were looked for)."""
    base = base_url(config, ref, write=False)
    out = []
    for i in range(1, MAX_SIGNATURES + 1):
        url = signature_url(base, ref, digest, i)
        data = _read(url)
        if data is None:
            break
        out.append(data)
    return out, signature_url(base, ref, digest, 1).rsplit("/", 1)[0]


def _read(url: str) -> bytes | None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "file":
        try:
            with open(_local_path(url), "rb") as f:
                return f.read(MAX_SIGNATURE_SIZE)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise OCIError(f"lookaside {url}: cannot read: {e.strerror}") from None
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read(MAX_SIGNATURE_SIZE)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise OCIError(f"lookaside {url}: the server answered {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", None) or e
        raise OCIError(f"lookaside {url}: cannot read: {why}") from None


def write_signature(config, ref, digest: str, signature: bytes) -> str:
    """Add a signature after those already there; its URL."""
    base = base_url(config, ref, write=True)
    if urllib.parse.urlsplit(base).scheme != "file":
        raise OCIError(f"lookaside {base}: pybuild writes signatures only to file:// locations "
                       f"(set lookaside-staging to one, and publish it with a web server)")
    for i in range(1, MAX_SIGNATURES + 1):
        url = signature_url(base, ref, digest, i)
        path = _local_path(url)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue
        except OSError as e:
            raise OCIError(f"lookaside {url}: cannot write: {e.strerror}") from None
        with os.fdopen(fd, "wb") as f:
            f.write(signature)
        return url
    raise OCIError(f"lookaside {base}: {MAX_SIGNATURES} signatures already for {digest}")
