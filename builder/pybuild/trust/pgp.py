"""OpenPGP for containers simple signing: keys, signing and verifying, through pysequoia.

Why pysequoia and not PGPy: PGPy sits on cryptography but has had no release since 2022 and
trips over current cryptography and Python versions; pysequoia binds Sequoia-PGP, which is
actively maintained, implements RFC 4880/9580 with a strict standard policy (SHA-1 and other
weak signatures refused), and ships manylinux wheels.

One thing pysequoia cannot do is the key skopeo/podman need: containers/image compares the
fingerprint of the key that made a signature with the *primary* fingerprints it imported, so
a signature by a signing subkey (what Sequoia's generator makes) is "not accepted". So
generate_key writes a v4 Ed25519 primary key that itself may sign and certify (what
`gpg --quick-gen-key` makes) with cryptography; pysequoia then parses and checks it, and
does all signing and verification.
"""
import hashlib
import os
import struct
import time

from ocispec.errors import OCIError

_ED25519_OID = bytes.fromhex("2b06010401da470f01")  # 1.3.6.1.4.1.11591.15.1
_EDDSA_LEGACY = 22
_SHA512 = 10


class SignatureError(OCIError):
    """A signature that does not verify (bad, unknown key, not OpenPGP)."""


def _lib():
    try:
        import pysequoia
    except ImportError:
        raise OCIError("OpenPGP signatures need the pysequoia package",
                       hint="pip install pysequoia") from None
    return pysequoia


