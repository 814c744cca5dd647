"""Signed and encrypted images, checked both ways against the real skopeo.

Everything goes through the installed `pybuild` and Debian's `skopeo` against a docker-registry
on 127.0.0.1 (registry_fixtures). GPG runs in a temporary GNUPGHOME with a key made here (no
passphrase); skopeo gets a temporary registries.d and policy.json through --registries.d and
--policy, so no host configuration is read or written.
"""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from build_e2e import remove_tree
from test_registry import RegEnv, one_line_error, skopeo_digest

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/usr/bin/docker-registry"),
                       reason="docker-registry is not installed"),
    pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed"),
]


class TrustEnv(RegEnv):
    def __init__(self, base):
        super().__init__(base)
        self.sigstore_dir = os.path.join(base, "sigstore")
        self.regd = os.path.join(base, "registries.d")
        os.makedirs(self.regd)
        with open(os.path.join(self.regd, "default.yaml"), "w") as f:
            f.write(f"default-docker:\n  lookaside: file://{self.sigstore_dir}\n")
        self.gnupghome = None

    def policy(self, name: str, doc: dict) -> str:
        path = os.path.join(self.base, name + ".json")
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def signed_by(self, name: str, host: str, keypath: str, **extra) -> str:
        """A policy requiring signatures by the key in `keypath` for the registry `host`."""
        req = dict({"type": "signedBy", "keyType": "GPGKeys", "keyPath": keypath}, **extra)
        return self.policy(name, {"default": [{"type": "reject"}],
                                  "transports": {"docker": {host: [req]},
                                                 "oci": {"": [{"type": "insecureAcceptAnything"}]},
                                                 "dir": {"": [{"type": "insecureAcceptAnything"}]}}})

    def skopeo(self, *args, policy=None, ok=True, env=None):
        cmd = ["skopeo", "--registries.d", self.regd,
               "--policy", policy or self.policy("accept", {"default": [
                   {"type": "insecureAcceptAnything"}]}), *args]
        e = dict(os.environ, HOME=self.home)
        if self.gnupghome:
            e["GNUPGHOME"] = self.gnupghome
        e.update(env or {})
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=e)
        if ok and p.returncode:
            pytest.fail(f"{cmd} failed: {p.stderr}")
        if ok is False and not p.returncode:
            pytest.fail(f"{cmd} succeeded but should have failed")
        return p

    def gpg_key(self) -> tuple[str, str]:
        """(fingerprint, exported public key file) of a new key in a private GNUPGHOME."""
        if shutil.which("gpg") is None:
            pytest.skip("gpg is not installed")
        self.gnupghome = tempfile.mkdtemp(prefix="gpg-", dir="/tmp")  # short: agent socket
        env = dict(os.environ, GNUPGHOME=self.gnupghome)
        subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                        "--quick-gen-key", "skopeo test <skopeo@example.com>", "ed25519", "sign",
                        "never"], env=env, check=True, capture_output=True, timeout=60)
        out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env,
                             check=True, capture_output=True, text=True).stdout
        fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
        pub = os.path.join(self.base, "gpg.pub")
        with open(pub, "wb") as f:
            f.write(subprocess.run(["gpg", "--batch", "--armor", "--export", fpr], env=env,
                                   check=True, capture_output=True).stdout)
        return fpr, pub

    def close_gpg(self):
        if self.gnupghome:
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], capture_output=True,
                           env=dict(os.environ, GNUPGHOME=self.gnupghome))
            remove_tree(self.gnupghome)

    def key(self, name: str, kind="pgp") -> tuple[str, str]:
        prefix = os.path.join(self.base, name)
        p = self.pybuild("generate-key", "--type", kind, "-o", prefix)
        assert "PRIVATE" not in p.stdout + p.stderr
        return prefix + ".key", prefix + ".pub"

    def sig_dir(self, repo_path: str, digest: str) -> str:
        return os.path.join(self.sigstore_dir, f"{repo_path}@sha256={digest.split(':')[1]}")


@pytest.fixture
def tenv():
    base = tempfile.mkdtemp(prefix="pybuild-trust-")
    e = TrustEnv(base)
    try:
        yield e
    finally:
        for r in e.registries:
            r.stop()
        e.close_gpg()
        remove_tree(base)


