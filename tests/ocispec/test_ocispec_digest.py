"""ocispec.digest, ocispec.image, ocispec.mediatypes."""
import hashlib

import pytest

from ocispec import digest, image, mediatypes as mt
from ocispec.errors import OCIError, SpecError


def test_parse_and_hash(tmp_path):
    d = digest.sha256_bytes(b"abc")
    assert digest.parse(d) == ("sha256", hashlib.sha256(b"abc").hexdigest())
    d512 = "sha512:" + hashlib.sha512(b"abc").hexdigest()
    assert digest.parse(d512)[0] == "sha512"
    for bad, why in [("sha256:ABC" + "0" * 61, "lowercase hex"), ("sha256:abc", "64 lowercase"),
                     ("md5:" + "0" * 32, "unsupported algorithm"), ("nocolon", "want algorithm:hex"),
                     ("sha256:../../x", "want algorithm:hex"), ("sha512:" + "0" * 64, "128 lowercase")]:
        with pytest.raises(OCIError, match=why) as ei:
            digest.parse(bad)
        assert repr(bad) in str(ei.value)
    h = digest.Hasher()
    h.update(b"ab")
    h.update(b"c")
    assert h.digest == d and h.size == 3
    f = tmp_path / "blob"
    f.write_bytes(b"abc")
    digest.verify_file(f, d, 3)
    with pytest.raises(OCIError, match="size 3 does not match descriptor size 4"):
        digest.verify_file(f, d, 4)
    with pytest.raises(OCIError, match="does not match"):
        digest.verify_file(f, digest.sha256_bytes(b"abd"))
    digest.verify_file(f, d512)
    assert digest.hash_file(f) == (d, 3)


def test_mediatypes():
    assert mt.EMPTY_JSON_DIGEST == digest.sha256_bytes(b"{}")
    assert mt.layer_compression(mt.DOCKER_LAYER_GZIP) == "gzip"
    assert mt.layer_compression(mt.LAYER_ZSTD) == "zstd"
    assert mt.layer_media_type(None) == mt.LAYER_TAR
    with pytest.raises(OCIError):
        mt.layer_compression(mt.IMAGE_CONFIG)


def test_image_helpers():
    cd = image.descriptor_for(b"{}", mt.IMAGE_CONFIG, annotations={"k": "v"})
    assert cd == {"mediaType": mt.IMAGE_CONFIG, "digest": mt.EMPTY_JSON_DIGEST, "size": 2,
                  "annotations": {"k": "v"}}
    m = image.manifest(cd, [])
    assert image.parse_manifest(image.dumps(m)) == m
    assert image.dumps({"b": 1, "a": [1]}) == b'{"a":[1],"b":1}'
    with pytest.raises(SpecError, match=r"manifest: layers\[0\].digest: invalid digest"):
        image.parse_manifest({**m, "layers": [{"mediaType": mt.LAYER_TAR, "digest": "x", "size": 1}]})
    with pytest.raises(SpecError, match="schemaVersion: must be 2"):
        image.parse_index({"schemaVersion": 1, "manifests": []})
    c = image.image_config(diff_ids=[mt.EMPTY_JSON_DIGEST], platform=image.parse_platform("linux/arm64/v8"))
    assert image.parse_config(c)["variant"] == "v8"
    with pytest.raises(SpecError, match=r"rootfs.diff_ids\[0\]: invalid digest"):
        image.parse_config({**c, "rootfs": {"type": "layers", "diff_ids": ["nope"]}})
    with pytest.raises(SpecError, match="invalid platform"):
        image.parse_platform("linux")


def test_trailing_newline_is_not_a_digest():
    """`$` matches before a final newline: the grammar must match the whole string."""
    good = digest.sha256_bytes(b"abc")
    for bad in (good + "\n", good.replace(":", "\n:"), "sha256\n:" + "0" * 64):
        assert not digest.is_valid(bad)
        with pytest.raises(OCIError, match="invalid digest"):
            digest.parse(bad)


def test_hash_file_size_hint(tmp_path):
    """A size hint reads small files in one go; a stale hint (the file grew or shrank
    since its stat) still gives the whole content's digest and size."""
    import os
    for n in (0, 1, 4096, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20):
        data = os.urandom(n)
        f = tmp_path / f"f{n}"
        f.write_bytes(data)
        want = ("sha256:" + hashlib.sha256(data).hexdigest(), n)
        assert digest.hash_file(f) == want
        for hint in {n, max(0, n - 7), n + 7, 0}:
            assert digest.hash_file(f, size_hint=hint) == want, (n, hint)
        assert digest.hash_file(f, "sha512", size_hint=n) == \
            ("sha512:" + hashlib.sha512(data).hexdigest(), n)
