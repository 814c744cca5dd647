"""Image config -> runtime config.json (image-spec conversion.md, umoci's convert rules).

Entrypoint + Cmd -> process.args, Env -> process.env, WorkingDir -> process.cwd, User
(numeric or a name looked up in the rootfs's /etc/passwd and /etc/group, read without
leaving the rootfs) -> process.user, Labels -> annotations, plus the conversion.md
annotations; mounts, namespaces and masked/readonly paths as `runc spec` makes them.
"""

from ocispec import defaults as _defaults
from ocispec.errors import OCIError

DEFAULT_PATH = _defaults.DEFAULT_PATH_ENV
# Docker's default capability set: what images expect to be able to do as root.
DEFAULT_CAPS = _defaults.DEFAULT_CAPS


def resolve_user(user: str | None, rootfs: str | None) -> dict:
    """`User` of an image config -> {"uid", "gid", "additionalGids"?} (image/users.py: the
    one resolver RUN uses too). Forms: "", "uid", "uid:gid", "name", "name:group", mixed;
    an unknown name is an error, as in Docker."""
    from .users import resolve_user as _resolve
    uid, gid, extra = _resolve(rootfs, (user or "").strip(), "")
    out = {"uid": uid, "gid": gid}
    if extra:
        out["additionalGids"] = extra
    return out


def default_spec() -> dict:
    """`runc spec`'s config, adjusted for images: no terminal, Docker's capabilities,
    a writable root, no fixed hostname, setuid programs allowed (images expect su/sudo)."""
    spec = _defaults.runc_spec(terminal=False)
    proc = spec["process"]
    proc["capabilities"] = {s: list(DEFAULT_CAPS) for s in ("bounding", "effective", "permitted")}
    proc["noNewPrivileges"] = False
    spec["root"]["readonly"] = False
    del spec["hostname"]
    return spec


def runtime_config(image_config: dict, rootfs: str | None = None, *, args=None,
                   terminal: bool = False, root_path: str = "rootfs", extra_env=None) -> dict:
    """The config.json for a container of an image (its config document from the store)."""
    c = image_config.get("config") or {}
    spec = default_spec()
    proc = spec["process"]
    proc["terminal"] = bool(terminal)
    entry = list(c.get("Entrypoint") or [])
    cmd = list(args) if args is not None else list(c.get("Cmd") or [])
    proc["args"] = entry + cmd
    if not proc["args"]:
        raise OCIError("the image has no Entrypoint or Cmd and no command was given")
    env = list(c.get("Env") or [])
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    if terminal and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    for e in extra_env or ():
        key = e.split("=", 1)[0]
        env = [x for x in env if x.split("=", 1)[0] != key] + [e]
    proc["env"] = env
    wd = c.get("WorkingDir") or "/"
    proc["cwd"] = wd if wd.startswith("/") else "/" + wd
    proc["user"] = resolve_user(c.get("User"), rootfs)
    spec["root"]["path"] = root_path
    ann = {}
    for key, field in (("org.opencontainers.image.os", "os"),
                       ("org.opencontainers.image.architecture", "architecture"),
                       ("org.opencontainers.image.variant", "variant"),
                       ("org.opencontainers.image.os.version", "os.version"),
                       ("org.opencontainers.image.author", "author"),
                       ("org.opencontainers.image.created", "created")):
        if image_config.get(field):
            ann[key] = str(image_config[field])
    if image_config.get("os.features"):
        ann["org.opencontainers.image.os.features"] = ",".join(image_config["os.features"])
    if c.get("ExposedPorts"):
        ann["org.opencontainers.image.exposedPorts"] = ",".join(sorted(c["ExposedPorts"]))
    if c.get("StopSignal"):
        ann["org.opencontainers.image.stopSignal"] = c["StopSignal"]
    ann.update({str(k): str(v) for k, v in (c.get("Labels") or {}).items()})
    if ann:
        spec["annotations"] = ann
    return spec
