"""Bad input: one-line errors, exit 1, nothing left behind."""

import json
import os

import pytest


def assert_clean(runtime, cid):
    assert not os.path.exists(os.path.join(runtime.root, cid)), "state dir left behind"
    for line in open("/proc/self/mountinfo"):
        assert cid not in line


def one_line_error(p):
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_missing_bundle(runtime, workdir, cid):
    err = one_line_error(runtime("create", "-b", os.path.join(workdir, "nope"), cid))
    assert "nope" in err and "no such directory" in err
    assert_clean(runtime, cid)


def test_bundle_without_config(runtime, workdir, cid):
    err = one_line_error(runtime("create", "-b", workdir, cid))
    assert "config.json: no such file" in err
    assert_clean(runtime, cid)


def test_malformed_json(runtime, bundle, cid):
    open(bundle.config_path, "w").write('{"ociVersion": "1.2.0", ')
    err = one_line_error(runtime("create", "-b", bundle.path, cid))
    assert "config.json" in err and "invalid JSON" in err
    assert_clean(runtime, cid)


def test_wrong_type_names_the_field(runtime, bundle, cid):
    bundle.config["process"]["args"] = "sh -c true"
    bundle.write()
    err = one_line_error(runtime("create", "-b", bundle.path, cid))
    assert "process.args" in err
    assert_clean(runtime, cid)


def test_missing_rootfs(runtime, bundle, cid):
    bundle.config["root"]["path"] = "does-not-exist"
    bundle.write()
    err = one_line_error(runtime("create", "-b", bundle.path, cid))
    assert "root.path" in err
    assert_clean(runtime, cid)


def test_executable_not_found_fails_create(runtime, bundle, cid):
    bundle.set_args("no-such-binary")
    err = one_line_error(runtime("create", "-b", bundle.path, cid))
    assert "executable file not found" in err
    assert_clean(runtime, cid)


def test_bad_mount_source_fails_and_unmounts(runtime, bundle, cid, workdir):
    bundle.config["mounts"].append({"destination": "/x", "type": "bind", "source": "/no/such/dir",
                                    "options": ["rbind"]})
    bundle.write()
    err = one_line_error(runtime("create", "-b", bundle.path, cid))
    assert "/no/such/dir" in err
    assert_clean(runtime, cid)


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "", "white space"])
def test_invalid_ids(runtime, bundle, bad_id):
    bundle.set_args("true")
    p = runtime("create", "-b", bundle.path, bad_id)
    assert p.returncode == 1
    assert not os.path.exists(os.path.join(os.path.dirname(runtime.root), "escape"))


def test_unknown_id(runtime):
    for cmd in (["state"], ["start"], ["kill"], ["delete"], ["pause"], ["resume"], ["ps"]):
        err = one_line_error(runtime(*cmd, "ghost"))
        assert "does not exist" in err, cmd


def test_unknown_flag_and_command(runtime):
    assert "flag provided but not defined" in one_line_error(runtime("create", "--bogus", "x"))
    assert "no such command" in one_line_error(runtime("frobnicate"))


def test_json_log_gets_the_error(runtime, workdir, cid):
    log = os.path.join(workdir, "log.json")
    p = runtime("--log", log, "--log-format", "json", "state", cid)
    assert p.returncode == 1
    last = json.loads(open(log).read().splitlines()[-1])
    assert last["level"] == "error" and "does not exist" in last["msg"] and last["time"]


def test_full_state_root_is_a_one_line_error_and_leaves_nothing(pyrunc_bin, bundle, workdir,
                                                                cid):
    """A --root on a full filesystem (pybuild's store on a full disk): the create's lock
    cannot be written. One line naming the state dir, no traceback, no state dir left."""
    import subprocess

    root = os.path.join(workdir, "fullroot")
    os.mkdir(root)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", root], check=True)
    try:
        os.mkdir(os.path.join(root, "state"))
        with open(os.path.join(root, "filler"), "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        state = os.path.join(root, "state")
        p = subprocess.run([pyrunc_bin, "--root", state, "create", "-b", bundle.path, cid],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
        err = one_line_error(p)
        assert "Traceback" not in p.stderr
        assert "No space left on device" in err and cid in err, err
        assert os.listdir(state) == []
    finally:
        subprocess.run(["umount", root], check=True)
