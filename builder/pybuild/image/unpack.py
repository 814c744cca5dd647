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
import uuid

from ocispec import digest as _digest
from ocispec.errors import OCIError

from .config_convert import runtime_config
from .extract import apply_layer, verify_layer_blob
from ..mounts import is_mountpoint as _is_mountpoint
from ..rootfs import rmtree_safe, spread_subdirs
from .store import private_dir, write_atomic

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


def layer_cache_dir(store) -> str:
    return os.path.join(store.root, "layers")


# layers/<diff_id hex> exists only once a blob was seen to decompress to exactly that
# diff_id (checked as it streamed into the dir). layers/.blobs/<blob hex> holds the diff_id a
# blob was checked to give: another image naming the same diff_id with another blob is
# checked before it may share the dir. Stores from before this (no layers/.v2) may hold a
# dir extracted from a blob that only claimed its diff_id: those dirs are dropped once.
_BLOBS = ".blobs"
_FORMAT = ".v2"


def _layers_dir(store) -> str:
    base = private_dir(layer_cache_dir(store))
    if getattr(store, "_layers_checked", False):
        return base
    spread_subdirs(base)  # each extracted layer in a roomy block group
    mark = os.path.join(base, _FORMAT)
    if not os.path.exists(mark):
        with store.lock():
            if not os.path.exists(mark):
                sid = store.session().id
                for name in os.listdir(base):
                    if len(name) == 64 and not name.startswith("."):
                        stale = os.path.join(base, f".tmp-{sid}-stale-{uuid.uuid4().hex[:8]}")
                        os.rename(os.path.join(base, name), stale)
                        rmtree_safe(stale)
                os.makedirs(os.path.join(base, _BLOBS), mode=0o700, exist_ok=True)
                write_atomic(mark, b"", base)
    store._layers_checked = True
    return base


def _checked_diff_id(store, base: str, blob: str) -> str | None:
    known = store.written_layers.get(blob)
    if known:
        return known
    try:
        with open(os.path.join(base, _BLOBS, _digest.parse(blob)[1])) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _remember(base: str, blob: str, diff_id: str) -> None:
    write_atomic(os.path.join(base, _BLOBS, _digest.parse(blob)[1]), diff_id.encode(),
                 os.path.join(base, _BLOBS), durable=False)  # lost in a crash: checked again


def extracted_layer(store, layer_desc: dict, diff_id: str) -> str:
    """The directory holding this layer extracted on its own (made once, atomically).

    The blob's digest and size and the diff_id are verified as it streams into a temp dir,
    which becomes the layer's dir only when all match: an image cannot put its files under
    another layer's diff_id.
    """
    hexd = _digest.parse(diff_id)[1]
    blob = layer_desc["digest"]
    what = f"unpacking layer {blob}"
    # 0700: extracted layers hold the image's setuid files and device nodes; like
    # /var/lib/docker, host users must not be able to reach them.
    base = _layers_dir(store)
    path = os.path.join(base, hexd)
    if os.path.isdir(path):
        if _checked_diff_id(store, base, blob) != diff_id:
            verify_layer_blob(store.blob_path(blob), digest=blob, size=layer_desc.get("size"),
                              diff_id=diff_id, what=what)
            _remember(base, blob, diff_id)
        return path
    tmp = os.path.join(base, f".tmp-{store.session().id}-{hexd[:12]}-{uuid.uuid4().hex[:8]}")
    os.mkdir(tmp, 0o755)
    try:
        apply_layer(store.blob_path(blob), layer_desc.get("mediaType"), tmp, whiteouts="overlay",
                    digest=blob, size=layer_desc.get("size"), diff_id=diff_id, what=what)
        _remember(base, blob, diff_id)
        try:
            os.rename(tmp, path)
        except OSError:  # another builder finished it first
            if not os.path.isdir(path):
                raise
            rmtree_safe(tmp)
    except BaseException:
        with contextlib.suppress(OSError, OCIError):  # else prune removes it later
            rmtree_safe(tmp)
        raise
    return path


def note_layer(store, blob: str, diff_id: str) -> None:
    """Note, in this process, that blob `blob` gives `diff_id`: a layer this process has
    just written, hashing the tar and the blob as they streamed out. extracted_layer()
    believes it at once, before remember_layer() has written it down (a background job):
    else the next step would decompress and hash the blob again (0.4 s for an apt layer)."""
    store.written_layers[blob] = diff_id


def remember_layer(store, blob: str, diff_id: str) -> None:
    """Note that blob `blob` was seen to give `diff_id` (a layer this process just wrote)."""
    _remember(_layers_dir(store), blob, diff_id)


