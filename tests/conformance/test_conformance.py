"""CI entry: the conformance suite side by side for the installed pyrunc and runc.

Fails when pyrunc fails a case that runc passes; the table is printed on every run and is
the failure message.
"""

import os
import shutil
import subprocess
import sys

import pytest


def _pyrunc():
    found = shutil.which("pyrunc")
    if not found:  # running from a venv that is not on PATH
        cand = os.path.join(os.path.dirname(sys.executable), "pyrunc")
        found = cand if os.access(cand, os.X_OK) else None
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")
def test_pyrunc_passes_what_runc_passes(tmp_path, capsys):
    pyrunc, runc = _pyrunc(), shutil.which("runc")
    assert pyrunc, "pyrunc is not installed (run .ci/setup)"
    assert runc, "runc is not installed (run .ci/setup)"
    cp = subprocess.run([sys.executable, "-m", "ociconformance", "--compare", pyrunc, runc,
                         "--json", str(tmp_path / "results.json")],
                        capture_output=True, text=True, timeout=3600)
    table = cp.stdout[cp.stdout.rfind("\n# A = "):] if "# A = " in cp.stdout else cp.stdout
    with capsys.disabled():  # CI shows the side-by-side table on every run
        print("\nconformance, pyrunc (A) beside runc (B):" + table)
    assert cp.returncode == 0, f"pyrunc fails cases that runc passes:\n{table}\n{cp.stderr}"
