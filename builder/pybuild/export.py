"""`--output`: oci:DIR[:tag], oci-archive:FILE[:tag], docker-archive:FILE[:tag].

Uses pybuild.layout's exporter when it has one; otherwise writes the formats here. Files
appear complete or not at all (temp name, then rename).
"""
import json
import os
import shutil
import tarfile
import uuid

from ocispec import image as _image
from ocispec import mediatypes as mt
from ocispec.errors import OCIError


def parse_output(spec: str) -> tuple[str, str, str | None]:
    for kind in ("oci-archive", "docker-archive", "oci"):
        if spec.startswith(kind + ":"):
            rest = spec[len(kind) + 1:]
            path, sep, tag = rest.rpartition(":")
            if sep and path and "/" not in tag:
                return kind, path, tag
            return kind, rest, None
    raise OCIError(f"--output {spec!r}: want oci:DIR[:tag], oci-archive:FILE[:tag] or "
                   f"docker-archive:FILE[:tag]")


def _blobs(store, desc):
    man = store.read_json(desc["digest"])
    return man, [man["config"]] + list(man["layers"])


def _ref(tag: str | None, tags) -> str | None:
    if tag:
        return tag
    if tags:
        t = tags[0]
        return t.rsplit(":", 1)[-1] if ":" in t.rsplit("/", 1)[-1] else "latest"
    return None


def write_oci_dir(store, desc, path: str, ref: str | None) -> None:
    man, blobs = _blobs(store, desc)
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
    for d in [desc] + blobs:
        dst = os.path.join(path, "blobs", "sha256", d["digest"].split(":", 1)[1])
        if not os.path.exists(dst):
            tmp = f"{dst}.{uuid.uuid4().hex}.tmp"
            shutil.copyfile(store.blob_path(d["digest"]), tmp)
            os.replace(tmp, dst)
    with open(os.path.join(path, mt.IMAGE_LAYOUT_FILE), "w") as f:
        json.dump({"imageLayoutVersion": mt.IMAGE_LAYOUT_VERSION}, f)
    entry = {k: v for k, v in desc.items() if k != "annotations"}
    if ref:
        entry["annotations"] = {_image.ANNOTATION_REF_NAME: ref}
    idx_path = os.path.join(path, mt.IMAGE_INDEX_FILE)
    ms = []
    if os.path.exists(idx_path):
        with open(idx_path, "rb") as f:
            ms = _image.parse_index(f.read(), source=idx_path)["manifests"]
    ms = [m for m in ms if not (ref and _image.ref_name(m) == ref) and
          not (not ref and m["digest"] == desc["digest"])]
    ms.append(entry)
    tmp = f"{idx_path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w") as f:
        json.dump(_image.index(ms), f)
    os.replace(tmp, idx_path)


def _write_docker_archive(store, desc, f, tags) -> None:
    man, _ = _blobs(store, desc)
    with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        def add(name, src=None, data=None):
            ti = tarfile.TarInfo(name)
            ti.mode = 0o644
            if data is not None:
                import io
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                ti.size = os.path.getsize(src)
                with open(src, "rb") as s:
                    tf.addfile(ti, s)
        cfg_name = man["config"]["digest"].split(":", 1)[1] + ".json"
        add(cfg_name, store.blob_path(man["config"]["digest"]))
        layers = []
        for layer in man["layers"]:
            # docker load accepts gzip-compressed layer tars under any name
            name = layer["digest"].split(":", 1)[1] + "/layer.tar"
            add(name, store.blob_path(layer["digest"]))
            layers.append(name)
        repo_tags = [t if ":" in t.rsplit("/", 1)[-1] else t + ":latest" for t in tags]
        add("manifest.json", data=json.dumps([{"Config": cfg_name, "RepoTags": repo_tags,
                                               "Layers": layers}]).encode())


def export(store, desc: dict, spec: str, tags=()) -> None:
    kind, path, tag = parse_output(spec)
    try:
        from . import layout as _layout
        fn = getattr(_layout, "export", None)
        if fn is not None:
            fn(store, desc, spec, tags=list(tags))
            return
    except ImportError:
        pass
    ref = _ref(tag, tags)
    if kind == "oci":
        write_oci_dir(store, desc, path, ref)
        return
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        if kind == "oci-archive":
            d = tmp + ".d"
            try:
                write_oci_dir(store, desc, d, ref)
                with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
                    for name in sorted(os.listdir(d)):
                        tf.add(os.path.join(d, name), name)
            finally:
                shutil.rmtree(d, ignore_errors=True)
        else:
            names = [tag] if tag and ":" in tag else list(tags) or ([f"pybuild:{tag}"] if tag else [])
            with open(tmp, "wb") as f:
                _write_docker_archive(store, desc, f, names)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