def _store_files(root) -> bytes:
    out = b""
    for d, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                out += fh.read()
    return out


def _secret_material(path: str) -> list[bytes]:
    """Pieces of a private key file that must never show up anywhere else."""
    with open(path, "rb") as f:
        lines = [ln.strip() for ln in f.read().splitlines()]
    return [ln for ln in lines if len(ln) >= 40 and not ln.startswith(b"-----")]


# -- keys -----------------------------------------------------------------------------------

def test_generate_key_files_and_modes(tenv):
    for kind in ("pgp", "sigstore", "jwe"):
        priv, pub = tenv.key(f"k-{kind}", kind)
        assert os.stat(priv).st_mode & 0o777 == 0o600
        assert os.path.getsize(pub) > 0
    # never overwritten
    p = tenv.pybuild("generate-key", "-o", os.path.join(tenv.base, "k-pgp"), ok=False)
    one_line_error(p, "already exists")
    # the OpenPGP key's primary signs (what containers/image needs): gpg agrees
    if shutil.which("gpg"):
        home = tempfile.mkdtemp(prefix="gpgk-", dir="/tmp")
        try:
            env = dict(os.environ, GNUPGHOME=home)
            subprocess.run(["gpg", "--batch", "--import", os.path.join(tenv.base, "k-pgp.pub")],
                           env=env, check=True, capture_output=True)
            out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env,
                                 check=True, capture_output=True, text=True).stdout
            publine = next(x for x in out.splitlines() if x.startswith("pub:"))
            assert "s" in publine.split(":")[11].lower()  # capabilities of the primary
        finally:
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], capture_output=True,
                           env=dict(os.environ, GNUPGHOME=home))
            remove_tree(home)


# -- simple signing, pybuild -> skopeo ---------------------------------------------------------

def test_pybuild_signs_skopeo_verifies(tenv):
    reg = tenv.registry()
    tenv.image("app:1")
    key, pub = tenv.key("signer")
    _, other = tenv.key("other")
    dest = f"{reg.host}/team/app:1"
    p = tenv.pybuild("push", "--progress", "plain", "--sign-by", key, "--registries.d", tenv.regd,
                     "app:1", dest)
    dg = p.stdout.split()[1]
    sig = os.path.join(tenv.sig_dir("team/app", dg), "signature-1")
    assert os.path.exists(sig)
    for secret in _secret_material(key):
        assert secret.decode() not in p.stdout + p.stderr
    # skopeo accepts it under a policy requiring this key ...
    out = os.path.join(tenv.base, "out")
    tenv.skopeo("copy", "--src-tls-verify=false", f"docker://{dest}", f"dir:{out}",
                policy=tenv.signed_by("good", reg.host, pub))
    # ... and refuses it under one requiring another key
    p = tenv.skopeo("copy", "--src-tls-verify=false", f"docker://{dest}", f"dir:{out}-2",
                    policy=tenv.signed_by("bad", reg.host, other), ok=False)
    assert "Source image rejected" in p.stderr, p.stderr
    # pybuild itself: verify, and pull under both policies
    p = tenv.pybuild("verify", "--tls-verify=false", "--signature-policy",
                     tenv.signed_by("good", reg.host, pub), "--registries.d", tenv.regd, dest)
    assert "accepted" in p.stdout and "signedBy" in p.stdout
    root2 = os.path.join(tenv.base, "store2")
    p = tenv.pybuild("pull", "--signature-policy", tenv.signed_by("bad", reg.host, other),
                     "--registries.d", tenv.regd, dest, root=root2, ok=False)
    line = one_line_error(p, "rejected by requirement signedBy", other, "nothing stored")
    assert "signature 1" in line
    assert not os.path.exists(os.path.join(root2, "index.json")) or tenv.names(root2) == []
    assert not os.path.isdir(os.path.join(root2, "blobs", "sha256")) or \
        tenv.blobs(root2) == set()
    tenv.pybuild("pull", "--signature-policy", tenv.signed_by("good", reg.host, pub),
                 "--registries.d", tenv.regd, dest, root=root2)
    assert tenv.digest(dest, root2) == dg


