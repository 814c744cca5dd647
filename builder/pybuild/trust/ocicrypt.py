"""Encrypted layers in the ocicrypt format that skopeo's --encryption-key / --decryption-key
and containerd's imgcrypt use (github.com/containers/ocicrypt), JWE key wrapping only.

An encrypted layer is the compressed layer blob under AES-256-CTR, with an HMAC-SHA256 (same
key) over the ciphertext. Its descriptor gets `+encrypted` on the media type and two
annotations: `org.opencontainers.image.enc.pubopts` (base64 JSON: cipher, hmac) and
`org.opencontainers.image.enc.keys.jwe` (base64 of a JWE, JSON serialization, A256GCM content
encryption, one recipient per public key: RSA-OAEP for RSA keys, ECDH-ES+A256KW for EC keys)
whose plaintext is the private options: the symmetric key, the CTR nonce and the digest of
the plaintext blob. Decryption checks the HMAC and that digest before anything is stored.

Key material never goes into an error message, a log line or the store.
"""
import base64
import hashlib
import hmac as _hmac
import json
import os

from ocispec.errors import OCIError

ENCRYPTED_SUFFIX = "+encrypted"
ANN_JWE = "org.opencontainers.image.enc.keys.jwe"
ANN_PUBOPTS = "org.opencontainers.image.enc.pubopts"
_ANN_PREFIX = "org.opencontainers.image.enc."
CIPHER = "AES_256_CTR_HMAC_SHA256"
_CHUNK = 1 << 20


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64u(text) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64url text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_encrypted(desc: dict) -> bool:
    return str(desc.get("mediaType", "")).endswith(ENCRYPTED_SUFFIX)


# -- keys ---------------------------------------------------------------------------------------

def load_public_key(spec: str):
    """`jwe:PATH` (PEM public key, as skopeo's --encryption-key takes it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    proto, sep, path = spec.partition(":")
    if not sep or proto != "jwe":
        raise OCIError(f"--encryption-key {spec}: want jwe:PUBLIC_KEY.pem (only JWE key wrapping "
                       f"is supported)")
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise OCIError(f"--encryption-key {path}: cannot read: {e.strerror}") from None
    try:
        if b"CERTIFICATE" in data:
            from cryptography import x509
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError:
        raise OCIError(f"--encryption-key {path}: not a PEM public key") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in (
            "secp256r1", "secp384r1", "secp521r1"):
        raise OCIError(f"--encryption-key {path}: EC curve {key.curve.name} is not usable in JWE")
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise OCIError(f"--encryption-key {path}: want an RSA or EC public key")
    return key


def load_private_key(path: str):
    """`PATH` (PEM private key, PKCS#8, PKCS#1 or SEC1, unencrypted)."""
    from cryptography.hazmat.primitives import serialization
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise OCIError(f"--decryption-key {path}: cannot read: {e.strerror}") from None
    try:
        return serialization.load_pem_private_key(data, None)
    except TypeError:
        raise OCIError(f"--decryption-key {path}: the key is passphrase-protected, which is "
                       f"not supported; decrypt it with openssl first") from None
    except ValueError:
        raise OCIError(f"--decryption-key {path}: not a PEM private key") from None


def generate_key() -> tuple[bytes, bytes]:
    """(PKCS#8 PEM private, PEM public) of a new RSA-4096 key, for `jwe:`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            key.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))


# -- JWE (RFC 7516), the subset go-jose writes for ocicrypt ---------------------------------------

_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}
_KW_BITS = {"ECDH-ES+A128KW": 128, "ECDH-ES+A192KW": 192, "ECDH-ES+A256KW": 256}
_GCM_BITS = {"A128GCM": 128, "A192GCM": 192, "A256GCM": 256}


def _concat_kdf(z: bytes, alg: str, bits: int, apu: bytes = b"", apv: bytes = b"") -> bytes:
    def lp(b):
        return len(b).to_bytes(4, "big") + b
    other = lp(alg.encode()) + lp(apu) + lp(apv) + bits.to_bytes(4, "big")
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += hashlib.sha256(counter.to_bytes(4, "big") + z + other).digest()
        counter += 1
    return out[:bits // 8]


def _wrap_cek(key, cek: bytes) -> dict:
    """One recipient: its header and encrypted_key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv, size = _CURVES[key.curve.name]
        eph = ec.generate_private_key(key.curve)
        z = eph.exchange(ec.ECDH(), key)
        kek = _concat_kdf(z, "ECDH-ES+A256KW", 256)
        nums = eph.public_key().public_numbers()
        epk = {"kty": "EC", "crv": crv, "x": _b64u(nums.x.to_bytes(size, "big")),
               "y": _b64u(nums.y.to_bytes(size, "big"))}
        return {"header": {"alg": "ECDH-ES+A256KW", "epk": epk},
                "encrypted_key": aes_key_wrap(kek, cek)}
    ek = key.encrypt(cek, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(),
                                       label=None))
    return {"header": {"alg": "RSA-OAEP"}, "encrypted_key": ek}


