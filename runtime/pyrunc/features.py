"""`pyrunc features`: what this build supports on this host, from the same tables
validation uses (ocispec.tables) plus what the host's cgroups, libseccomp and LSMs say."""


def features() -> dict:
    from ocispec.features import runtime_features

    from . import lsm, seccomp
    from .cgroups import host_facts

    cg = host_facts()["features"]
    sc = seccomp.supported()
    doc = runtime_features(
        cgroup_v1=cg["v1"], cgroup_v2=cg["v2"], systemd=cg["systemd"],
        systemd_user=cg["systemdUser"], rdma=cg["rdma"], seccomp=sc["enabled"],
        seccomp_supported_flags=sc["supportedFlags"], apparmor=lsm.apparmor_enabled(),
        selinux=lsm.selinux_enabled(),
    )
    doc["linux"]["seccomp"].update(sc)
    doc.setdefault("annotations", {})["org.opencontainers.runc.version"] = "pyrunc"
    return doc
