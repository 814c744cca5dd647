"""The runtime-spec features document (features.md), built from ocispec.tables.

`pyrunc features` prints runtime_features(...); the host facts (which cgroup versions exist,
whether seccomp is usable, ...) are passed in by the caller so this module stays a pure
function of the tables.
"""
from . import tables as T

OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.2.0"


def mount_options() -> list[str]:
    """Every mount option name pyrunc understands, sorted."""
    names = set(T.MOUNT_FLAGS) | set(T.PROPAGATION) | set(T.RECURSIVE_MOUNT_ATTRS)
    names |= set(T.EXTRA_MOUNT_OPTIONS)
    return sorted(names)


def runtime_features(*, oci_version_min: str = OCI_VERSION_MIN, oci_version_max: str = OCI_VERSION_MAX,
                     cgroup_v1: bool = True, cgroup_v2: bool = True, systemd: bool = True,
                     systemd_user: bool = False, rdma: bool = False, seccomp: bool = True,
                     seccomp_supported_flags=None, apparmor: bool = False, selinux: bool = False,
                     intel_rdt: bool = False, idmap: bool = True, net_devices: bool = True,
                     annotations: dict | None = None, unsafe_annotations=None) -> dict:
    """The features document. Keyword facts describe the host and build; defaults fit this one."""
    doc = {
        "ociVersionMin": oci_version_min,
        "ociVersionMax": oci_version_max,
        "hooks": list(T.HOOKS),
        "mountOptions": mount_options(),
        "linux": {
            "namespaces": sorted(T.NAMESPACES),
            "capabilities": sorted(T.CAPABILITIES, key=T.CAPABILITIES.get),
            "cgroup": {"v1": cgroup_v1, "v2": cgroup_v2, "systemd": systemd,
                       "systemdUser": systemd_user, "rdma": rdma},
            "seccomp": {
                "enabled": seccomp,
                "actions": list(T.SECCOMP_ACTIONS),
                "operators": list(T.SECCOMP_OPERATORS),
                "archs": list(T.SECCOMP_ARCHES),
                "knownFlags": list(T.SECCOMP_FLAGS),
                "supportedFlags": list(T.SECCOMP_FLAGS if seccomp_supported_flags is None
                                       else seccomp_supported_flags) if seccomp else [],
            },
            "apparmor": {"enabled": apparmor},
            "selinux": {"enabled": selinux},
            "intelRdt": {"enabled": intel_rdt},
            "mountExtensions": {"idmap": {"enabled": idmap}},
            "netDevices": {"enabled": net_devices},
        },
        "annotations": dict(annotations or {}),
    }
    if unsafe_annotations:
        doc["potentiallyUnsafeConfigAnnotations"] = list(unsafe_annotations)
    return doc


def host_facts() -> dict:
    """Facts about this host for runtime_features(): cgroup versions, LSMs (cheap checks)."""
    import os
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers") or \
        os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers")
    v1 = any(os.path.isdir(f"/sys/fs/cgroup/{c}") for c in ("memory", "cpu", "pids", "devices"))
    apparmor = os.path.exists("/sys/kernel/security/apparmor")
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            apparmor = apparmor and f.read().strip() == "Y"
    except OSError:
        apparmor = False
    selinux = os.path.exists("/sys/fs/selinux/enforce")
    return {"cgroup_v1": v1, "cgroup_v2": v2, "apparmor": apparmor, "selinux": selinux}
