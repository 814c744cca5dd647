"""The signed JSON both signature formats carry (containers-signature(5), and the sigstore
"simplesigning" payload), made and parsed as strictly as containers/image does: exactly the
known keys in `critical`, the right type string, and a manifest digest."""
import json
import time

from ocispec import digest as _digest
from ocispec.errors import OCIError

SIMPLE = "atomic container signature"
SIGSTORE = "cosign container image signature"
CREATOR = "pybuild"


def make(kind: str, manifest_digest: str, identity: str) -> bytes:
    doc = {"critical": {"type": kind, "image": {"docker-manifest-digest": manifest_digest},
                        "identity": {"docker-reference": identity}},
           "optional": {"creator": CREATOR, "timestamp": int(time.time())}}
    return json.dumps(doc, separators=(",", ":")).encode()


def _exact(obj, keys: set, where: str) -> dict:
    if not isinstance(obj, dict):
        raise OCIError(f"{where} is not a JSON object")
    if set(obj) != keys:
        extra = sorted(set(obj) - keys)
        missing = sorted(keys - set(obj))
        raise OCIError(f"{where}: " + (f"unexpected field {extra[0]!r}" if extra else
                                       f"missing field {missing[0]!r}"))
    return obj


def parse(kind: str, data: bytes) -> tuple[str, str]:
    """(manifest digest, docker reference) of a verified payload."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise OCIError("the signed payload is not JSON") from None
    _exact(doc, {"critical", "optional"}, "the signed payload")
    crit = _exact(doc["critical"], {"type", "image", "identity"}, "critical")
    if crit["type"] != kind:
        raise OCIError(f"critical.type is {crit['type']!r}, not {kind!r}")
    dg = _exact(crit["image"], {"docker-manifest-digest"}, "critical.image")[
        "docker-manifest-digest"]
    ident = _exact(crit["identity"], {"docker-reference"}, "critical.identity")[
        "docker-reference"]
    if not isinstance(dg, str) or not _digest.is_valid(dg):
        raise OCIError("critical.image.docker-manifest-digest is not a digest")
    if not isinstance(ident, str):
        raise OCIError("critical.identity.docker-reference is not a string")
    if not isinstance(doc["optional"], (dict, type(None))):  # cosign writes null
        raise OCIError("optional is not a JSON object")
    return dg, ident


def manifest_matches(manifest: bytes, digest: str) -> bool:
    algorithm, _ = _digest.parse(digest)
    h = _digest.Hasher(algorithm)
    h.update(manifest)
    return h.digest == digest
