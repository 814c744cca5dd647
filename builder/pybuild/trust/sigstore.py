"""Sigstore (cosign-style) signatures attached in the registry, as containers/image and cosign
write them: for manifest sha256:HEX, an OCI manifest tagged `sha256-HEX.sig` in the same
repository, one layer per signature of media type application/vnd.dev.cosign.simplesigning.v1
+json whose blob is the signed payload and whose annotation dev.cosignproject.cosign/signature
is the base64 signature (ECDSA P-256 / RSA with SHA-256, or Ed25519) over the blob.

Keys are PEM: the public key as cosign.pub is (PKIX), the private key PKCS#8 (optionally
encrypted with a passphrase). cosign's own scrypt+secretbox private key files need NaCl's
XSalsa20, which cryptography lacks: they are refused with a hint to convert.
"""
import base64
import json

from ocispec import digest as _digest
from ocispec import mediatypes as mt
from ocispec.errors import OCIError

LAYER_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
MAX_BLOB = 4 << 20


def sig_tag(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}-{hexpart}.sig"


# -- keys -----------------------------------------------------------------------------------

def load_public_keys(data: bytes, source: str) -> list:
    from cryptography.hazmat.primitives import serialization
    blocks = [b"-----BEGIN PUBLIC KEY-----" + b for b in data.split(b"-----BEGIN PUBLIC KEY-----")[1:]]
    if not blocks:
        raise OCIError(f"{source}: no PEM public key (-----BEGIN PUBLIC KEY-----) in it")
    keys = []
    for b in blocks:
        try:
            keys.append(serialization.load_pem_public_key(b))
        except ValueError:
            raise OCIError(f"{source}: not a usable PEM public key") from None
    return keys


def load_private_key(path: str, passphrase: str | None):
    from cryptography.hazmat.primitives import serialization
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise OCIError(f"--sign-by-sigstore-private-key {path}: cannot read: {e.strerror}") \
            from None
    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in data or b"ENCRYPTED COSIGN PRIVATE KEY" in data:
        raise OCIError(f"--sign-by-sigstore-private-key {path}: cosign's encrypted key format "
                       f"is not supported",
                       hint="convert it to PKCS#8 PEM, or make one with "
                            "`pybuild generate-key --sigstore`")
    try:
        return serialization.load_pem_private_key(
            data, passphrase.encode() if passphrase is not None else None)
    except TypeError:
        raise OCIError(f"--sign-by-sigstore-private-key {path}: "
                       + ("the key is protected by a passphrase" if passphrase is None else
                          "the key is not encrypted, but a passphrase was given"),
                       hint="--sign-passphrase-file FILE" if passphrase is None else None) \
            from None
    except ValueError:
        raise OCIError(f"--sign-by-sigstore-private-key {path}: not a PEM private key"
                       + (" (or a wrong passphrase)" if passphrase is not None else "")) from None


def generate_key() -> tuple[bytes, bytes]:
    """(PKCS#8 PEM private key, PKIX PEM public key) of a new ECDSA P-256 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


def sign(key, data: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(data)
    else:
        raise OCIError("sigstore signing wants an ECDSA, RSA or Ed25519 key")
    return base64.b64encode(sig).decode()


def verify(keys: list, data: bytes, sig_b64) -> str:
    """'' when one of `keys` made the signature over `data`, else why not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    if not isinstance(sig_b64, str):
        return "no signature annotation"
    try:
        sig = base64.b64decode(sig_b64, validate=True)
    except ValueError:
        return "the signature annotation is not base64"
    for key in keys:
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(sig, data)
            else:
                continue
            return ""
        except (InvalidSignature, ValueError):
            continue
    return "the signature does not verify with any of the keys"


# -- the registry side ------------------------------------------------------------------------

