"""Layers + execution config -> image config, manifest and a tag in the store."""
from ocispec import image as _image
from ocispec import mediatypes as mt


def write_image(store, layers, *, config=None, history=None, created=None, author=None,
                platform=None, base=None, tag=None, annotations=None) -> dict:
    """Store an image and return its manifest descriptor (tagged when `tag` is given).

    layers: LayerWriter results ({"digest","size","diff_id","media_type"}), bottom first,
    added on top of `base` (a (manifest, image config) pair from the store) when given.
    """
    base_layers, base_diff_ids, base_history = [], [], []
    if base is not None:
        bm, bc = base
        base_layers = [dict(d) for d in bm["layers"]]
        base_diff_ids = list(bc["rootfs"]["diff_ids"])
        base_history = list(bc.get("history") or [])
    layer_descs = base_layers + [_image.descriptor(r["media_type"], r["digest"], r["size"]) for r in layers]
    diff_ids = base_diff_ids + [r["diff_id"] for r in layers]
    hist = base_history + list(history or [])
    cfg = _image.image_config(diff_ids=diff_ids, config=config, history=hist or None,
                              created=created, author=author, platform=platform)
    cblob = store.put_json(cfg, mt.IMAGE_CONFIG)
    man = _image.manifest(cblob.descriptor(mt.IMAGE_CONFIG), layer_descs, annotations=annotations)
    mblob = store.put_json(man, mt.IMAGE_MANIFEST)
    desc = mblob.descriptor(mt.IMAGE_MANIFEST)
    if tag:
        store.tag(tag, desc)
    return desc
