"""The default runtime config, as `runc spec` writes it (and `runc spec --rootless`).

pyrunc's `spec` command prints it; pybuild's image-to-bundle conversion starts from it.
The mounts, masked and read-only paths here are the one copy of those lists.
"""
import copy
import os

OCI_VERSION = "1.2.0"
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNC_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
]
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
NAMESPACES = ["pid", "network", "ipc", "uts", "mount"]


def runc_spec(*, rootless: bool = False, uid: int | None = None, gid: int | None = None,
              oci_version: str = OCI_VERSION, args=("sh",), terminal: bool = True) -> dict:
    """The config.json `runc spec [--rootless]` writes (ociVersion aside)."""
    caps = list(RUNC_CAPS)
    spec = {
        "ociVersion": oci_version,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [DEFAULT_PATH_ENV] + (["TERM=xterm"] if terminal else []),
            "cwd": "/",
            "capabilities": {s: list(caps) for s in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": copy.deepcopy(MOUNTS),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in NAMESPACES],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if rootless:
        # runc's ToRootless: own user namespace mapping us to root, no new network
        # namespace, /sys bound from the host, no devpts gid and no device cgroup rules.
        lx = spec["linux"]
        lx["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid() if uid is None else uid, "size": 1}]
        lx["gidMappings"] = [{"containerID": 0, "hostID": os.getegid() if gid is None else gid, "size": 1}]
        lx["namespaces"] = [n for n in lx["namespaces"] if n["type"] != "network"] + [{"type": "user"}]
        del lx["resources"]
        for m in spec["mounts"]:
            if m["destination"] == "/dev/pts":
                m["options"] = [o for o in m["options"] if o != "gid=5"]
            if m["destination"] == "/sys":
                m.update(type="none", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"])
    return spec