def jwe_encrypt(plaintext: bytes, recipients: list) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    cek = os.urandom(32)
    wrapped = [_wrap_cek(k, cek) for k in recipients]
    protected = {"enc": "A256GCM"}
    if len(wrapped) == 1:  # go-jose: a single recipient's header moves into the protected one
        protected.update(wrapped[0]["header"])
    prot = _b64u(json.dumps(protected, separators=(",", ":")).encode())
    iv = os.urandom(12)
    ct = AESGCM(cek).encrypt(iv, plaintext, prot.encode())
    doc = {"protected": prot, "iv": _b64u(iv), "ciphertext": _b64u(ct[:-16]),
           "tag": _b64u(ct[-16:])}
    if len(wrapped) == 1:
        doc["encrypted_key"] = _b64u(wrapped[0]["encrypted_key"])
    else:
        doc["recipients"] = [{"header": w["header"], "encrypted_key": _b64u(w["encrypted_key"])}
                             for w in wrapped]
    return json.dumps(doc, separators=(",", ":")).encode()


def _unwrap_cek(key, header: dict, encrypted_key: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
    alg = header.get("alg")
    if alg in ("RSA-OAEP", "RSA-OAEP-256") and isinstance(key, rsa.RSAPrivateKey):
        h = hashes.SHA1() if alg == "RSA-OAEP" else hashes.SHA256()
        return key.decrypt(encrypted_key, padding.OAEP(mgf=padding.MGF1(h), algorithm=h,
                                                       label=None))
    if alg in _KW_BITS and isinstance(key, ec.EllipticCurvePrivateKey):
        epk = header.get("epk") or {}
        crv, size = _CURVES.get(key.curve.name, (None, 0))
        if epk.get("kty") != "EC" or epk.get("crv") != crv:
            raise ValueError("epk does not fit the key")
        pub = ec.EllipticCurvePublicNumbers(int.from_bytes(_unb64u(epk["x"]), "big"),
                                            int.from_bytes(_unb64u(epk["y"]), "big"),
                                            key.curve).public_key()
        z = key.exchange(ec.ECDH(), pub)
        kek = _concat_kdf(z, alg, _KW_BITS[alg], _unb64u(header.get("apu", "")),
                          _unb64u(header.get("apv", "")))
        return aes_key_unwrap(kek, encrypted_key)
    raise ValueError(f"key wrapping {alg!r} does not fit this key")


def jwe_decrypt(data: bytes, keys: list) -> bytes:
    """The plaintext, or ValueError (no key fits / not a JWE)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JWE JSON object")
    prot_b64 = doc.get("protected", "")
    protected = json.loads(_unb64u(prot_b64)) if prot_b64 else {}
    shared = dict(doc.get("unprotected") or {}, **protected)
    recips = doc.get("recipients") or [{"header": doc.get("header") or {},
                                         "encrypted_key": doc.get("encrypted_key", "")}]
    enc = shared.get("enc")
    if enc not in _GCM_BITS:
        raise ValueError(f"content encryption {enc!r} is not supported")
    aad = prot_b64.encode() + (b"." + doc["aad"].encode() if doc.get("aad") else b"")
    for r in recips:
        header = dict(shared, **(r.get("header") or {}))
        for key in keys:
            try:
                cek = _unwrap_cek(key, header, _unb64u(r.get("encrypted_key", "")))
                return AESGCM(cek).decrypt(_unb64u(doc["iv"]),
                                           _unb64u(doc["ciphertext"]) + _unb64u(doc["tag"]), aad)
            except Exception:  # a wrong key or a tampered JWE: try the next one
                continue
    raise ValueError("none of the keys can open it")


# -- layers ----------------------------------------------------------------------------------

def _ctr(key: bytes, nonce: bytes):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    return Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()


def encrypt_layer(src, dst, desc: dict, recipients: list) -> dict:
    """Encrypt the blob read from `src` into `dst`; the encrypted descriptor (digest and size
    are the caller's, from what it wrote)."""
    symkey, nonce = os.urandom(32), os.urandom(16)
    ctr = _ctr(symkey, nonce)
    mac = _hmac.new(symkey, digestmod=hashlib.sha256)
    plain = hashlib.sha256()
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            break
        plain.update(chunk)
        ct = ctr.update(chunk)
        mac.update(ct)
        dst.write(ct)
    if "sha256:" + plain.hexdigest() != desc["digest"]:
        raise OCIError(f"layer {desc['digest']}: the stored blob does not match its digest")
    priv = {"symkey": base64.b64encode(symkey).decode(), "digest": desc["digest"],
            "cipheroptions": {"nonce": base64.b64encode(nonce).decode()}}
    pub = {"cipher": CIPHER, "hmac": base64.b64encode(mac.digest()).decode(),
           "cipheroptions": {}}
    jwe = jwe_encrypt(json.dumps(priv, separators=(",", ":")).encode(), recipients)
    ann = {k: v for k, v in (desc.get("annotations") or {}).items()
           if not k.startswith(_ANN_PREFIX)}
    ann[ANN_JWE] = base64.b64encode(jwe).decode()
    ann[ANN_PUBOPTS] = base64.b64encode(json.dumps(pub, separators=(",", ":")).encode()).decode()
    return {"mediaType": desc["mediaType"] + ENCRYPTED_SUFFIX, "annotations": ann}


class LayerKey:
    """What decrypting one layer needs, unwrapped from its annotations."""

    def __init__(self, desc: dict, keys: list, what: str):
        ann = desc.get("annotations") or {}
        if ANN_JWE not in ann:
            others = sorted(k for k in ann if k.startswith(_ANN_PREFIX + "keys."))
            raise OCIError(f"{what}: encrypted with "
                           + (f"{others[0][len(_ANN_PREFIX) + 5:]} key wrapping, which is not "
                              f"supported (only jwe)" if others else "no key annotation"))
        try:
            pub = json.loads(base64.b64decode(ann.get(ANN_PUBOPTS, "")))
            cipher = pub.get("cipher")
            self.hmac = base64.b64decode(pub.get("hmac", ""))
        except (ValueError, AttributeError):
            raise OCIError(f"{what}: unreadable {ANN_PUBOPTS} annotation") from None
        if cipher != CIPHER:
            raise OCIError(f"{what}: cipher {cipher!r} is not supported (want {CIPHER})")
        priv = None
        for one in ann[ANN_JWE].split(","):
            try:
                priv = json.loads(jwe_decrypt(base64.b64decode(one), keys))
                break
            except ValueError:
                continue
        if priv is None:
            raise OCIError(f"{what}: none of the --decryption-key keys can decrypt it",
                           hint="give the private key whose public key encrypted the image")
        try:
            self.symkey = base64.b64decode(priv["symkey"])
            self.nonce = base64.b64decode(priv["cipheroptions"]["nonce"])
            self.digest = priv["digest"]
        except (KeyError, TypeError, ValueError):
            raise OCIError(f"{what}: the wrapped layer key is malformed") from None
        if len(self.symkey) != 32 or len(self.nonce) != 16:
            raise OCIError(f"{what}: the wrapped layer key is malformed")
        from ocispec import digest as _digest
        if not isinstance(self.digest, str) or not _digest.is_valid(self.digest):
            raise OCIError(f"{what}: the wrapped layer key names no valid plaintext digest")

    def decrypt(self, src, dst, what: str) -> tuple[str, int]:
        """Decrypt src into dst; (plaintext digest, size) after the HMAC and the digest check
        (OCIError otherwise: the caller then discards dst)."""
        from ocispec import digest as _digest
        ctr = _ctr(self.symkey, self.nonce)
        mac = _hmac.new(self.symkey, digestmod=hashlib.sha256)
        h = _digest.Hasher(_digest.parse(self.digest)[0])
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            mac.update(chunk)
            pt = ctr.update(chunk)
            h.update(pt)
            dst.write(pt)
        if not _hmac.compare_digest(mac.digest(), self.hmac):
            raise OCIError(f"{what}: the encrypted layer fails its HMAC check (tampered or "
                           f"corrupt); nothing stored")
        if h.digest != self.digest:
            raise OCIError(f"{what}: the decrypted layer does not match its digest; nothing "
                           f"stored")
        return h.digest, h.size


def decrypted_descriptor(desc: dict, digest: str, size: int) -> dict:
    out = {k: v for k, v in desc.items() if k not in ("annotations", "digest", "size")}
    out["mediaType"] = desc["mediaType"][:-len(ENCRYPTED_SUFFIX)]
    out["digest"], out["size"] = digest, size
    ann = {k: v for k, v in (desc.get("annotations") or {}).items()
           if not k.startswith(_ANN_PREFIX)}
    if ann:
        out["annotations"] = ann
    return out