# -- simple signing, skopeo -> pybuild ---------------------------------------------------------

def test_skopeo_signs_pybuild_verifies(tenv):
    reg = tenv.registry()
    tenv.image("app:1")
    fpr, gpg_pub = tenv.gpg_key()
    _, other = tenv.key("other")
    dest = f"{reg.host}/sk/app:1"
    tenv.skopeo("copy", "--dest-tls-verify=false", "--sign-by", fpr, f"oci:{tenv.root}:app:1",
                f"docker://{dest}")
    dg = skopeo_digest(f"docker://{dest}", "--tls-verify=false")
    assert os.path.exists(os.path.join(tenv.sig_dir("sk/app", dg), "signature-1"))
    root2 = os.path.join(tenv.base, "store2")
    p = tenv.pybuild("pull", "--signature-policy", tenv.signed_by("other", reg.host, other),
                     "--registries.d", tenv.regd, dest, root=root2, ok=False)
    one_line_error(p, "rejected by requirement signedBy", "no valid signature")
    assert not os.path.exists(os.path.join(root2, "index.json")) or tenv.names(root2) == []
    tenv.pybuild("pull", "--signature-policy", tenv.signed_by("gpg", reg.host, gpg_pub),
                 "--registries.d", tenv.regd, dest, root=root2)
    assert tenv.digest(dest, root2) == dg
    # the key given inline (keyData) works the same
    with open(gpg_pub, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    pol = tenv.policy("keydata", {"default": [{"type": "signedBy", "keyType": "GPGKeys",
                                               "keyData": data}]})
    tenv.pybuild("verify", "--tls-verify=false", "--signature-policy", pol, "--registries.d",
                 tenv.regd, dest)


# -- tampering: refused by both ------------------------------------------------------------------

def test_tampered_signature_and_manifest_refused_by_both(tenv):
    reg = tenv.registry()
    tenv.image("app:1")
    key, pub = tenv.key("signer")
    dest = f"{reg.host}/t/app:1"
    dg = tenv.pybuild("push", "--sign-by", key, "--registries.d", tenv.regd, "app:1",
                      dest).stdout.split()[1]
    good = tenv.signed_by("good", reg.host, pub)
    sig = os.path.join(tenv.sig_dir("t/app", dg), "signature-1")
    with open(sig, "rb") as f:
        orig = f.read()
    # 1. a signature with one byte of its payload changed
    i = orig.index(b"docker-manifest-digest")
    with open(sig, "wb") as f:
        f.write(orig[:i] + b"D" + orig[i + 1:])
    tenv.skopeo("copy", "--src-tls-verify=false", f"docker://{dest}",
                f"dir:{tenv.base}/o1", policy=good, ok=False)
    p = tenv.pybuild("verify", "--tls-verify=false", "--signature-policy", good,
                     "--registries.d", tenv.regd, dest, ok=False)
    one_line_error(p, "rejected by requirement signedBy")
    # 2. the manifest replaced: another image under the tag, the old signature beside it
    with open(sig, "wb") as f:
        f.write(orig)
    tenv.write("hello", "something else\n")
    tenv.dockerfile("FROM scratch\nCOPY busybox /bin/busybox\nCOPY hello /hello\n")
    tenv.build(tag="evil:1")
    dg2 = tenv.pybuild("push", "evil:1", dest).stdout.split()[1]
    assert dg2 != dg
    os.makedirs(tenv.sig_dir("t/app", dg2))
    shutil.copy(sig, os.path.join(tenv.sig_dir("t/app", dg2), "signature-1"))
    p = tenv.skopeo("copy", "--src-tls-verify=false", f"docker://{dest}",
                    f"dir:{tenv.base}/o2", policy=good, ok=False)
    assert "does not match" in p.stderr or "rejected" in p.stderr, p.stderr
    root2 = os.path.join(tenv.base, "store2")
    p = tenv.pybuild("pull", "--signature-policy", good, "--registries.d", tenv.regd, dest,
                     root=root2, ok=False)
    one_line_error(p, "rejected by requirement signedBy", f"not this one ({dg2})",
                   "nothing stored")
    # the untampered image by digest is still fine for both
    tenv.skopeo("copy", "--src-tls-verify=false", f"docker://{reg.host}/t/app@{dg}",
                f"dir:{tenv.base}/o3", policy=good)
    tenv.pybuild("pull", "--signature-policy", good, "--registries.d", tenv.regd,
                 f"{reg.host}/t/app@{dg}", root=root2)


# -- policy: scopes, requirements, identities ------------------------------------------------

def test_policy_scopes_and_identities(tenv):
    reg = tenv.registry()
    tenv.image("app:1")
    key, pub = tenv.key("signer")
    h = reg.host
    dest = f"{h}/ns/app:1"
    dg = tenv.pybuild("push", "--sign-by", key, "--registries.d", tenv.regd,
                      "--sign-identity", f"{h}/ns/app:signed", "app:1",
                      dest).stdout.split()[1]
    tenv.pybuild("push", "app:1", f"{h}/open/app:1")

    def verify(policy_doc, image, ok=True):
        pol = tenv.policy("p", policy_doc)
        return tenv.pybuild("verify", "--tls-verify=false", "--signature-policy", pol,
                            "--registries.d", tenv.regd, image, ok=ok)

    def req(identity=None):
        r = {"type": "signedBy", "keyType": "GPGKeys", "keyPaths": [pub]}
        if identity:
            r["signedIdentity"] = identity
        return r
    reject = [{"type": "reject"}]
    accept = [{"type": "insecureAcceptAnything"}]
    # default reject; a per-scope override; the most specific scope wins
    p = verify({"default": reject}, dest, ok=False)
    one_line_error(p, "rejected by requirement reject", "default")
    verify({"default": reject, "transports": {"docker": {f"{h}/open": accept}}}, f"{h}/open/app:1")
    p = verify({"default": accept, "transports": {"docker": {h: accept, f"{h}/ns": reject}}},
               dest, ok=False)
    one_line_error(p, "reject", f"{h}/ns")
    # the unsigned repository under a signedBy requirement: no signature at all
    p = verify({"default": [req()]}, f"{h}/open/app:1", ok=False)
    one_line_error(p, "no signature at")
    # signed as ns/app:signed, pulled as ns/app:1: exact matches fail, looser ones pass
    p = verify({"default": [req()]}, dest, ok=False)  # matchRepoDigestOrExact on a tag
    one_line_error(p, "signs identity", "matchRepoDigestOrExact")
    verify({"default": [req({"type": "matchRepoDigestOrExact"})]}, f"{h}/ns/app@{dg}")
    verify({"default": [req({"type": "matchRepository"})]}, dest)
    p = verify({"default": [req({"type": "matchExact"})]}, dest, ok=False)
    one_line_error(p, "matchExact")
    verify({"default": [req({"type": "exactReference", "dockerReference": f"{h}/ns/app:signed"})]},
           dest)
    p = verify({"default": [req({"type": "exactReference",
                                 "dockerReference": f"{h}/ns/app:other"})]}, dest, ok=False)
    one_line_error(p, "exactReference")
    # a malformed policy is a one-line error naming the field
    p = verify({"default": [{"type": "signedBy", "keyType": "X509Certificates",
                             "keyPath": pub}]}, dest, ok=False)
    one_line_error(p, "keyType", "default[0]")
    p = verify({"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}, dest, ok=False)
    one_line_error(p, "keyPath")


# -- sigstore ---------------------------------------------------------------------------------

def _put_sig_manifest(reg_host, repo, dg, layers_blobs):
    """Hand-made .sig manifest (cosign's layout) with (payload, annotation) layers."""
    import http.client
    conn = http.client.HTTPConnection(reg_host, timeout=30)

    def blob(data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        conn.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
        r = conn.getresponse()
        r.read()
        loc = r.getheader("Location")
        loc += ("&" if "?" in loc else "?") + "digest=" + d
        conn.request("PUT", loc, body=data, headers={"Content-Type": "application/octet-stream"})
        r = conn.getresponse()
        r.read()
        assert r.status == 201, r.status
        return {"digest": d, "size": len(data)}
    layers = [dict(blob(payload), mediaType="application/vnd.dev.cosign.simplesigning.v1+json",
                   annotations={"dev.cosignproject.cosign/signature": sig})
              for payload, sig in layers_blobs]
    cfg = blob(json.dumps({"architecture": "", "os": "", "config": {},
                           "rootfs": {"type": "layers",
                                      "diff_ids": [x["digest"] for x in layers]}}).encode())
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"),
                      "layers": layers}).encode()
    conn.request("PUT", f"/v2/{repo}/manifests/sha256-{dg.split(':')[1]}.sig", body=man,
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r = conn.getresponse()
    r.read()
    assert r.status == 201, r.status
    conn.close()


def test_sigstore_sign_verify_handmade_and_tampered(tenv):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    reg = tenv.registry()
    tenv.image("app:1")
    key, pub = tenv.key("ss", "sigstore")
    _, other = tenv.key("ss-other", "sigstore")
    dest = f"{reg.host}/ss/app:1"
    dg = tenv.pybuild("push", "--sign-by-sigstore-private-key", key, "app:1",
                      dest).stdout.split()[1]
    tag = f"sha256-{dg.split(':')[1]}.sig"
    # the attachment is a plain OCI manifest in the repository (skopeo reads it)
    raw = json.loads(tenv.skopeo("inspect", "--raw", "--tls-verify=false",
                                 f"docker://{reg.host}/ss/app:{tag}").stdout)
    layer = raw["layers"][0]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert "dev.cosignproject.cosign/signature" in layer["annotations"]

    def policy(keyfile):
        return tenv.policy("ss", {"default": [{"type": "reject"}], "transports": {"docker": {
            reg.host: [{"type": "sigstoreSigned", "keyPath": keyfile}]}}})
    root2 = os.path.join(tenv.base, "store2")
    p = tenv.pybuild("pull", "--signature-policy", policy(other), dest, root=root2, ok=False)
    one_line_error(p, "rejected by requirement sigstoreSigned", "does not verify",
                   "nothing stored")
    tenv.pybuild("pull", "--signature-policy", policy(pub), dest, root=root2)
    # hand-made: a known-good signature by a key made here, and tampered variants
    hk = ec.generate_private_key(ec.SECP256R1())
    hpub = os.path.join(tenv.base, "hand.pub")
    with open(hpub, "wb") as f:
        f.write(hk.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo))
    tenv.pybuild("push", "app:1", f"{reg.host}/hand/app:1")
    hdest = f"{reg.host}/hand/app:1"
    good = json.dumps({"critical": {"identity": {"docker-reference": hdest},
                                    "image": {"docker-manifest-digest": dg},
                                    "type": "cosign container image signature"},
                       "optional": None}).encode()

    def sig(b):
        return base64.b64encode(hk.sign(b, ec.ECDSA(hashes.SHA256()))).decode()
    evil = good.replace(b"cosign container image signature", b"atomic container signature")
    cases = [
        ([(good, sig(good))], True),
        ([(good + b" ", sig(good))], False),  # payload changed after signing
        ([(good, sig(good + b"x"))], False),  # signature over something else
        ([(evil, sig(evil))], False),  # a validly signed payload of the wrong type
        ([(good.replace(dg.encode(), b"sha256:" + b"0" * 64),
           sig(good.replace(dg.encode(), b"sha256:" + b"0" * 64)))], False),  # other manifest
    ]
    for layers, ok in cases:
        _put_sig_manifest(reg.host, "hand/app", dg, layers)
        p = tenv.pybuild("verify", "--tls-verify=false", "--signature-policy", policy(hpub), hdest,
                         ok=ok)
        if not ok:
            one_line_error(p, "rejected by requirement sigstoreSigned")


# -- encryption --------------------------------------------------------------------------------

def _openssl_rsa(base, name):
    priv, pub = os.path.join(base, name + ".pem"), os.path.join(base, name + "-pub.pem")
    subprocess.run(["openssl", "genrsa", "-out", priv, "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", priv, "-pubout", "-out", pub], check=True,
                   capture_output=True)
    return priv, pub


def _layer_digests(layout_dir) -> list:
    with open(os.path.join(layout_dir, "index.json")) as f:
        mdg = json.load(f)["manifests"][0]["digest"]
    with open(os.path.join(layout_dir, "blobs", "sha256", mdg.split(":")[1])) as f:
        man = json.load(f)
    return [(d["mediaType"], d["digest"]) for d in man["layers"]]


def test_encrypted_layers_interop_with_skopeo(tenv, pyrunc_bin):
    reg = tenv.registry()
    tenv.image("app:1")
    priv, pub = tenv.key("enc", "jwe")
    _, other_pub = tenv.key("enc-other", "jwe")
    other_priv = os.path.join(tenv.base, "enc-other.key")
    plain = [d for d in json.loads(open(tenv.blob(tenv.digest("app:1"))).read())["layers"]]
    # pybuild encrypts on push (last layer only), skopeo decrypts into an OCI layout
    dest = f"{reg.host}/enc/app:1"
    p = tenv.pybuild("push", "--encryption-key", f"jwe:{pub}", "--encrypt-layer", "-1", "app:1",
                     dest)
    enc_dg = p.stdout.split()[1]
    raw = json.loads(tenv.skopeo("inspect", "--raw", "--tls-verify=false",
                                 f"docker://{dest}").stdout)
    types = [d["mediaType"] for d in raw["layers"]]
    assert types[-1] == "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
    assert all(not t.endswith("+encrypted") for t in types[:-1])
    assert raw["layers"][-1]["digest"] != plain[-1]["digest"]
    lay = os.path.join(tenv.base, "sk-dec")
    tenv.skopeo("copy", "--src-tls-verify=false", "--decryption-key", priv,
                f"docker://{dest}", f"oci:{lay}:x")
    assert [d for _, d in _layer_digests(lay)] == [d["digest"] for d in plain]
    # two recipients (JWE general serialization), one an EC key (ECDH-ES+A256KW): skopeo
    # decrypts with the EC key alone
    ec_priv, ec_pub = os.path.join(tenv.base, "ec.pem"), os.path.join(tenv.base, "ec-pub.pem")
    subprocess.run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out",
                    ec_priv], check=True, capture_output=True)
    subprocess.run(["openssl", "ec", "-in", ec_priv, "-pubout", "-out", ec_pub], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", ec_priv, "-out",
                    ec_priv + "8"], check=True, capture_output=True)
    tenv.pybuild("push", "--encryption-key", f"jwe:{pub}", "--encryption-key", f"jwe:{ec_pub}",
                 "app:1", f"{reg.host}/enc/two:1")
    tenv.skopeo("copy", "--src-tls-verify=false", "--decryption-key", priv,
                f"docker://{reg.host}/enc/two:1", f"oci:{lay}-rsa:x")
    tenv.skopeo("copy", "--src-tls-verify=false", "--decryption-key", ec_priv + "8",
                f"docker://{reg.host}/enc/two:1", f"oci:{lay}-ec:x")
    assert [d for _, d in _layer_digests(lay + "-ec")] == [d["digest"] for d in plain]
    # and skopeo with the wrong key fails
    tenv.skopeo("copy", "--src-tls-verify=false", "--decryption-key", other_priv,
                f"docker://{dest}", f"oci:{lay}-2:x", ok=False)
    # skopeo encrypts (every layer) from pybuild's store (an OCI layout) into the registry
    sdest = f"{reg.host}/enc/from-skopeo:1"
    tenv.skopeo("copy", "--dest-tls-verify=false", "--encryption-key", f"jwe:{pub}",
                f"oci:{tenv.root}:app:1", f"docker://{sdest}")
    root2 = os.path.join(tenv.base, "store2")
    for image in (sdest, dest):
        # without a key: a clear error, nothing usable stored
        p = tenv.pybuild("pull", image, root=root2, ok=False)
        one_line_error(p, "is encrypted", "nothing stored")
        p = tenv.pybuild("pull", "--decryption-key", other_priv, image, root=root2, ok=False)
        one_line_error(p, "none of the --decryption-key keys")
        assert not os.path.exists(os.path.join(root2, "index.json")) or \
            image not in tenv.names(root2)
        for secret in _secret_material(other_priv):
            assert secret.decode() not in p.stderr
        p = tenv.pybuild("pull", "--decryption-key", priv, image, root=root2)
        man = json.loads(open(tenv.blob(tenv.digest(image, root2), root2)).read())
        assert [d["digest"] for d in man["layers"]] == [d["digest"] for d in plain]
        assert all("annotations" not in d for d in man["layers"])
    assert tenv.digest(dest, root2) != enc_dg  # stored decrypted, as skopeo does
    # what was pulled runs
    bundle = os.path.join(tenv.base, "bundle")
    tenv.pybuild("unpack", sdest, bundle, root=root2)
    try:
        with open(os.path.join(bundle, "rootfs", "hello")) as f:
            assert f.read() == "hello from the registry\n"
    finally:
        tenv.pybuild("rm", bundle, root=root2)
    # no key material and no wrapped keys in the store
    blob = _store_files(root2)
    assert b"org.opencontainers.image.enc.keys" not in blob
    for secret in _secret_material(priv):
        assert secret not in blob


