"""What a user sets when a container runs (`pybuild unpack` and `pybuild run` options) ->
changes to the config.json made from the image: docker run's meaning for each flag."""
from .. import recordclass
import os

from ocispec.errors import OCIError

NETWORKS = ("none", "host", "bridge")


@recordclass.record
class RunOptions:
    env: list = recordclass.field(default_factory=list)        # K=V (K alone: from our env)
    tty: bool = False
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    volumes: list = recordclass.field(default_factory=list)    # SRC:DEST[:ro|rw]
    read_only: bool = False
    memory: int | None = None                                  # bytes
    cpus: float | None = None
    pids_limit: int | None = None
    network: str = "none"
    ports: list = recordclass.field(default_factory=list)      # parsed PortMapping dicts


def parse_env(values) -> list[str]:
    out = []
    for v in values or ():
        k, sep, val = v.partition("=")
        if not k:
            raise OCIError(f"-e {v!r}: want KEY=VALUE")
        if not sep:  # docker: -e K takes K from the environment, or is dropped
            if k not in os.environ:
                continue
            val = os.environ[k]
        out.append(f"{k}={val}")
    return out


def parse_volume(text: str) -> dict:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise OCIError(f"-v {text!r}: want SRC:DEST[:ro]")
    src, dest = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise OCIError(f"-v {text!r}: the mode must be ro or rw, not {mode!r}")
    if not os.path.isabs(src) or not os.path.isabs(dest):
        raise OCIError(f"-v {text!r}: SRC and DEST must be absolute paths")
    if not os.path.exists(src):
        raise OCIError(f"-v {text!r}: {src} does not exist on the host")
    if os.path.normpath(dest) == "/":
        raise OCIError(f"-v {text!r}: cannot mount over the container's /")
    return {"destination": os.path.normpath(dest), "type": "bind", "source": os.path.realpath(src),
            "options": ["rbind", mode]}


def parse_cpus(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        v = -1
    if not 0 < v <= 4096:
        raise OCIError(f"--cpus {text!r}: want a number of CPUs such as 0.5 or 2")
    return v


def check(opts: RunOptions) -> None:
    if opts.network not in NETWORKS:
        raise OCIError(f"--network {opts.network!r}: want none, host or bridge")
    if opts.ports and opts.network != "bridge":
        raise OCIError(f"-p needs --network bridge (the network is {opts.network})")
    if opts.pids_limit is not None and opts.pids_limit < -1:
        raise OCIError(f"--pids-limit {opts.pids_limit}: want a number of processes (-1: no limit)")


def apply(spec: dict, opts: RunOptions, rootfs: str | None) -> dict:
    """Change the config.json `spec` (from config_convert.runtime_config) for these options;
    bridge networking's hooks are added by network.add_hooks."""
    from ..image.config_convert import resolve_user
    check(opts)
    proc = spec["process"]
    if opts.tty:
        proc["terminal"] = True
        if not any(e.startswith("TERM=") for e in proc["env"]):
            proc["env"].append("TERM=xterm")
    for e in opts.env:
        key = e.split("=", 1)[0]
        proc["env"] = [x for x in proc["env"] if x.split("=", 1)[0] != key] + [e]
    if opts.workdir:
        if not opts.workdir.startswith("/"):
            raise OCIError(f"--workdir {opts.workdir!r}: want an absolute path")
        proc["cwd"] = opts.workdir
    if opts.user:
        proc["user"] = resolve_user(opts.user, rootfs)
    if opts.hostname:
        spec["hostname"] = opts.hostname
    elif opts.network != "host":
        spec["hostname"] = "pybuild"
    lx = spec.setdefault("linux", {})
    for v in opts.volumes:
        spec["mounts"].append(parse_volume(v) if isinstance(v, str) else v)
    if opts.read_only:
        spec["root"]["readonly"] = True
    res = lx.setdefault("resources", {})
    if opts.memory:
        res["memory"] = {"limit": opts.memory}
    if opts.cpus:
        res["cpu"] = {"period": 100000, "quota": int(opts.cpus * 100000)}
    if opts.pids_limit is not None and opts.pids_limit != 0:
        res["pids"] = {"limit": opts.pids_limit}
    ns = [n for n in lx.get("namespaces", []) if n.get("type") != "network"]
    if opts.network != "host":
        ns.append({"type": "network"})
    lx["namespaces"] = ns
    if opts.network != "none":  # the host's name servers, as a RUN step gets them
        have = {m["destination"] for m in spec["mounts"]}
        for f in ("/etc/resolv.conf", "/etc/hosts"):
            if os.path.exists(f) and f not in have and not (f == "/etc/hosts" and opts.network != "host"):
                spec["mounts"].append({"destination": f, "type": "bind", "source": f,
                                       "options": ["rbind", "ro"]})
    return spec
