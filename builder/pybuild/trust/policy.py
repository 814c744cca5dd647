"""containers-policy.json(5): which signatures an image needs before pybuild pulls it.

The policy has a `default` list of requirements and `transports` -> TRANSPORT -> SCOPE ->
requirements; for a docker:// image the most specific scope wins (NAME:TAG or NAME@DIGEST, the
repository, its namespaces, the host, *.DOMAIN wildcards, then "" for the whole transport),
else `default`. Every requirement of the chosen list must hold:

- insecureAcceptAnything; reject;
- signedBy (keyType GPGKeys; keyPath, keyPaths or keyData): a simple signature from the
  lookaside location, by one of the keys, for this manifest digest, whose identity matches
  signedIdentity (default matchRepoDigestOrExact);
- sigstoreSigned (keyPath, keyPaths or keyData, a PEM public key): a sigstore signature
  attached in the registry, likewise.

A failure names the requirement and its scope and says why each signature was refused.
"""
import base64
import json
import os

from ocispec.errors import OCIError

from . import payload as _payload

_IDENTITY_TYPES = ("matchExact", "matchRepoDigestOrExact", "matchRepository", "exactReference",
                   "exactRepository", "remapIdentity")


class PolicyError(OCIError):
    """The policy refuses the image."""


def default_path() -> str:
    user = os.path.join(os.path.expanduser("~"), ".config", "containers", "policy.json")
    return user if os.path.exists(user) else "/etc/containers/policy.json"


class Requirement:
    def __init__(self, doc: dict, where: str, base_dir: str):
        self.where = where
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            raise OCIError(f"{where}: want an object with a \"type\"")
        self.type = doc["type"]
        self.keys_from = None
        allowed = {"type"}
        if self.type in ("signedBy", "sigstoreSigned"):
            allowed |= {"keyPath", "keyPaths", "keyData", "signedIdentity"}
            if self.type == "signedBy":
                allowed.add("keyType")
                kt = doc.get("keyType")
                if kt != "GPGKeys":
                    raise OCIError(f"{where}: keyType {kt!r} is not supported (want GPGKeys)")
            else:
                for k in ("fulcio", "rekorPublicKeyPath", "rekorPublicKeyData"):
                    if k in doc:
                        raise OCIError(f"{where}: {k} (keyless Fulcio/Rekor verification) is not "
                                       f"supported; give the signer's public key in keyPath")
            given = [k for k in ("keyPath", "keyPaths", "keyData") if k in doc]
            if len(given) != 1:
                raise OCIError(f"{where}: want exactly one of keyPath, keyPaths, keyData")
            k = given[0]
            if k == "keyPath":
                self.key_files = [self._path(doc[k], base_dir, f"{where}.keyPath")]
                self.keys_from = self.key_files[0]
            elif k == "keyPaths":
                if not isinstance(doc[k], list) or not doc[k]:
                    raise OCIError(f"{where}.keyPaths: want a non-empty list of paths")
                self.key_files = [self._path(p, base_dir, f"{where}.keyPaths") for p in doc[k]]
                self.keys_from = ", ".join(self.key_files)
            else:
                if not isinstance(doc[k], str):
                    raise OCIError(f"{where}.keyData: want base64 text")
                try:
                    self.key_data = base64.b64decode(doc[k], validate=True)
                except ValueError:
                    raise OCIError(f"{where}.keyData: not base64") from None
                self.key_files = None
                self.keys_from = "keyData"
            self.identity = self._identity(doc.get("signedIdentity"), f"{where}.signedIdentity")
        elif self.type not in ("insecureAcceptAnything", "reject"):
            raise OCIError(f"{where}: unknown requirement type {self.type!r} (want "
                           f"insecureAcceptAnything, reject, signedBy or sigstoreSigned)")
        extra = set(doc) - allowed
        if extra:
            raise OCIError(f"{where}: unknown field {sorted(extra)[0]!r}")

    @staticmethod
    def _path(p, base_dir, where) -> str:
        if not isinstance(p, str) or not p:
            raise OCIError(f"{where}: want a path")
        if not os.path.isabs(p):
            raise OCIError(f"{where}: {p!r} is not an absolute path")
        return p

    @staticmethod
    def _identity(doc, where) -> dict:
        if doc is None:
            return {"type": "matchRepoDigestOrExact"}
        if not isinstance(doc, dict) or doc.get("type") not in _IDENTITY_TYPES:
            raise OCIError(f"{where}: want a type of {', '.join(_IDENTITY_TYPES)}")
        need = {"exactReference": {"dockerReference"}, "exactRepository": {"dockerRepository"},
                "remapIdentity": {"prefix", "signedPrefix"}}.get(doc["type"], set())
        if set(doc) != need | {"type"}:
            raise OCIError(f"{where}: {doc['type']} takes "
                           + (", ".join(sorted(need)) if need else "no other field"))
        from ..registry import names
        if doc["type"] == "exactReference":
            if _name_only(doc["dockerReference"]):
                raise OCIError(f"{where}.dockerReference: want a tag or digest")
            names.parse(doc["dockerReference"])
        if doc["type"] == "exactRepository":
            names.parse(doc["dockerRepository"])
        return doc

    def describe(self) -> str:
        if self.type in ("signedBy", "sigstoreSigned"):
            return f"{self.type} (keys from {self.keys_from}; signedIdentity " \
                   f"{self.identity['type']}) at {self.where}"
        return f"{self.type} at {self.where}"

    def key_bytes(self) -> list[tuple[str, bytes]]:
        if self.key_files is None:
            return [("keyData", self.key_data)]
        out = []
        for p in self.key_files:
            try:
                with open(p, "rb") as f:
                    out.append((p, f.read(1 << 20)))
            except OSError as e:
                raise OCIError(f"{self.where}: key file {p}: {e.strerror}") from None
        return out