def adopt_layer(store, layer: dict, diff_id: str, src_dir: str, *,
                remembered: bool = False) -> bool:
    """Make `src_dir`, the tree `layer` was just written from, in overlay form (whiteouts as
    0:0 devices, opaque xattrs: a RUN's upper dir), the layer's extracted dir, so the next
    step does not decompress and write again the bytes this one just compressed (docker's
    overlay2 keeps upper dirs the same way). False if it is there already or cannot be moved.
    remembered: remember_layer() was called for it already."""
    base = _layers_dir(store)
    path = os.path.join(base, _digest.parse(diff_id)[1])
    if os.path.isdir(path):
        return False
    try:
        os.rename(src_dir, path)  # same filesystem: the build's scratch is in the store
    except OSError:
        return False
    if not remembered:
        _remember(base, layer["digest"], diff_id)
    return True


def extract_image(store, desc: dict) -> None:
    """Extract an image's layers into the layer cache now, as `docker load` and a pull do:
    a loaded or imported base is then ready for the first build's COPY and RUN, which
    otherwise wait for it (seconds for a distribution base)."""
    man = store.manifest(desc)
    cfg = store.image_config(man)
    for layer, diff_id in zip(man["layers"], cfg["rootfs"]["diff_ids"]):
        extracted_layer(store, layer, diff_id)


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


def unpack(store, image_ref, bundle_dir, *, overlay: bool = False, args=None,
           terminal: bool = False, opts=None, record: bool = False, name: str | None = None) -> dict:
    """Make an OCI runtime bundle for an image (a store name or manifest descriptor).

    Returns the config.json written. With overlay=True, BUNDLE/rootfs is an overlay mount;
    call cleanup_bundle(BUNDLE) to unmount and remove it. opts (containers.options.RunOptions)
    are what the user sets at run time; bridge networking adds BUNDLE/network.json and the
    hooks that attach the container. record=True (overlay only) records the bundle as a
    container of the store (`pybuild containers`, `commit`, `rm`), under `name`.
    """
    if opts is not None:
        from ..containers import options as _options
        _options.check(opts)
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
        made.append(bundle_dir)
    if os.path.exists(rootfs) and (os.listdir(rootfs) or _is_mountpoint(rootfs)):
        raise OCIError(f"{rootfs} already exists and is not empty")
    # As umoci, even when the directory exists: the rootfs's setuid files stay out of reach
    # of host users.
    os.chmod(bundle_dir, 0o700)
    rec = None
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
            for d, did in zip(manifest["layers"], diff_ids):
                apply_layer(store.blob_path(d["digest"]), d.get("mediaType"), rootfs,
                            digest=d["digest"], size=d.get("size"), diff_id=did,
                            what=f"unpacking layer {d['digest']}")
        spec = runtime_config(cfg, rootfs, args=args, terminal=terminal)
        if opts is not None:
            _options.apply(spec, opts, rootfs)
            if opts.network == "bridge":
                from ..containers import network as _network
                _network.prepare(store.root, bundle_dir, spec, opts.ports)
                made.append(os.path.join(bundle_dir, _network.NETWORK_FILE))
        if record and overlay:
            from ..containers import records as _records
            from .store import normalize_ref
            ref = image_ref if not isinstance(image_ref, str) or image_ref.startswith("sha256:") \
                or "@" in image_ref else normalize_ref(image_ref)
            digest = store.resolve(ref)["digest"] if isinstance(ref, str) else ref["digest"]
            rec = _records.new_record(
                store, name=name, default_name=os.path.basename(bundle_dir.rstrip("/")),
                image=ref if isinstance(ref, str) else digest, image_digest=digest,
                config=dict(cfg.get("config") or {}), author=cfg.get("author"), dir_=bundle_dir,
                bundle=True)
        tmp = os.path.join(bundle_dir, f".config.json.{uuid.uuid4().hex[:8]}")
        with open(tmp, "w") as f:
            json.dump(spec, f, indent=2)
        os.rename(tmp, os.path.join(bundle_dir, "config.json"))
    except BaseException:
        if rec is not None:
            _records.remove_record(store, rec)
        if _is_mountpoint(rootfs):
            _libc.umount2(os.fsencode(rootfs), _MNT_DETACH)
        if rootfs not in made and os.path.isdir(rootfs) and not _is_mountpoint(rootfs):
            for name in os.listdir(rootfs):  # it was empty: what is there now is ours
                p = os.path.join(rootfs, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    rmtree_safe(p)
                else:
                    os.unlink(p)
        for d in reversed(made):
            if os.path.lexists(d):
                rmtree_safe(d)
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
    rmtree_safe(bundle_dir)