# -- lookaside over HTTP, written through lookaside-staging -------------------------------------

def test_http_lookaside_and_staging(tenv):
    import functools
    import http.server
    import threading
    reg = tenv.registry()
    tenv.image("app:1")
    key, pub = tenv.key("signer")
    staging = os.path.join(tenv.base, "staging")
    os.makedirs(staging)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=staging)
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        regd = os.path.join(tenv.base, "regd-http")
        os.makedirs(regd)
        with open(os.path.join(regd, "x.yaml"), "w") as f:
            f.write(f"docker:\n  {reg.host}/web:\n"
                    f"    lookaside: http://127.0.0.1:{srv.server_port}/sigs\n"
                    f"    lookaside-staging: file://{staging}/sigs\n")
        dest = f"{reg.host}/web/app:1"
        dg = tenv.pybuild("push", "--sign-by", key, "--registries.d", regd, "app:1",
                          dest).stdout.split()[1]
        assert os.path.exists(os.path.join(staging, "sigs", "web", "app@sha256=" + dg[7:],
                                           "signature-1"))
        pol = tenv.signed_by("good", reg.host, pub)
        tenv.pybuild("verify", "--tls-verify=false", "--signature-policy", pol,
                     "--registries.d", regd, dest)
        tenv.skopeo("--registries.d", regd, "copy", "--src-tls-verify=false",
                    f"docker://{dest}", f"dir:{tenv.base}/o", policy=pol)
        # a broken registries.d file is a one-line error naming it
        with open(os.path.join(regd, "y.yaml"), "w") as f:
            f.write("docker:\n  other.example: [unclosed\n")
        p = tenv.pybuild("verify", "--tls-verify=false", "--signature-policy", pol,
                         "--registries.d", regd, dest, ok=False)
        one_line_error(p, "y.yaml", "not valid YAML")
    finally:
        srv.shutdown()
        srv.server_close()


