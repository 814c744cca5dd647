"""An image in the store -> an OCI runtime bundle (rootfs + config.json).

Plain mode extracts every layer, in order, into BUNDLE/rootfs. Overlay mode extracts each
layer once into the store's layer cache (ROOT/layers/<diff_id hex>, whiteouts kept as
overlayfs marks) and mounts an overlay of them with a writable BUNDLE/upper: N containers of
one image share one copy of its layers. cleanup_bundle() undoes either.
"""
import contextlib
import ctypes
import json
import os
import shutil
import uuid

from ocispec import digest as _digest
from ocispec.errors import OCIError

from .config_convert import runtime_config
from .extract import apply_layer

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


def layer_cache_dir(store) -> str:
    return os.path.join(store.root, "layers")


def extracted_layer(store, layer_desc: dict, diff_id: str) -> str:
    """The directory holding this layer extracted on its own (made once, atomically)."""
    hexd = _digest.parse(diff_id)[1]
    base = layer_cache_dir(store)
    path = os.path.join(base, hexd)
    if os.path.isdir(path):
        return path
    # 0700: extracted layers hold the image's setuid files and device nodes; like
    # /var/lib/docker, host users must not be able to reach them.
    os.makedirs(base, mode=0o700, exist_ok=True)
    if os.stat(base).st_mode & 0o077:
        os.chmod(base, 0o700)
    tmp = os.path.join(base, f".tmp-{hexd[:12]}-{uuid.uuid4().hex[:8]}")
    os.mkdir(tmp, 0o755)
    try:
        apply_layer(store.blob_path(layer_desc["digest"]), layer_desc.get("mediaType"), tmp,
                    whiteouts="overlay")
        try:
            os.rename(tmp, path)
        except OSError:  # another builder finished it first
            if not os.path.isdir(path):
                raise
            shutil.rmtree(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise
    return path


def mount_overlay(lowerdirs: list[str], upperdir: str, workdir: str, target: str) -> None:
    """Mount an overlay: lowerdirs top-most first, writable upperdir."""
    # redirect_dir/metacopy off: the upper dir must hold whole files and directories,
    # so it can become a layer on its own.
    opts = (f"lowerdir={':'.join(lowerdirs)},upperdir={upperdir},workdir={workdir},"
            "redirect_dir=off,metacopy=off")
    if len(opts) > 4000:
        raise OCIError(f"too many layers ({len(lowerdirs)}) for one overlay mount")
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, opts.encode()) != 0:
        e = ctypes.get_errno()
        raise OCIError(f"mounting overlay on {target}: {os.strerror(e)}", errno=e)


def _is_mountpoint(path: str) -> bool:
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == path:
                return True
    return False


def unpack(store, image_ref, bundle_dir, *, overlay: bool = False, args=None,
           terminal: bool = False) -> dict:
    """Make an OCI runtime bundle for an image (a store name or manifest descriptor).

    Returns the config.json written. With overlay=True, BUNDLE/rootfs is an overlay mount;
    call cleanup_bundle(BUNDLE) to unmount and remove it.
    """
    manifest = store.manifest(image_ref)
    cfg = store.image_config(manifest)
    diff_ids = cfg["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest["layers"]):
        raise OCIError(f"image has {len(manifest['layers'])} layers but {len(diff_ids)} diff_ids")
    bundle_dir = os.path.abspath(os.fspath(bundle_dir))
    rootfs = os.path.join(bundle_dir, "rootfs")
    made = []  # what to remove again if this fails
    if not os.path.exists(bundle_dir):
        os.makedirs(bundle_dir)
        os.chmod(bundle_dir, 0o700)  # as umoci: the rootfs's setuid files stay out of reach
        made.append(bundle_dir)
    if os.path.exists(rootfs) and (os.listdir(rootfs) or _is_mountpoint(rootfs)):
        raise OCIError(f"{rootfs} already exists and is not empty")
    try:
        for d in (rootfs, *((os.path.join(bundle_dir, n) for n in ("upper", "work")) if overlay else ())):
            if not os.path.exists(d):
                os.mkdir(d, 0o755)
                made.append(d)
        os.chmod(rootfs, 0o755)
        if overlay:
            lowers = [extracted_layer(store, d, did) for d, did in zip(manifest["layers"], diff_ids)]
            if not lowers:  # overlay needs a lowerdir; an empty image gets an empty one
                lowers = [os.path.join(bundle_dir, "empty")]
                os.makedirs(lowers[0], exist_ok=True)
                made.append(lowers[0])
            mount_overlay(list(reversed(lowers)), os.path.join(bundle_dir, "upper"),
                          os.path.join(bundle_dir, "work"), rootfs)
        else:
            for d in manifest["layers"]:
                apply_layer(store.blob_path(d["digest"]), d.get("mediaType"), rootfs)
        spec = runtime_config(cfg, rootfs, args=args, terminal=terminal)
        tmp = os.path.join(bundle_dir, f".config.json.{uuid.uuid4().hex[:8]}")
        with open(tmp, "w") as f:
            json.dump(spec, f, indent=2)
        os.rename(tmp, os.path.join(bundle_dir, "config.json"))
    except BaseException:
        if _is_mountpoint(rootfs):
            _libc.umount2(os.fsencode(rootfs), _MNT_DETACH)
        for d in reversed(made):
            _rmtree_one_fs(d)
        raise
    return spec


def cleanup_bundle(bundle_dir) -> None:
    """Unmount an overlay rootfs (if mounted) and remove the bundle, never crossing a mount."""
    bundle_dir = os.path.abspath(os.fspath(bundle_dir))
    rootfs = os.path.join(bundle_dir, "rootfs")
    if os.path.isdir(rootfs) and _is_mountpoint(rootfs):
        if _libc.umount2(os.fsencode(rootfs), 0) != 0:
            e = ctypes.get_errno()
            if _libc.umount2(os.fsencode(rootfs), _MNT_DETACH) != 0:
                raise OCIError(f"unmounting {rootfs}: {os.strerror(e)}", errno=e)
    _rmtree_one_fs(bundle_dir)


def _mounts_below(path: str) -> list[str]:
    pre = os.path.realpath(path) + "/"
    with open("/proc/self/mountinfo") as f:
        return [m for m in (line.split()[4] for line in f) if m.startswith(pre)]


def _rmtree_one_fs(path: str) -> None:
    """rm -rf that refuses to run while anything is mounted below `path`."""
    if not os.path.lexists(path):
        return
    below = _mounts_below(path)
    if below:
        raise OCIError(f"refusing to remove {path}: {below[0]} is mounted below it")
    shutil.rmtree(path)
