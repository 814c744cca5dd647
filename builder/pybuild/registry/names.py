"""Image names as docker, skopeo and podman write them (distribution/reference's grammar).

`busybox` is `docker.io/library/busybox:latest`; a first component with a `.` or a `:`, or
`localhost`, is a registry host; `name@sha256:...` pins a digest. The store keeps the fully
qualified name, so `oci:STORE:docker.io/library/busybox:latest` means the same image to
skopeo, podman and pybuild.
"""
import re
from ..recordclass import record

from ocispec import digest as _digest
from ocispec.errors import OCIError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where docker.io's v2 API lives
LOCAL = "localhost"  # podman's domain for images that were built, never pulled

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
                     r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])"
                     r"(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_LOOPBACK = re.compile(r"(localhost|127(?:\.[0-9]+){3}|\[::1\])(?::[0-9]+)?")


@record(frozen=True)
class Reference:
    domain: str  # registry host[:port], as written (docker.io for Docker Hub)
    path: str  # repository path inside it (library/busybox)
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def reference(self) -> str:
        """What the registry API takes after /manifests/: the digest, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.domain == DOCKER_HUB else self.domain

    @property
    def is_local(self) -> bool:
        """`localhost/x` (no port): built here, there is no registry to pull it from."""
        return self.domain == LOCAL

    @property
    def is_loopback(self) -> bool:
        return bool(_LOOPBACK.fullmatch(self.domain))

    def __str__(self) -> str:
        """The fully qualified name the store keeps (digest wins over a tag)."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or 'latest'}"

    def with_tag(self, tag: str | None) -> "Reference":
        return Reference(self.domain, self.path, tag, None)


def strip_transport(text: str) -> str:
    """`docker://x` -> `x` (skopeo's transport prefix); other names unchanged."""
    return text[len("docker://"):] if text.startswith("docker://") else text


def parse(text: str) -> Reference:
    """A fully qualified Reference for an image name; OCIError naming what is wrong."""
    raw = text
    text = strip_transport(text) if isinstance(text, str) else text
    if not isinstance(text, str) or not text or len(text) > 4096 or any(c.isspace() for c in text):
        raise OCIError(f"invalid image name {raw!r}")
    name, at, dg = text.partition("@")
    if at:
        try:
            _digest.parse(dg)
        except OCIError as e:
            raise OCIError(f"invalid image name {raw!r}: {e}") from None
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise OCIError(f"invalid image name {raw!r}: bad tag {tag!r} (letters, digits, _ . -;"
                           f" at most 128)")
    first, sep, rest = name.partition("/")
    # distribution/reference: a host has a dot or port, is localhost, or has upper case.
    if sep and ("." in first or ":" in first or first == LOCAL or first.lower() != first):
        domain, path = first, rest
        if not _DOMAIN.fullmatch(domain):
            raise OCIError(f"invalid image name {raw!r}: bad registry host {domain!r}")
    else:
        domain, path = DOCKER_HUB, name
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    if not _PATH.fullmatch(path):
        why = "must be lower case" if path.lower() != path else \
            "want [a-z0-9] components separated by / . _ -"
        raise OCIError(f"invalid image name {raw!r}: repository {path!r} {why}")
    if len(domain) + 1 + len(path) > 255:
        raise OCIError(f"invalid image name {raw!r}: longer than 255 characters")
    if tag is None and not at:
        tag = "latest"
    return Reference(domain, path, tag, dg or None)


def store_candidates(text: str) -> list[str]:
    """Names under which the store may hold `text`, most specific first: as written (what
    `pybuild build -t` stores), then fully qualified (what pull stores), then podman's
    `localhost/` for a short name."""
    from ..image.store import normalize_ref
    out = [normalize_ref(strip_transport(text))]
    try:
        ref = parse(text)
    except OCIError:
        return out
    for n in (str(ref), ) + ((str(Reference(LOCAL, ref.path.removeprefix("library/"), ref.tag,
                                                 ref.digest)),) if ref.domain == DOCKER_HUB else ()):
        if n not in out:
            out.append(n)
    return out
