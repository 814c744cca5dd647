"""pybuild.image.store: blobs land atomically under their digest; refs live in an OCI layout index."""
import hashlib
import io
import json
import os
import threading

import pytest

from ocispec import image, mediatypes as mt
from ocispec.errors import OCIError
from pybuild.image.store import Store, normalize_ref


def test_put_bytes_and_stream(tmp_path):
    s = Store(tmp_path / "st")
    b = s.put_bytes(b"hello", mt.IMAGE_CONFIG)
    dg, size = b
    assert dg == "sha256:" + hashlib.sha256(b"hello").hexdigest() and size == 5
    assert b["digest"] == dg and b.descriptor()["mediaType"] == mt.IMAGE_CONFIG
    assert s.has(dg) and open(s.blob_path(dg), "rb").read() == b"hello"
    data = os.urandom(3 << 20)
    dg2, size2 = s.put_blob_stream(io.BytesIO(data))
    assert dg2 == "sha256:" + hashlib.sha256(data).hexdigest() and size2 == len(data)
    dg3, _ = s.put_blob_stream(iter([data[:10], data[10:]]))
    assert dg3 == dg2
    assert os.listdir(s.tmp_dir) == []  # no temp files left behind
    with s.open_blob(dg) as f:
        assert f.read() == b"hello"


def test_layout_files_and_refs(tmp_path):
    s = Store(tmp_path / "st")
    assert json.load(open(tmp_path / "st" / "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    m = s.put_json({"schemaVersion": 2}, mt.IMAGE_MANIFEST)
    s.tag("foo", m.descriptor())
    s.tag("reg:5000/bar:v1", m.descriptor())
    assert s.resolve("foo:latest")["digest"] == m.digest
    assert s.resolve("foo")["annotations"][image.ANNOTATION_REF_NAME] == "foo:latest"
    assert [n for n, _ in s.list_images()] == ["foo:latest", "reg:5000/bar:v1"]
    idx = json.load(open(tmp_path / "st" / "index.json"))
    assert idx["mediaType"] == mt.IMAGE_INDEX and len(idx["manifests"]) == 2
    s.tag("foo", s.put_json({"schemaVersion": 2, "x": 1}, mt.IMAGE_MANIFEST).descriptor())
    assert len(s.list_images()) == 2  # retag replaces
    s.delete("foo")
    with pytest.raises(OCIError, match="foo:latest does not exist"):
        s.resolve("foo")
    with pytest.raises(OCIError, match="does not exist"):
        s.delete("foo")


def test_tag_requires_blob_and_bad_digest(tmp_path):
    s = Store(tmp_path / "st")
    with pytest.raises(OCIError, match="not in the store"):
        s.tag("x", image.descriptor(mt.IMAGE_MANIFEST, "sha256:" + "0" * 64, 3))
    with pytest.raises(OCIError, match="invalid digest"):
        s.blob_path("sha256:../../etc/passwd")
    assert normalize_ref("a/b") == "a/b:latest"
    assert normalize_ref("h:5000/a") == "h:5000/a:latest"


def test_failed_stream_leaves_nothing(tmp_path):
    s = Store(tmp_path / "st")

    def gen():
        yield b"partial"
        raise RuntimeError("source broke")
    with pytest.raises(RuntimeError):
        s.put_blob_stream(gen())
    assert os.listdir(s.tmp_dir) == [] and os.listdir(s.blobs_dir) == []
    with pytest.raises(OCIError, match="does not match"):
        s.put_blob_stream(io.BytesIO(b"abc"), expected_digest="sha256:" + "1" * 64)
    assert os.listdir(s.blobs_dir) == []


def test_concurrent_tags_are_all_kept(tmp_path):
    # separate Store objects (as separate processes would have) race on index.json
    root = tmp_path / "st"
    Store(root)
    errors = []

    def worker(i):
        try:
            s = Store(root)
            m = s.put_json({"n": i}, mt.IMAGE_MANIFEST)
            s.tag(f"img{i}", m.descriptor())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert len(Store(root).list_images()) == 16


def test_lock_excludes_other_holders(tmp_path):
    a, b = Store(tmp_path / "st"), Store(tmp_path / "st")
    order = []
    with a.lock():
        t = threading.Thread(target=lambda: (b.lock().__enter__(), order.append("b")))
        t.start()
        t.join(0.3)
        order.append("a-release")
        with a.lock():  # re-entrant for its holder
            pass
    t.join(5)
    assert order == ["a-release", "b"]


def test_gc_keeps_referenced(tmp_path):
    s = Store(tmp_path / "st")
    layer = s.put_bytes(b"layer")
    cfg = s.put_bytes(b"{}")
    man = s.put_json(image.manifest(cfg.descriptor(mt.IMAGE_CONFIG), [layer.descriptor(mt.LAYER_TAR)]),
                     mt.IMAGE_MANIFEST)
    s.tag("keep", man.descriptor())
    junk = s.put_bytes(b"junk")
    removed = s.gc(grace_seconds=-1)
    assert removed == [junk.digest]
    assert all(s.has(d) for d in (layer.digest, cfg.digest, man.digest))
