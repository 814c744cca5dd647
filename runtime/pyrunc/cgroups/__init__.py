"""Cgroups for pyrunc: one Manager over the v1, v2 and hybrid cgroupfs layouts.

    m = Manager.for_container(id, cfg["linux"].get("cgroupsPath"), systemd=...)
    m.create(); m.add(pid)                          # pyrunc create
    m.set(create_resources(cfg["linux"]))
    Manager.from_state(m.to_state())                # later commands
"""


def __getattr__(name: str):
    # Manager on first use: `state` and `start` read one freezer file (cgroups.files) and
    # need none of the manager's imports.
    if name == "Manager":
        from .manager import Manager

        return Manager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resources_from_update_flags(**flags) -> dict:
    """runc update's per-field flags (--memory "10M", --cpu-quota, ...) as linux.resources."""
    from .update import resources_from_update_flags as convert
    return convert(**flags)


def create_resources(linux: dict) -> dict:
    """linux.resources as runc 1.1 applies it at create (linux.devices nodes get no rule
    of their own; set() always appends runc's default allowed devices: /dev/null, zero,
    full, tty, ptmx, pts, ...)."""
    from .devices import create_resources as expand
    return expand(linux)


def validate_resources(resources, *, host: bool = True) -> None:
    """Check linux.resources before acting (SpecError naming the field); host=True also
    refuses controllers and huge page sizes this host lacks."""
    from .validate import validate_resources as check
    check(resources, host=host)


def mount(m, dest: str, flags: int, cgroupns: bool) -> None:
    """Mount the container's cgroups at dest (init's mount namespace, before pivot_root)."""
    from .mount import mount_cgroups
    mount_cgroups(m, dest, flags, cgroupns)


def host_facts() -> dict:
    """Cgroup layout and controllers of this host, for `pyrunc features`."""
    from .facts import host_facts as facts
    return facts()
