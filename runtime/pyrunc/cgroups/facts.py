"""What this host's cgroups offer, for `pyrunc features`."""

from . import paths
from .files import read

# The runtime-spec features document's linux.cgroup object: what this build can drive.
# systemd: cgroupsPath "slice:prefix:name" is mapped onto cgroupfs, but no unit is asked of
# systemd (this build has no D-Bus client), so the driver itself is not claimed.
FEATURES = {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": True}


def host_facts() -> dict:
    """{'layout', 'v1': bool, 'v2': bool, 'systemd': False, 'v1_controllers': [...],
    'v2_controllers': [...], 'v2_mount', 'devices': 'v1'|'ebpf'|None, 'features': {...}}
    ('features' is the spec's linux.cgroup object for `pyrunc features`)."""
    v1, v2 = paths.mounts()
    lay = paths.layout()
    v2c = []
    if v2:
        try:
            v2c = read(v2[0], "cgroup.controllers").split()
        except OSError:
            pass
    return {
        "layout": lay,
        "v1": bool(v1),
        "v2": bool(v2),
        # cgroup paths of the systemd form are mapped onto cgroupfs; no unit is made
        "systemd": False,
        "v1_controllers": sorted(c for c in v1 if not c.startswith("name=")),
        "v2_controllers": sorted(v2c),
        "v2_mount": v2[0] if v2 else None,
        "devices": "v1" if "devices" in v1 else ("ebpf" if v2 else None),
        "features": dict(FEATURES),
    }
