"""pybuild.image.config_convert: image config -> config.json, users resolved inside the rootfs only."""
import os

import pytest

from ocispec.errors import OCIError
from ocispec.runtime_config import validate_config
from ocispec.schema import validate_document
from pybuild.image.config_convert import resolve_user, runtime_config


@pytest.fixture
def rootfs(tmp_path):
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nweb:x:33:34::/var/www:/bin/false\n")
    (r / "etc" / "group").write_text("root:x:0:\nwww:x:34:\nadm:x:4:web,other\nstaff:x:50:web\n")
    return r


@pytest.mark.parametrize("user,want", [
    ("", {"uid": 0, "gid": 0}),
    ("web", {"uid": 33, "gid": 34, "additionalGids": [4, 50]}),
    ("33", {"uid": 33, "gid": 34, "additionalGids": [4, 50]}),
    ("web:staff", {"uid": 33, "gid": 50}),
    ("web:7", {"uid": 33, "gid": 7}),
    ("1234", {"uid": 1234, "gid": 0}),
    ("1234:www", {"uid": 1234, "gid": 34}),
])
def test_resolve_user(rootfs, user, want):
    assert resolve_user(user, str(rootfs)) == want


def test_unknown_names(rootfs):
    with pytest.raises(OCIError, match="unable to find user nobody"):
        resolve_user("nobody", str(rootfs))
    with pytest.raises(OCIError, match="unable to find group nogroup"):
        resolve_user("web:nogroup", str(rootfs))


def test_passwd_symlink_cannot_escape(tmp_path):
    """A hostile image's /etc/passwd -> host file must resolve inside the rootfs."""
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    host = tmp_path / "hostpasswd"
    host.write_text("evil:x:4242:4242::/:/bin/sh\n")
    os.symlink(str(host), r / "etc" / "passwd")          # absolute: becomes rootfs/<host path>
    os.symlink("../../hostpasswd", r / "etc" / "group")  # climbs: clamped at the rootfs
    with pytest.raises(OCIError, match="unable to find user evil"):
        resolve_user("evil", str(r))
    assert resolve_user("4242", str(r)) == {"uid": 4242, "gid": 0}


def test_runtime_config_rules(rootfs):
    img = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
           "config": {"Entrypoint": ["/bin/app", "--flag"], "Cmd": ["serve"], "Env": ["PATH=/opt/bin", "X=1"],
                      "WorkingDir": "srv", "User": "web", "Labels": {"a": "b"},
                      "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "StopSignal": "SIGQUIT"},
           "rootfs": {"type": "layers", "diff_ids": []}}
    spec = runtime_config(img, str(rootfs))
    validate_config(spec)
    validate_document(spec, "config")
    p = spec["process"]
    assert p["args"] == ["/bin/app", "--flag", "serve"]
    assert p["env"] == ["PATH=/opt/bin", "X=1"] and p["cwd"] == "/srv"
    assert p["user"] == {"uid": 33, "gid": 34, "additionalGids": [4, 50]}
    assert spec["annotations"] == {
        "a": "b", "org.opencontainers.image.os": "linux", "org.opencontainers.image.architecture": "amd64",
        "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
        "org.opencontainers.image.exposedPorts": "53/udp,80/tcp", "org.opencontainers.image.stopSignal": "SIGQUIT"}
    assert [n["type"] for n in spec["linux"]["namespaces"]] == ["pid", "network", "ipc", "uts", "mount"]
    assert "/proc/kcore" in spec["linux"]["maskedPaths"] and "/proc/sys" in spec["linux"]["readonlyPaths"]
    # args replace Cmd, not Entrypoint; a terminal adds TERM
    spec = runtime_config(img, str(rootfs), args=["check"], terminal=True)
    assert spec["process"]["args"] == ["/bin/app", "--flag", "check"] and "TERM=xterm" in spec["process"]["env"]
    with pytest.raises(OCIError, match="no Entrypoint or Cmd"):
        runtime_config({**img, "config": {}}, str(rootfs))
    assert runtime_config({**img, "config": {"Cmd": ["sh"]}}, None)["process"]["env"][0].startswith("PATH=/usr/local")