def _blob(client, ref, desc, what) -> bytes:
    from ..registry.transfer import _scope
    dg = desc.get("digest")
    if not isinstance(dg, str) or not _digest.is_valid(dg):
        raise OCIError(f"{what}: a layer without a valid digest")
    if not isinstance(desc.get("size"), int) or not 0 <= desc["size"] <= MAX_BLOB:
        raise OCIError(f"{what}: a signature layer of {desc.get('size')} bytes (at most "
                       f"{MAX_BLOB})")
    r = client.request("GET", f"/v2/{ref.path}/blobs/{dg}", scopes=(_scope(ref.path),),
                       repository=ref.repository, what=what)
    with r:
        data = r.read(desc["size"] + 1)
    if not _digest.is_valid(dg) or _digest.sha256_bytes(data) != dg:
        raise OCIError(f"{what}: blob {dg} does not match its digest")
    return data


def read_signatures(client, ref, digest: str) -> tuple[list, str]:
    """([(payload, base64 signature)], where) from the `.sig` manifest; none if it is absent."""
    from ..registry.client import RegistryError
    from ..registry.transfer import fetch_manifest
    tag = sig_tag(digest)
    where = f"{ref.repository}:{tag}"
    try:
        data, _, _ = fetch_manifest(client, ref, tag, f"sigstore signatures {where}")
    except RegistryError as e:
        if e.status == 404:
            return [], where
        raise
    man = json.loads(data)
    out = []
    for layer in man.get("layers") or []:
        if not isinstance(layer, dict) or layer.get("mediaType") != LAYER_TYPE:
            continue
        blob = _blob(client, ref, layer, f"sigstore signatures {where}")
        out.append((blob, (layer.get("annotations") or {}).get(SIG_ANNOTATION)))
    return out, where


def _put_blob(client, ref, data: bytes, what: str) -> dict:
    import urllib.parse

    from ..registry.transfer import _scope
    dg = _digest.sha256_bytes(data)
    scopes = (_scope(ref.path, "pull,push"),)
    r = client.request("POST", f"/v2/{ref.path}/blobs/uploads/", headers={"Content-Length": "0"},
                       scopes=scopes, repository=ref.repository, ok=(202,), what=what)
    r.read()
    r.close()
    url = urllib.parse.urljoin(f"{client.scheme}://{client.host}/v2/", r.header("Location") or "")
    url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": dg})
    r = client.request("PUT", url, body=data, scopes=scopes, repository=ref.repository,
                       ok=(201,), what=what,
                       headers={"Content-Type": "application/octet-stream",
                                "Content-Length": str(len(data))})
    r.read()
    r.close()
    return {"digest": dg, "size": len(data)}


def attach_signature(client, ref, digest: str, signed: bytes, sig_b64: str) -> str:
    """Add a signature layer to the `.sig` manifest (kept: the signatures already there)."""
    from ..registry.client import RegistryError
    from ..registry.transfer import _scope, fetch_manifest
    tag = sig_tag(digest)
    what = f"sigstore signature {ref.repository}:{tag}"
    layers = []
    try:
        data, _, _ = fetch_manifest(client, ref, tag, what)
        layers = [d for d in json.loads(data).get("layers") or [] if isinstance(d, dict)]
    except RegistryError as e:
        if e.status != 404:
            raise
    blob = _put_blob(client, ref, signed, what)
    layer = {"mediaType": LAYER_TYPE, "size": blob["size"], "digest": blob["digest"],
             "annotations": {SIG_ANNOTATION: sig_b64}}
    layers = [d for d in layers if d.get("digest") != layer["digest"]] + [layer]
    config = {"architecture": "", "created": "0001-01-01T00:00:00Z",
              "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
              "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layers]},
              "config": {}}
    cfg = json.dumps(config, separators=(",", ":")).encode()
    cdesc = _put_blob(client, ref, cfg, what)
    man = {"schemaVersion": 2, "mediaType": mt.IMAGE_MANIFEST,
           "config": {"mediaType": mt.IMAGE_CONFIG, **cdesc}, "layers": layers}
    body = json.dumps(man, separators=(",", ":")).encode()
    r = client.request("PUT", f"/v2/{ref.path}/manifests/{tag}", body=body,
                       headers={"Content-Type": mt.IMAGE_MANIFEST,
                                "Content-Length": str(len(body))},
                       scopes=(_scope(ref.path, "pull,push"),), repository=ref.repository,
                       ok=(201,), what=what)
    r.read()
    r.close()
    return f"{ref.repository}:{tag}"