def _why(e: BaseException) -> str:
    """pysequoia's message, first line only (it may carry a Rust backtrace)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# -- key generation (packets by hand: see the module docstring) ----------------------------

def _mpi(data: bytes) -> bytes:
    data = data.lstrip(b"\0")
    bits = (len(data) - 1) * 8 + data[0].bit_length() if data else 0
    return struct.pack(">H", bits) + data


def _packet(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 192:
        head = bytes([n])
    elif n < 8384:
        n -= 192
        head = bytes([(n >> 8) + 192, n & 0xFF])
    else:
        head = b"\xff" + struct.pack(">I", n)
    return bytes([0xC0 | tag]) + head + body


def _subpacket(kind: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, kind]) + data


def generate_key(user_id: str) -> tuple[str, str, str]:
    """(armored secret key, armored public key, fingerprint) of a new Ed25519 key whose
    primary signs and certifies, with no passphrase and no expiry."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    ps = _lib()
    key = ed25519.Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    pub = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    seed = key.private_bytes(raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    created = struct.pack(">I", int(time.time()))
    pub_body = (b"\x04" + created + bytes([_EDDSA_LEGACY, len(_ED25519_OID)]) + _ED25519_OID
                + _mpi(b"\x40" + pub))
    fpr = hashlib.sha1(b"\x99" + struct.pack(">H", len(pub_body)) + pub_body).digest()
    secret = _mpi(seed)
    sec_body = pub_body + b"\x00" + secret + struct.pack(">H", sum(secret) & 0xFFFF)
    uid = user_id.encode()
    hashed = b"".join([
        _subpacket(33, b"\x04" + fpr),  # issuer fingerprint
        _subpacket(2, created),  # signature creation time
        _subpacket(27, b"\x03"),  # key flags: certify, sign
        _subpacket(11, bytes([9, 8, 7])),  # preferred ciphers: AES256, AES192, AES128
        _subpacket(21, bytes([10, 8])),  # preferred hashes: SHA512, SHA256
        _subpacket(22, bytes([2, 1, 0])),  # preferred compression
        _subpacket(30, b"\x01"),  # features: MDC
        _subpacket(25, b"\x01"),  # primary user ID
    ])
    sig_head = bytes([4, 0x13, _EDDSA_LEGACY, _SHA512]) + struct.pack(">H", len(hashed)) + hashed
    h = hashlib.sha512()
    h.update(b"\x99" + struct.pack(">H", len(pub_body)) + pub_body)
    h.update(b"\xb4" + struct.pack(">I", len(uid)) + uid)
    h.update(sig_head + b"\x04\xff" + struct.pack(">I", len(sig_head)))
    digest = h.digest()
    rs = key.sign(digest)
    unhashed = _subpacket(16, fpr[-8:])  # issuer key ID
    sig_body = (sig_head + struct.pack(">H", len(unhashed)) + unhashed + digest[:2]
                + _mpi(rs[:32]) + _mpi(rs[32:]))
    tsk_bytes = _packet(5, sec_body) + _packet(13, uid) + _packet(2, sig_body)
    try:  # Sequoia checks the self-signature and the key flags
        tsk = ps.Tsk.from_bytes(tsk_bytes)
        tsk.signer()
    except Exception as e:
        raise OCIError(f"generate-key: the new key does not check out: {_why(e)}") from None
    return str(tsk), str(tsk.extract_certificate()), tsk.extract_certificate().fingerprint.upper()


# -- signing ------------------------------------------------------------------------------

def load_signer(path: str, passphrase: str | None = None):
    """(pysequoia signer, fingerprint) from a secret key file; errors never show the key."""
    ps = _lib()
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise OCIError(f"--sign-by {path}: cannot read the key: {e.strerror}") from None
    try:
        tsk = ps.Tsk.from_bytes(data)
    except Exception:
        raise OCIError(f"--sign-by {path}: not an OpenPGP secret key",
                       hint="make one with `pybuild generate-key`, or "
                            "`gpg --export-secret-keys --armor FINGERPRINT`") from None
    try:
        signer = tsk.signer(passphrase)
    except Exception as e:
        why = _why(e).lower()
        if passphrase is None and ("encrypt" in why or "password" in why or "secret" in why):
            raise OCIError(f"--sign-by {path}: the key is protected by a passphrase",
                           hint="give it with --sign-passphrase-file FILE") from None
        raise OCIError(f"--sign-by {path}: no usable signing key"
                       + (" (wrong passphrase?)" if passphrase is not None else "")) from None
    return signer, tsk.extract_certificate().fingerprint.upper()


def sign(signer, data: bytes) -> bytes:
    """A binary inline-signed OpenPGP message, as `gpg --sign` (and skopeo) write."""
    try:
        return _lib().sign(signer, data, armor=False)
    except Exception as e:
        raise OCIError(f"signing failed: {_why(e)}") from None


# -- verification -------------------------------------------------------------------------

def load_certs(data: bytes, source: str) -> list:
    """Public keys (one or more, armored or binary) from a keyPath file or keyData."""
    ps = _lib()
    try:
        certs = ps.Cert.split_bytes(data)
    except Exception as e:
        raise OCIError(f"{source}: not an OpenPGP public key: {_why(e)}") from None
    if not certs:
        raise OCIError(f"{source}: no OpenPGP public key in it")
    return certs


def verify(signature: bytes, certs: list) -> tuple[bytes, str]:
    """(signed payload, primary fingerprint) when exactly one valid signature by one of
    `certs` is on the message; SignatureError otherwise."""
    ps = _lib()
    if not signature or len(signature) > 4 << 20:
        raise SignatureError("not an OpenPGP signature")
    try:
        res = ps.verify(bytes=signature, store=lambda ids: certs)
    except Exception as e:
        why = _why(e)
        if "no valid signatures" in why.lower():
            why = "no valid signature by a trusted key"
        raise SignatureError(why) from None
    if len(res.valid_sigs) != 1 or res.bytes is None:
        raise SignatureError(f"{len(res.valid_sigs)} valid signatures where one is wanted")
    fpr = str(getattr(res.valid_sigs[0], "certificate", "")).upper()
    return res.bytes, fpr


def write_private(path: str, data: bytes) -> None:
    """Create a key file with mode 0600 from the start (never readable by others, even
    briefly); an existing file is not overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
