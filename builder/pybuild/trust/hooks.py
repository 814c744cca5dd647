"""The push/pull hooks that tie trust to pybuild.registry.transfer: sign after a push, check
the policy before a pull fetches any blob."""
import os

from ocispec.errors import OCIError

from . import lookaside, payload, policy as _policy


def read_passphrase(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 16).decode("utf-8", "replace")
    except OSError as e:
        raise OCIError(f"--sign-passphrase-file {path}: cannot read: {e.strerror}") from None
    return text.split("\n", 1)[0].rstrip("\r")


def signer(sign_by: str | None, sigstore_key: str | None, passphrase_file: str | None,
           registries_d: str | None, identity: str | None, progress=None):
    """after(client, ref, digest) for transfer.push, or None when nothing is to be signed.
    Keys are loaded (and a passphrase checked) before anything is pushed."""
    if not sign_by and not sigstore_key:
        if identity:
            raise OCIError("--sign-identity needs --sign-by or --sign-by-sigstore-private-key")
        return None
    pw = read_passphrase(passphrase_file)
    pgp_signer = ss_key = None
    if sign_by:
        from . import pgp
        if not os.path.exists(sign_by):
            raise OCIError(f"--sign-by {sign_by}: no such key file",
                           hint="pybuild signs with a key file: make one with `pybuild "
                                "generate-key`, or export yours with `gpg --export-secret-keys "
                                "--armor FINGERPRINT > key.asc`")
        pgp_signer, _ = pgp.load_signer(sign_by, pw)
    if sigstore_key:
        from . import sigstore
        ss_key = sigstore.load_private_key(sigstore_key, pw)
    config = lookaside.load(registries_d) if pgp_signer is not None else None
    if identity:
        from ..registry import names
        if "@" in identity or ":" not in identity.rsplit("/", 1)[-1]:
            raise OCIError(f"--sign-identity {identity}: want a fully specified NAME:TAG")
        ident_ref = names.parse(identity)

    def after(client, ref, digest):
        ident = str(ident_ref) if identity else str(ref)
        if pgp_signer is not None:
            from . import pgp
            sig = pgp.sign(pgp_signer, payload.make(payload.SIMPLE, digest, ident))
            where = lookaside.write_signature(config, ref, digest, sig)
            if progress is not None:
                progress.info(f"signature written to {where}")
        if ss_key is not None:
            from . import sigstore
            body = payload.make(payload.SIGSTORE, digest, ident)
            where = sigstore.attach_signature(client, ref, digest, body,
                                              sigstore.sign(ss_key, body))
            if progress is not None:
                progress.info(f"sigstore signature attached as {where}")
    return after


def load_policy(path: str | None):
    """The policy to enforce: --signature-policy, else the user's or the system's
    containers policy.json; None when there is none at all (nothing is enforced)."""
    if path is None:
        path = _policy.default_path()
        if not os.path.exists(path):
            return None
    return _policy.Policy(path)


def checker(pol, registries_d: str | None, results: list | None = None):
    """check(client, ref, manifest, digest) for transfer.pull."""
    if pol is None:
        return None

    def check(client, ref, manifest, digest):
        def simple():
            return lookaside.read_signatures(lookaside.load(registries_d), ref, digest)

        def sigstore_sigs():
            from . import sigstore
            return sigstore.read_signatures(client, ref, digest)
        try:
            ok = _policy.evaluate(pol, ref, manifest, digest,
                                  _policy.Sources(simple, sigstore_sigs))
        except _policy.PolicyError as e:
            raise _policy.PolicyError(f"{e.message}; nothing stored") from None
        if results is not None:
            results.extend(ok)
            results.append(digest)
    return check
