"""Case modules, grouped by area; importing this package registers every case."""

from . import lifecycle, hooks, process, filesystem, namespaces, cgroups, security  # noqa: F401
