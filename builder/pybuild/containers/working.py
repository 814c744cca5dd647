"""Working containers: from, mount, umount, copy, config, run, rm (buildah's commands).

A container's rootfs is an overlay: the image's layers, extracted once into the store
(ROOT/layers, shared with builds and every other container), as read-only lowers, and a
private upper dir. The image is never written to.
"""
import contextlib
import copy as _copy
import os
import shutil
import subprocess
import uuid

from ocispec.errors import OCIError

from .. import mounts
from ..image.store import normalize_ref
from ..image.unpack import extracted_layer
from ..rootfs import mkdir_all, resolve_in_root, rmtree_safe
from . import records


def image_layers(store, manifest: dict, cfg: dict) -> list[tuple[dict, str]]:
    diff_ids = cfg["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest["layers"]):
        raise OCIError(f"image has {len(manifest['layers'])} layers but {len(diff_ids)} diff_ids")
    return list(zip(manifest["layers"], diff_ids))


def _default_name(image: str) -> str:
    base = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{base or 'scratch'}-working-container"


def create(store, image: str, *, name: str | None = None) -> dict:
    """`pybuild from IMAGE`: a record and an overlay rootfs of the image's layers."""
    if image == "scratch":
        raise OCIError("pybuild from scratch is not supported: build FROM scratch instead")
    # registry: an image not in the store is pulled here once `pybuild pull` exists
    # (the registry helper's resolve-or-pull goes in place of store.resolve).
    desc = store.resolve(image)
    manifest = store.manifest(desc)
    cfg = store.image_config(manifest)
    layers = image_layers(store, manifest, cfg)
    for d, did in layers:  # extract (verified) before anything is recorded
        extracted_layer(store, d, did)
    shown = image if image.startswith("sha256:") or "@" in image else normalize_ref(image)
    rec = records.new_record(store, name=name, default_name=_default_name(image), image=shown,
                             image_digest=desc["digest"], config=_copy.deepcopy(cfg.get("config") or {}),
                             author=cfg.get("author"))
    try:
        for n in ("upper", "work", "rootfs"):
            os.mkdir(os.path.join(rec["dir"], n), 0o755)
        mount(store, rec)
    except BaseException:
        with contextlib.suppress(OCIError, OSError):
            remove(store, rec)
        raise
    return rec


def lowerdirs(store, rec: dict) -> list[str]:
    manifest = store.manifest({"digest": rec["image_digest"], "mediaType": None})
    cfg = store.image_config(manifest)
    lowers = [extracted_layer(store, d, did) for d, did in reversed(image_layers(store, manifest, cfg))]
    if not lowers:  # overlay needs a lowerdir: an empty image gets an empty one
        empty = os.path.join(records.record_dir(store.root, rec), "empty")
        os.makedirs(empty, exist_ok=True)
        lowers = [empty]
    return lowers


def rootfs(rec: dict) -> str:
    return os.path.join(rec["dir"], "rootfs")


def upper(rec: dict) -> str:
    return os.path.join(rec["dir"], "upper")


def is_mounted(rec: dict) -> bool:
    return mounts.is_mountpoint(rootfs(rec))


def mount(store, rec: dict) -> str:
    """Mount the container's rootfs (if it is not) and return its path."""
    target = rootfs(rec)
    if not is_mounted(rec):
        try:
            mounts.overlay(target, lowerdirs(store, rec), upper(rec), os.path.join(rec["dir"], "work"))
        except OCIError as e:
            raise OCIError(f"mounting container {rec['name']}: {e}") from None
    return target


def umount(rec: dict) -> None:
    if is_mounted(rec):
        mounts.umount(rootfs(rec))


def remove(store, rec: dict) -> None:
    """`pybuild rm`: unmount, remove the upper dir (and the bundle's files), the record."""
    with records.using(store.root, rec, exclusive=True, what="remove"):
        umount(rec)
        if rec.get("bundle"):
            b = rec["dir"]
            for n in ("rootfs", "upper", "work", "empty"):
                p = os.path.join(b, n)
                if os.path.isdir(p):
                    rmtree_safe(p)
            for n in ("config.json", "network.json"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(b, n))
            with contextlib.suppress(OSError):
                os.rmdir(b)  # unless the user keeps other files there
        records.remove_record(store, rec)


def copy_in(store, rec: dict, src: str, dest: str) -> None:
    """`pybuild copy`: a host file or directory into the container (dest resolved inside
    the rootfs, symlinks included, so it cannot land outside)."""
    if not os.path.lexists(src):
        raise OCIError(f"copy: {src} does not exist on the host")
    root = mount(store, rec)
    if not dest.startswith("/"):
        dest = "/" + ((rec.get("config") or {}).get("WorkingDir") or "/").strip("/") + "/" + dest
    into_dir = dest.endswith("/")
    resolved = resolve_in_root(root, dest)
    if os.path.isdir(src) and not os.path.islink(src):  # a directory's content goes into dest
        mkdir_all(root, resolved)
        _copy_tree(root, src, resolved)
    else:
        if into_dir or os.path.isdir(os.path.join(root, resolved.lstrip("/"))):
            resolved = resolve_in_root(root, resolved.rstrip("/") + "/" + os.path.basename(src))
        mkdir_all(root, os.path.dirname(resolved))
        _copy_one(root, src, resolved)
    rec["history"].append(f"COPY {os.path.basename(src)} {dest}")
    records.save(store.root, rec)


def _copy_one(root: str, src: str, resolved: str) -> None:
    # resolve again right before writing: the parent chain is then real dirs in the rootfs
    parent = resolve_in_root(root, os.path.dirname(resolved))
    host = os.path.join(root, parent.lstrip("/"), os.path.basename(resolved))
    if os.path.islink(host) or (os.path.lexists(host) and not os.path.isdir(host)):
        os.unlink(host)
    if os.path.islink(src):
        os.symlink(os.readlink(src), host)
    else:
        shutil.copy2(src, host, follow_symlinks=False)


def _copy_tree(root: str, src: str, resolved: str) -> None:
    for name in sorted(os.listdir(src)):
        s = os.path.join(src, name)
        d = resolved.rstrip("/") + "/" + name
        if os.path.isdir(s) and not os.path.islink(s):
            d = resolve_in_root(root, d)
            mkdir_all(root, d)
            shutil.copystat(s, os.path.join(root, d.lstrip("/")))
            _copy_tree(root, s, d)
        else:
            _copy_one(root, s, d)


_CONFIG_FIELDS = ("env", "cmd", "entrypoint", "workingdir", "user", "label", "port",
                  "stop_signal", "volume", "author", "unset_env", "unset_label")


def configure(store, rec: dict, changes: dict) -> dict:
    """`pybuild config`: change the image config the next commit records."""
    c = rec.setdefault("config", {})
    for kv in changes.get("env") or ():
        k, sep, v = kv.partition("=")
        if not k or not sep:
            raise OCIError(f"--env {kv!r}: want KEY=VALUE")
        env = [e for e in c.get("Env") or [] if e.split("=", 1)[0] != k]
        c["Env"] = env + [f"{k}={v}"]
    for k in changes.get("unset_env") or ():
        c["Env"] = [e for e in c.get("Env") or [] if e.split("=", 1)[0] != k]
    for key, field in (("cmd", "Cmd"), ("entrypoint", "Entrypoint")):
        if changes.get(key) is not None:
            c[field] = _command(changes[key], f"--{key}")
            if not c[field]:
                del c[field]
    if changes.get("workingdir") is not None:
        wd = changes["workingdir"]
        c["WorkingDir"] = wd if wd.startswith("/") else "/" + wd
    if changes.get("user") is not None:
        c["User"] = changes["user"]
    for kv in changes.get("label") or ():
        k, sep, v = kv.partition("=")
        if not k:
            raise OCIError(f"--label {kv!r}: want KEY=VALUE")
        c.setdefault("Labels", {})[k] = v
    for k in changes.get("unset_label") or ():
        (c.get("Labels") or {}).pop(k, None)
    for p in changes.get("port") or ():
        num, _, proto = p.partition("/")
        if not num.isdigit() or not 0 < int(num) < 65536 or (proto or "tcp") not in ("tcp", "udp", "sctp"):
            raise OCIError(f"--port {p!r}: want PORT[/tcp|udp|sctp]")
        c.setdefault("ExposedPorts", {})[f"{int(num)}/{proto or 'tcp'}"] = {}
    for v in changes.get("volume") or ():
        if not v.startswith("/"):
            raise OCIError(f"--volume {v!r}: want an absolute path in the container")
        c.setdefault("Volumes", {})[v] = {}
    if changes.get("stop_signal"):
        c["StopSignal"] = changes["stop_signal"]
    if changes.get("author") is not None:
        rec["author"] = changes["author"]
    records.save(store.root, rec)
    return rec


def _command(text: str, flag: str) -> list[str]:
    """JSON array form (exec) or a string run by /bin/sh -c, as a Dockerfile's CMD."""
    import json
    t = text.strip()
    if t.startswith("["):
        try:
            v = json.loads(t)
        except ValueError:
            v = None
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise OCIError(f"{flag} {text!r}: a JSON array of strings, or a shell command")
        return v
    return ["/bin/sh", "-c", t] if t else []


def run(store, rec: dict, args: list[str], opts, *, runtime: str = "pyrunc") -> int:
    """`pybuild run`: the command in the container with the runtime; returns its status.

    The mount points the runtime creates for its own mounts (resolv.conf, -v targets) are
    removed from the upper dir afterwards, as after a RUN step, so they stay out of commits.
    """
    from ..build.executor import find_runtime
    from ..build.run import _cleanup_mountpoint, mountpoints_to_create
    from ..image.config_convert import runtime_config
    from . import network, options
    if not args:
        raise OCIError("run: no command given (pybuild run CONTAINER -- CMD ...)")
    options.check(opts)
    runtime = find_runtime(runtime)
    with records.using(store.root, rec, exclusive=False, what="run in") as alone:
        root = mount(store, rec)
        rdir = records.record_dir(store.root, rec)
        bundle = os.path.join(rdir, f"run-{uuid.uuid4().hex[:12]}")
        os.mkdir(bundle, 0o700)
        cid = f"pybuild-{rec['id'][:12]}-{uuid.uuid4().hex[:8]}"
        state_root = os.path.join(rdir, "runtime")
        created = []
        try:
            spec = runtime_config({"config": rec.get("config") or {}}, root, args=args, root_path=root)
            spec["process"]["args"] = list(args)  # buildah run: the command alone, no Entrypoint
            options.apply(spec, opts, root)
            if opts.network == "bridge":
                network.prepare(store.root, bundle, spec, opts.ports)
            created = mountpoints_to_create(root, spec["mounts"])
            mkdir_all(root, resolve_in_root(root, spec["process"]["cwd"]))
            import json
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(spec, f)
            rec["history"].append("RUN " + " ".join(args))
            records.save(store.root, rec)
            cmd = [runtime, "--root", state_root, "run", "--bundle", bundle, cid]
            try:
                p = subprocess.run(cmd, cwd=bundle)
                rc = p.returncode
            finally:
                subprocess.run([runtime, "--root", state_root, "delete", "--force", cid],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return rc
        finally:
            # The upper dir may only be changed with the overlay unmounted (overlayfs caches
            # it), and not under another run: mount points stay until a later run cleans them.
            if created and alone():
                umount(rec)
                for target, stop, parents in created:
                    with contextlib.suppress(OSError):
                        _cleanup_mountpoint(upper(rec), target, stop, parents)
            rmtree_safe(bundle)
