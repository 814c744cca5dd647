"""process.apparmorProfile and process.selinuxLabel: exec labels, which the kernel applies at
the next execve. Where the host has no such LSM this is an error, never a silent skip: the
config asked for confinement that would not happen.
"""

from . import oslite as os

from ocispec.errors import OCIError, SpecError


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    # selinuxfs is mounted (enforce exists) only when SELinux is active.
    return os.path.exists("/sys/fs/selinux/enforce")


def check(process: dict, linux: dict | None = None) -> tuple[str | None, str | None]:
    """(apparmor profile, selinux label) to apply, or an OCIError if the host cannot.
    linux.mountLabel is checked here too (rootfs applies it, see mount_context)."""
    mount_context((linux or {}).get("mountLabel"))
    profile = process.get("apparmorProfile") or None
    label = process.get("selinuxLabel") or None
    if profile is not None:
        if not isinstance(profile, str):
            raise SpecError("process.apparmorProfile", "must be a string")
        if not apparmor_enabled():
            raise OCIError("process.apparmorProfile: AppArmor is not enabled on this host",
                           hint="remove apparmorProfile or run on a host with AppArmor")
    if label is not None:
        if not isinstance(label, str):
            raise SpecError("process.selinuxLabel", "must be a string")
        if not selinux_enabled():
            raise OCIError("process.selinuxLabel: SELinux is not enabled on this host",
                           hint="remove selinuxLabel or run on a host with SELinux")
    return profile, label


def _write(paths, data: str, field: str) -> None:
    from . import procfs

    err = None
    for p in paths:
        try:
            fd = procfs.open(p, os.O_WRONLY)
        except FileNotFoundError as e:
            err = e
            continue
        except OSError as e:
            raise OCIError(f"{field}: opening /proc/{p}: {e.strerror}", errno=e.errno) from None
        try:
            os.write(fd, data.encode())
            return
        except OSError as e:
            raise OCIError(f"{field}: setting {data!r}: {e.strerror}", errno=e.errno) from None
        finally:
            os.close(fd)
    raise OCIError(f"{field}: /proc/{paths[-1]} is missing (is /proc mounted?)", errno=err and err.errno)


def apply(profile: str | None, label: str | None) -> None:
    if profile:
        # The LSM-specific path exists since Linux 5.8; attr/exec is the shared fallback.
        _write(("thread-self/attr/apparmor/exec", "thread-self/attr/exec"),
               f"exec {profile}", "process.apparmorProfile")
    if label:
        _write(("thread-self/attr/exec",), label, "process.selinuxLabel")


def mount_context(label) -> str | None:
    """The mount data option that applies linux.mountLabel ('context="LABEL"'), None when the
    config has none, an OCIError when the host has no SELinux to apply it."""
    if not label:
        return None
    if not isinstance(label, str):
        raise SpecError("linux.mountLabel", "must be a string")
    if not selinux_enabled():
        raise OCIError("linux.mountLabel: SELinux is not enabled on this host",
                       hint="remove mountLabel or run on a host with SELinux")
    return f'context="{label}"'
