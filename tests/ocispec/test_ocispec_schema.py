"""ocispec.schema + features: runc's own documents validate; broken ones fail with a path."""
import copy
import json
import subprocess

import pytest

from ocispec import image, mediatypes as mt
from ocispec.digest import sha256_bytes
from ocispec.errors import SpecError
from ocispec.features import runtime_features
from ocispec.runtime_config import validate_config
from ocispec.schema import KINDS, iter_errors, load_schema, validate_document


@pytest.fixture(scope="module")
def runc_spec(tmp_path_factory):
    d = tmp_path_factory.mktemp("ocispec-schema")
    subprocess.run(["runc", "spec"], cwd=d, check=True)
    return json.loads((d / "config.json").read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_schemas_are_valid_schemas(kind):
    import jsonschema
    s = load_schema(kind)
    jsonschema.validators.validator_for(s).check_schema(s)


def test_runc_spec_validates_both_ways(runc_spec):
    validate_document(runc_spec, "config")
    validate_config(runc_spec)


def test_runc_spec_rootless_validates(tmp_path):
    subprocess.run(["runc", "spec", "--rootless"], cwd=tmp_path, check=True)
    doc = json.loads((tmp_path / "config.json").read_text())
    validate_document(doc, "config")
    validate_config(doc)


@pytest.mark.parametrize("mutate,path,words", [
    (lambda d: d.pop("ociVersion"), "", "'ociVersion' is a required property"),
    (lambda d: d["process"].__setitem__("cwd", "relative"), "process.cwd", "does not match"),
    (lambda d: d["process"]["rlimits"].append({"type": "RLIMIT_FOO", "soft": 1, "hard": 1}),
     "process.rlimits[1].type", 'unknown rlimits name "RLIMIT_FOO"'),
    (lambda d: d["process"]["capabilities"]["bounding"].append("CAP_NOPE"),
     "process.capabilities.bounding[3]", "unknown capabilities name"),
    (lambda d: d["linux"]["namespaces"].append({"type": "net"}), "linux.namespaces[5].type",
     "unknown namespaces name"),
    (lambda d: d["process"]["user"].__setitem__("uid", -1), "process.user.uid", "less than the minimum"),
    (lambda d: d["mounts"][0].pop("destination"), "mounts[0]", "'destination' is a required property"),
    (lambda d: d["linux"].__setitem__("seccomp", {"defaultAction": "SCMP_ACT_NOPE"}),
     "linux.seccomp.defaultAction", "unknown seccomp actions name"),
    (lambda d: d.__setitem__("hooks", {"prestart": [{"path": "/x", "timeout": 0}]}),
     "hooks.prestart[0].timeout", "less than the minimum"),
    (lambda d: d.__setitem__("annotations", {"k": 1}), "annotations.k", "is not of type 'string'"),
])
def test_bad_config_fails_schema(runc_spec, mutate, path, words):
    doc = copy.deepcopy(runc_spec)
    mutate(doc)
    with pytest.raises(SpecError) as ei:
        validate_document(doc, "config")
    assert ei.value.path == path and words in str(ei.value)
    assert str(ei.value).startswith(f"config.json: {path + ': ' if path else ''}")
    assert any(p == path for p, _ in iter_errors(doc, "config"))


def test_state_schema():
    good = {"ociVersion": "1.2.0", "id": "x", "status": "created", "pid": 5, "bundle": "/b",
            "annotations": {}}
    validate_document(good, "state")
    with pytest.raises(SpecError, match=r"state: status: 'paused' is not one of"):
        validate_document({**good, "status": "paused"}, "state")


def test_features_document_validates():
    doc = runtime_features()
    validate_document(doc, "features")
    assert doc["linux"]["namespaces"] == sorted(["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"])
    assert "CAP_SYS_ADMIN" in doc["linux"]["capabilities"] and "rro" in doc["mountOptions"]
    assert doc["linux"]["mountExtensions"] == {"idmap": {"enabled": True}}
    assert doc["linux"]["intelRdt"] == {"enabled": False}
    assert doc["hooks"][0] == "prestart"
    off = runtime_features(seccomp=False, cgroup_v1=False, apparmor=False)
    validate_document(off, "features")
    assert off["linux"]["seccomp"]["supportedFlags"] == [] and off["linux"]["cgroup"]["v1"] is False
    bad = copy.deepcopy(doc)
    bad["linux"]["seccomp"]["actions"].append("SCMP_ACT_BOGUS")
    with pytest.raises(SpecError, match=r"features: linux.seccomp.actions\[9\]: unknown"):
        validate_document(bad, "features")


def test_runc_features_output_validates():
    out = subprocess.run(["runc", "features"], capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    # runc knows options we treat as filesystem data (acl, ratime...); mountOptions is free-form
    validate_document(doc, "features")


def test_image_documents():
    cfg = image.image_config(diff_ids=[sha256_bytes(b"x")], config={"Env": ["A=b"], "Cmd": ["sh"]},
                             created="2024-01-02T03:04:05Z")
    validate_document(cfg, "image-config")
    cd = image.descriptor_for(image.dumps(cfg), mt.IMAGE_CONFIG)
    ld = image.descriptor(mt.LAYER_GZIP, sha256_bytes(b"l"), 1)
    validate_document(cd, "descriptor")
    m = image.manifest(cd, [ld], annotations={"a": "b"})
    validate_document(m, "manifest")
    i = image.index([image.descriptor_for(image.dumps(m), mt.IMAGE_MANIFEST,
                                          platform=image.host_platform())])
    validate_document(i, "index")
    validate_document({"imageLayoutVersion": "1.0.0"}, "oci-layout")
    with pytest.raises(SpecError, match=r"manifest: layers\[0\].digest: 'sha256:nothex' does not match"):
        validate_document(image.manifest(cd, [{**ld, "digest": "sha256:nothex"}]), "manifest")
    with pytest.raises(SpecError, match=r"image-config: rootfs.type"):
        validate_document({**cfg, "rootfs": {"type": "tarballs", "diff_ids": []}}, "image-config")
    with pytest.raises(SpecError, match=r"oci-layout: imageLayoutVersion"):
        validate_document({"imageLayoutVersion": "2.0.0"}, "oci-layout")
    with pytest.raises(SpecError, match=r"index: manifests\[0\]: 'size' is a required property"):
        validate_document({"schemaVersion": 2, "manifests": [{"mediaType": mt.IMAGE_MANIFEST,
                                                              "digest": sha256_bytes(b"")}]}, "index")