# -- FROM pulls satisfy the policy too ---------------------------------------------------------

def test_from_pull_enforces_the_signature_policy(tenv):
    """A build's FROM pulls under the same policy as `pybuild pull` (as buildah's do): an
    unsigned base is refused where the policy wants a signature, and nothing is stored."""
    reg = tenv.registry()
    tenv.image("base:1")
    key, pub = tenv.key("signer")
    _, other = tenv.key("other")
    dest = f"{reg.host}/team/base:1"
    tenv.pybuild("push", "--sign-by", key, "--registries.d", tenv.regd, "base:1", dest)
    ctx = os.path.join(tenv.base, "ctx-from")
    os.makedirs(ctx)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(f"FROM {dest}\nLABEL checked=yes\n")
    root2 = os.path.join(tenv.base, "store-from")
    p = tenv.pybuild("build", "--signature-policy", tenv.signed_by("bad", reg.host, other),
                     "--registries.d", tenv.regd, "-t", "child:1", ctx, root=root2, ok=False)
    one_line_error(p, "rejected by requirement signedBy")
    assert not os.path.exists(os.path.join(root2, "index.json")) or tenv.names(root2) == []
    tenv.pybuild("build", "--signature-policy", tenv.signed_by("good", reg.host, pub),
                 "--registries.d", tenv.regd, "-t", "child:1", ctx, root=root2)
    assert "child:1" in tenv.names(root2)
