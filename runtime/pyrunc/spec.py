"""`pyrunc spec`: the default config.json, the container `runc spec` describes.

The document itself comes from ocispec.defaults (shared with the tests and pybuild); pyrunc
only names its own host and adds a cgroup namespace, so /sys/fs/cgroup inside shows the
container's own cgroups.
"""


def default_spec(rootless: bool = False) -> dict:
    from ocispec.defaults import runc_spec

    spec = runc_spec(rootless=rootless)
    spec["hostname"] = "pyrunc"
    if not rootless:
        spec["linux"]["namespaces"].append({"type": "cgroup"})
    return spec
