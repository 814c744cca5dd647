"""Base images for FROM / COPY --from: the local store, `oci:DIR[:tag]`, `oci-archive:FILE[:tag]`.

Images from a layout are imported into the store first (blobs copied and verified), so
every later step reads one place.
"""
import os
import tarfile
import tempfile

from ocispec import image as _image
from ocispec import mediatypes as mt
from ocispec.errors import OCIError


def split_transport(ref: str) -> tuple[str, str, str | None]:
    """`oci:DIR:tag` -> ("oci", DIR, tag); a plain name -> ("", name, None)."""
    for t in ("oci-archive", "oci"):
        if ref.startswith(t + ":"):
            rest = ref[len(t) + 1:]
            path, sep, tag = rest.rpartition(":")
            if sep and "/" not in tag and path:
                return t, path, tag
            return t, rest, None
    return "", ref, None


def _pick(index: dict, tag: str | None, what: str) -> dict:
    ms = index.get("manifests") or []
    if tag is not None:
        for m in ms:
            ref = _image.ref_name(m)
            if ref == tag or (ref and ref.rsplit(":", 1)[-1] == tag and ":" in ref):
                return m
        raise OCIError(f"{what}: no image tagged {tag!r} in the layout")
    if len(ms) != 1:
        raise OCIError(f"{what}: the layout holds {len(ms)} images: name one with :TAG")
    return ms[0]


def _import_dir(store, layout: str, tag: str | None, what: str) -> dict:
    try:
        with open(os.path.join(layout, mt.IMAGE_INDEX_FILE), "rb") as f:
            index = _image.parse_index(f.read(), source=f"{layout}/index.json")
    except FileNotFoundError:
        raise OCIError(f"{what}: {layout} is not an OCI image layout (no index.json)") from None
    desc = _pick(index, tag, what)

    def copy_blob(d):
        if store.has(d["digest"]):
            return
        algo, hexd = d["digest"].split(":", 1)
        with open(os.path.join(layout, "blobs", algo, hexd), "rb") as f:
            store.put_blob_stream(f, d.get("mediaType"), expected_digest=d["digest"])

    copy_blob(desc)
    doc = store.read_json(desc["digest"])
    if doc.get("mediaType") in mt.INDEX_TYPES or "manifests" in doc:
        from .store import select_platform
        desc = select_platform(doc["manifests"])
        copy_blob(desc)
        doc = store.read_json(desc["digest"])
    man = _image.parse_manifest(doc)
    copy_blob(man["config"])
    for layer in man["layers"]:
        copy_blob(layer)
    return {k: v for k, v in desc.items() if k != "annotations"}


def import_image(store, ref: str, what: str) -> dict:
    """Import `oci:DIR[:tag]` / `oci-archive:FILE[:tag]` into the store; its manifest descriptor."""
    transport, path, tag = split_transport(ref)
    try:  # the layout module (h/ocispec) when it provides an importer
        from . import layout as _layout
        fn = getattr(_layout, "import_image", None)
        if fn is not None:
            return fn(store, ref)
    except ImportError:
        pass
    if transport == "oci":
        return _import_dir(store, path, tag, what)
    if not os.path.isfile(path):
        raise OCIError(f"{what}: {path} does not exist")
    with tempfile.TemporaryDirectory(dir=store.tmp_dir, prefix="import-") as d:
        with tarfile.open(path) as tf:
            tf.extractall(d, filter="data")
        return _import_dir(store, d, tag, what)


def resolve_base(store, ref: str, what: str) -> tuple[dict, dict, dict]:
    """(manifest descriptor, manifest, config) of a base image by name or layout reference."""
    transport, _, _ = split_transport(ref)
    if transport:
        desc = import_image(store, ref, what)
    else:
        try:
            desc = store.resolve(ref)
        except OCIError:
            raise OCIError(f"{what}: image {ref!r} is not in the local store and registry pulls "
                           f"are not supported yet", hint="use oci:DIR:tag or build it first") from None
    man = store.manifest(desc)
    cfg = store.image_config(man)
    if len(cfg["rootfs"]["diff_ids"]) != len(man["layers"]):
        raise OCIError(f"{what}: image {ref}: config has {len(cfg['rootfs']['diff_ids'])} "
                       f"diff_ids for {len(man['layers'])} layers")
    return desc, man, cfg
