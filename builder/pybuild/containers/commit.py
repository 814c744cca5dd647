"""`pybuild commit`: a container's upper dir -> one new layer on its image's layers.

Whiteouts (0:0 character devices) become `.wh.` entries and opaque dirs `.wh..wh..opq`
(image/layer.py). The image config gets the container's config changes and a history entry.
The upper dir must not change while it is read: a command running through `pybuild run`
holds the container's use lock (commit refuses), and the upper dir's metadata is compared
before and after, so a container run some other way (a runtime over an unpacked bundle)
that writes meanwhile fails the commit; the layer written meanwhile is removed again and
no tag changes.
"""
import contextlib
import os
import stat

from ocispec import image as _image
from ocispec import mediatypes as mt
from ocispec.errors import OCIError

from ..image.layer import LayerWriter, layer_from_overlay_upper
from ..image.store import normalize_ref
from . import records, working


def _fingerprint(path: str) -> list:
    """(name, mode, size, mtime_ns, ctime_ns) of everything below path: a write anywhere
    moves a ctime."""
    out = []
    todo = [""]
    while todo:
        rel = todo.pop()
        d = os.path.join(path, rel)
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                r = os.path.join(rel, e.name)
                out.append((r, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
                if stat.S_ISDIR(st.st_mode):
                    todo.append(r)
    st = os.stat(path)
    out.append(("", st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return sorted(out)


def commit(store, rec: dict, name: str, *, squash: bool = False, compression: str = "gzip",
           message: str | None = None, created_by: str | None = None) -> dict:
    """Write the image and tag it `name`; returns its manifest descriptor."""
    ref = normalize_ref(name)
    with records.using(store.root, rec, exclusive=True, what="commit"):
        manifest = store.manifest({"digest": rec["image_digest"], "mediaType": None})
        base_cfg = store.image_config(manifest)
        up = working.upper(rec)
        before = _fingerprint(up)
        changed = OCIError(f"commit {rec['name']}: its files changed while the layer was being "
                           "written (is something running in it?); stop it and commit again")
        try:
            if squash:
                root = working.mount(store, rec)
                with LayerWriter(store, compression) as lw:
                    lw.add_dir_tree(root)
                layer = lw.result
            else:
                layer = layer_from_overlay_upper(store, up, compression=compression)
        except (OCIError, OSError):  # e.g. a file that shrank or went while it was read
            if _fingerprint(up) != before:
                raise changed from None
            raise
        if _fingerprint(up) != before:
            _drop_blob(store, layer["digest"])
            raise changed
        by = created_by or ("pybuild commit" + (": " + "; ".join(rec.get("history") or [])
                                                if rec.get("history") else ""))
        hist = {"created": records.now(), "created_by": by[:4096]}
        if message:
            hist["comment"] = message
        if rec.get("author"):
            hist["author"] = rec["author"]
        layer_desc = _image.descriptor(layer["media_type"], layer["digest"], layer["size"])
        if squash:
            layers, diff_ids, history = [layer_desc], [layer["diff_id"]], [hist]
        else:
            layers = [dict(d) for d in manifest["layers"]] + [layer_desc]
            diff_ids = list(base_cfg["rootfs"]["diff_ids"]) + [layer["diff_id"]]
            history = list(base_cfg.get("history") or []) + [hist]
        plat = {k: base_cfg[k] for k in ("os", "architecture", "variant") if base_cfg.get(k)}
        cfg = _image.image_config(diff_ids=diff_ids, config=rec.get("config") or {},
                                  history=history, created=hist["created"],
                                  author=rec.get("author"), platform=plat or None)
        cblob = store.put_json(cfg, mt.IMAGE_CONFIG)
        man = _image.manifest(cblob.descriptor(mt.IMAGE_CONFIG), layers)
        mblob = store.put_json(man, mt.IMAGE_MANIFEST)
        desc = mblob.descriptor(mt.IMAGE_MANIFEST)
        store.tag(ref, desc)
        return desc


def _drop_blob(store, digest: str) -> None:
    """Remove a blob this commit wrote, unless an image already uses it."""
    with store.lock():
        if digest not in store.referenced_blobs():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(store.blob_path(digest))
