"""ocispec.runtime_config rules for linux.netDevices names and idmapped mounts, which
pyrunc.netdev and pyrunc.idmap rely on having been checked before create acts."""
import copy
import json
import subprocess

import pytest

from ocispec.errors import SpecError
from ocispec.runtime_config import validate_config

ONE = [{"containerID": 0, "hostID": 1000, "size": 1}]
BIND = {"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind"]}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("ocispec-netdev-idmap")
    subprocess.run(["runc", "spec"], cwd=d, check=True)
    return json.loads((d / "config.json").read_text())


def with_(base, netdevs=None, mount=None, linux_maps=False):
    c = copy.deepcopy(base)
    if netdevs is not None:
        c["linux"]["netDevices"] = netdevs
    if mount is not None:
        c["mounts"].append(mount)
    if linux_maps:
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = [
            {"containerID": 0, "hostID": 100000, "size": 65536}]
    return c


@pytest.mark.parametrize("netdevs, msg", [
    ({"eth0": {"name": "a/b"}}, 'linux.netDevices.eth0.name: invalid network interface name "a/b"'),
    ({"eth0": {"name": "x" * 16}}, "linux.netDevices.eth0.name: invalid network interface name"),
    ({"e th": {}}, 'linux.netDevices.e th: invalid network interface name "e th"'),
    ({"eth0:1": {}}, 'linux.netDevices.eth0:1: invalid network interface name'),
    ({"eth0": {"name": "c"}, "eth1": {"name": "c"}},
     'linux.netDevices.eth1.name: "c" is also the name for linux.netDevices.eth0'),
    ({"eth0": {}, "eth1": {"name": "eth0"}},
     'linux.netDevices.eth1.name: "eth0" is also the name for linux.netDevices.eth0'),
])
def test_bad_net_devices(base, netdevs, msg):
    with pytest.raises(SpecError) as e:
        validate_config(with_(base, netdevs=netdevs))
    assert str(e.value).startswith(f"config.json: {msg}")


def test_good_net_devices(base):
    validate_config(with_(base, netdevs={"eth0": {"name": "c%d"}, "eth1": {"name": "c%d"},
                                         "eth2": {}, "x" * 15: {"name": ""}}))


@pytest.mark.parametrize("mount, linux_maps, msg", [
    ({**BIND, "options": ["idmap"], "uidMappings": ONE}, False,
     "mounts[7].uidMappings: uidMappings and gidMappings go together"),
    ({**BIND, "options": ["ridmap"]}, False,
     "mounts[7].options: idmap without uidMappings/gidMappings needs linux.uidMappings"),
    ({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "uidMappings": ONE,
      "gidMappings": ONE}, False, "mounts[7].options: idmap is only supported on bind mounts"),
])
def test_bad_idmapped_mounts(base, mount, linux_maps, msg):
    with pytest.raises(SpecError) as e:
        validate_config(with_(base, mount=mount, linux_maps=linux_maps))
    assert str(e.value).startswith(f"config.json: {msg}")


@pytest.mark.parametrize("mount, linux_maps", [
    ({**BIND, "options": ["idmap"], "uidMappings": ONE, "gidMappings": ONE}, False),
    ({**BIND, "options": ["rbind", "ridmap"]}, True),
])
def test_good_idmapped_mounts(base, mount, linux_maps):
    validate_config(with_(base, mount=mount, linux_maps=linux_maps))
