"""ocispec.defaults reproduces `runc spec` and `runc spec --rootless`, and validates."""
import json
import subprocess

import pytest

from ocispec.defaults import runc_spec
from ocispec.runtime_config import validate_config
from ocispec.schema import validate_document


@pytest.mark.parametrize("rootless", [False, True])
def test_matches_runc(tmp_path, rootless):
    subprocess.run(["runc", "spec", *(["--rootless"] if rootless else [])], cwd=tmp_path, check=True)
    theirs = json.loads((tmp_path / "config.json").read_text())
    ours = runc_spec(rootless=rootless)
    assert ours.pop("ociVersion") == "1.2.0"
    theirs.pop("ociVersion")
    assert ours == theirs
    doc = runc_spec(rootless=rootless)
    validate_config(doc)
    validate_document(doc, "config")


def test_lists_are_fresh_copies():
    a, b = runc_spec(), runc_spec()
    a["mounts"][0]["options"] = ["x"]
    a["linux"]["maskedPaths"].append("/x")
    assert "options" not in b["mounts"][0] and "/x" not in b["linux"]["maskedPaths"]
