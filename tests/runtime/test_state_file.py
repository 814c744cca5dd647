"""state.json updates: readers see the old file or the new one, and nothing else is left.

write_atomic swaps a new state.json with the old one (renameat2 RENAME_EXCHANGE) and unlinks
the old content, instead of renaming over it: ext4 starts writing back a file renamed over
another at once, and the `delete` that unlinks it later had to wait for that write.
"""

import os
import subprocess

import pytest

from pyrunc.state import write_atomic


@pytest.mark.parametrize("where", ["/run", "/dev/shm", "tmp"])
def test_write_atomic_replaces_and_leaves_one_file(where, tmp_path):
    base = str(tmp_path) if where == "tmp" else where
    if not os.path.isdir(base):
        pytest.skip(f"{base} does not exist here")
    d = os.path.join(base, f"pyrunc-test-state-{os.getpid()}")
    os.mkdir(d)
    try:
        path = os.path.join(d, "state.json")
        write_atomic(path, b'{"a": 1}')  # no file yet: a plain rename
        with open(path, "rb") as old:
            write_atomic(path, b'{"a": 2}')
            assert old.read() == b'{"a": 1}'  # an open reader keeps what it opened
        with open(path, "rb") as f:
            assert f.read() == b'{"a": 2}'
        assert os.listdir(d) == ["state.json"]
        assert os.stat(path).st_mode & 0o777 == 0o600
        write_atomic(path, b"3", 0o644, durable=True)
        with open(path, "rb") as f:
            assert f.read() == b"3"
        assert os.listdir(d) == ["state.json"]
    finally:
        for n in os.listdir(d):
            os.unlink(os.path.join(d, n))
        os.rmdir(d)


def test_state_dir_holds_only_its_files_after_create_and_start(runtime, bundle, cid):
    bundle.set_args("/bin/sh", "-c", "sleep 100")
    runtime("create", "--bundle", bundle.path, cid, check=True, stdin=subprocess.DEVNULL)
    d = os.path.join(runtime.root, cid)
    assert sorted(os.listdir(d)) == ["exec.fifo", "lock", "state.json"]
    runtime("start", cid, check=True)
    assert sorted(os.listdir(d)) == ["lock", "state.json"]
    assert runtime.state(cid)["status"] == "running"
    runtime("delete", "-f", cid, check=True)
    assert not os.path.exists(d)