class Policy:
    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read(4 << 20))
        except FileNotFoundError:
            raise OCIError(f"signature policy {path} does not exist",
                           hint="give one with --signature-policy FILE "
                                "(containers-policy.json(5))") from None
        except OSError as e:
            raise OCIError(f"signature policy {path}: cannot read: {e.strerror}") from None
        except ValueError as e:
            raise OCIError(f"signature policy {path}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise OCIError(f"signature policy {path}: want a JSON object")
        extra = set(doc) - {"default", "transports"}
        if extra:
            raise OCIError(f"signature policy {path}: unknown field {sorted(extra)[0]!r}")
        if not isinstance(doc.get("default"), list) or not doc["default"]:
            raise OCIError(f"signature policy {path}: \"default\" must be a non-empty list of "
                           f"requirements")
        base = os.path.dirname(os.path.abspath(path))
        self.default = self._reqs(doc["default"], f"{path}: default", base)
        self.transports = {}
        tr = doc.get("transports") or {}
        if not isinstance(tr, dict):
            raise OCIError(f"signature policy {path}: transports: want an object")
        for name, scopes in tr.items():
            if not isinstance(scopes, dict):
                raise OCIError(f"signature policy {path}: transports.{name}: want an object "
                               f"of scopes")
            self.transports[name] = {
                s: self._reqs(r, f"{path}: transports.{name}[{s!r}]", base)
                for s, r in scopes.items()}

    @staticmethod
    def _reqs(lst, where, base) -> list:
        if not isinstance(lst, list) or not lst:
            raise OCIError(f"{where}: want a non-empty list of requirements")
        return [Requirement(d, f"{where}[{i}]", base) for i, d in enumerate(lst)]

    def requirements(self, ref) -> list:
        """The requirements for a docker:// image reference."""
        from .lookaside import scope_candidates
        scopes = self.transports.get("docker", {})
        for cand in scope_candidates(ref) + [""]:
            if cand in scopes:
                return scopes[cand]
        return self.default


# -- identities ------------------------------------------------------------------------------

def _name_only(text: str) -> bool:
    from ..registry import names
    text = names.strip_transport(text)
    if "@" in text:
        return False
    return text.rfind(":") <= text.rfind("/")


def _parse(text: str):
    from ..registry import names
    return names.parse(text)


def identity_matches(rule: dict, intended: str, signed: str) -> bool:
    """Does a signature's docker-reference `signed` fit the image reference `intended`?"""
    try:
        sig = _parse(signed)
    except OCIError:
        return False
    sig_name_only = _name_only(signed)
    t = rule["type"]
    if t == "exactReference":
        return not sig_name_only and str(sig) == str(_parse(rule["dockerReference"]))
    if t == "exactRepository":
        return sig.repository == _parse(rule["dockerRepository"]).repository
    img = _parse(intended)
    if t == "remapIdentity":
        prefix, signed_prefix = rule["prefix"], rule["signedPrefix"]
        full = str(img)
        if full == prefix or full.startswith(prefix.rstrip("/") + "/") or \
                full.startswith(prefix + ":") or full.startswith(prefix + "@"):
            img = _parse(signed_prefix + full[len(prefix):])
        t = "matchRepoDigestOrExact"
    if t == "matchRepository":
        return img.repository == sig.repository
    if t == "matchRepoDigestOrExact" and img.digest:
        return img.repository == sig.repository
    # matchExact, and matchRepoDigestOrExact for a tag: the very same NAME:TAG / NAME@DIGEST
    return not sig_name_only and str(img) == str(sig)


# -- evaluation ------------------------------------------------------------------------------

class Sources:
    """What the evaluation may need, fetched at most once: simple signatures from the
    lookaside location, sigstore signatures from the registry."""

    def __init__(self, simple_fn, sigstore_fn):
        self._simple_fn, self._sigstore_fn = simple_fn, sigstore_fn
        self._simple = self._sigstore = None

    def simple(self):
        if self._simple is None:
            self._simple = self._simple_fn()
        return self._simple

    def sigstore(self):
        if self._sigstore is None:
            self._sigstore = self._sigstore_fn()
        return self._sigstore


def _check_one(req, kind, signed, intended, manifest, digest) -> str:
    """'' when a verified payload fits, else why not."""
    try:
        dg, ident = _payload.parse(kind, signed)
    except OCIError as e:
        return f"bad payload: {e.message}"
    if not _payload.manifest_matches(manifest, dg):
        return f"it signs manifest {dg}, not this one ({digest})"
    if not identity_matches(req.identity, intended, ident):
        return f"it signs identity {ident!r}, which {req.identity['type']} does not accept " \
               f"for {intended}"
    return ""


def _signed_by(req, intended, manifest, digest, sources) -> str:
    from . import pgp
    certs = []
    for src, data in req.key_bytes():
        certs += pgp.load_certs(data, f"{req.where}: {src}")
    sigs, where = sources.simple()
    if not sigs:
        return f"no signature at {where}"
    why = []
    for i, sig in enumerate(sigs, 1):
        try:
            signed, _ = pgp.verify(sig, certs)
        except pgp.SignatureError as e:
            why.append(f"signature {i}: {e.message}")
            continue
        w = _check_one(req, _payload.SIMPLE, signed, intended, manifest, digest)
        if not w:
            return ""
        why.append(f"signature {i}: {w}")
    return "; ".join(why)


def _sigstore_signed(req, intended, manifest, digest, sources) -> str:
    from . import sigstore
    keys = []
    for src, data in req.key_bytes():
        keys += sigstore.load_public_keys(data, f"{req.where}: {src}")
    sigs, where = sources.sigstore()
    if not sigs:
        return f"no sigstore signature at {where}"
    why = []
    for i, (signed, sig_b64) in enumerate(sigs, 1):
        w = sigstore.verify(keys, signed, sig_b64)
        if not w:
            w = _check_one(req, _payload.SIGSTORE, signed, intended, manifest, digest)
        if not w:
            return ""
        why.append(f"signature {i}: {w}")
    return "; ".join(why)


def evaluate(policy: Policy, ref, manifest: bytes, digest: str, sources: Sources) -> list[str]:
    """Check `ref`'s top-level manifest against the policy; the requirements that held (for
    `pybuild verify`), or PolicyError naming the first one that did not."""
    intended = str(ref)
    ok = []
    for req in policy.requirements(ref):
        if req.type == "insecureAcceptAnything":
            why = ""
        elif req.type == "reject":
            why = "the policy rejects every image here"
        elif req.type == "signedBy":
            why = _signed_by(req, intended, manifest, digest, sources)
        else:
            why = _sigstore_signed(req, intended, manifest, digest, sources)
        if why:
            raise PolicyError(f"{intended} is rejected by requirement {req.describe()}: {why}")
        ok.append(req.describe())
    return ok
