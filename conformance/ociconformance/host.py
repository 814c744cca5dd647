"""Probes of what this host offers. Each returns None when the feature is there, or a
short phrase naming what is missing: the one reason a case may be skipped."""

import os

from . import cgroupfs
from .runtime import read


def apparmor() -> str | None:
    try:
        if read("/sys/module/apparmor/parameters/enabled").strip() == "Y":
            return None
    except OSError:
        pass
    return "no AppArmor on this host (/sys/module/apparmor/parameters/enabled is not Y)"


def selinux() -> str | None:
    if os.path.exists("/sys/fs/selinux/enforce"):
        return None
    return "no SELinux on this host (/sys/fs/selinux is not mounted)"


def capability(name: str) -> str | None:
    from ocispec.tables import CAPABILITIES
    for line in read("/proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            if int(line.split()[1], 16) >> CAPABILITIES[name] & 1:
                return None
    return f"the harness lacks {name} on this host"


def controller(name: str) -> str | None:
    return cgroupfs.missing(name)


def hugepage_sizes() -> list[str]:
    """Huge page sizes the kernel offers, as cgroup file names spell them (2MB, 1GB)."""
    sizes = []
    try:
        for d in os.listdir("/sys/kernel/mm/hugepages"):
            kb = int(d.split("-")[1].rstrip("kB"))
            sizes.append(f"{kb // 1048576}GB" if kb >= 1048576 else
                         f"{kb // 1024}MB" if kb >= 1024 else f"{kb}KB")
    except OSError:
        pass
    return sorted(sizes)


def block_device() -> tuple[int, int] | None:
    """major, minor of a whole disk (not loop, ram or zram) for blkio throttling."""
    try:
        names = sorted(os.listdir("/sys/block"))
    except OSError:
        return None
    for prefer_real in (True, False):
        for n in names:
            if prefer_real and n.startswith(("loop", "ram", "zram", "nbd")):
                continue
            try:
                major, minor = read(f"/sys/block/{n}/dev").strip().split(":")
                return int(major), int(minor)
            except (OSError, ValueError):
                continue
    return None


def blkio_weight_file() -> str | None:
    """The blkio/io weight file a child cgroup of this host has (blkio.weight,
    blkio.bfq.weight, io.bfq.weight or io.weight), or None: without the CFQ or BFQ I/O
    scheduler the kernel offers no weight at all, and runc fails there as pyrunc does."""
    import tempfile

    for h in cgroupfs.hierarchies():
        ctrl = "blkio" if "blkio" in h.controllers else "io" if "io" in h.controllers else None
        if not ctrl:
            continue
        # weights are not offered on the root cgroup: look in a child of our own
        try:
            d = tempfile.mkdtemp(prefix="occ-probe-", dir=h.mountpoint)
        except OSError:
            return None
        try:
            names = (("blkio.weight", "blkio.bfq.weight") if ctrl == "blkio" else
                     ("io.bfq.weight", "io.weight"))
            return next((n for n in names if os.path.exists(os.path.join(d, n))), None)
        finally:
            os.rmdir(d)
    return None


def summary() -> dict:
    """What the host offers, for the JSON report and the table's footer."""
    return {
        "cgroup_mode": cgroupfs.mode(),
        "hierarchies": [f"{h.mountpoint} (v{h.version}: {','.join(sorted(h.controllers))})"
                        for h in cgroupfs.hierarchies()],
        "apparmor": apparmor() is None,
        "selinux": selinux() is None,
        "cap_sys_resource": capability("CAP_SYS_RESOURCE") is None,
        "hugepage_sizes": hugepage_sizes(),
        "blkio_weight": blkio_weight_file(),
    }
