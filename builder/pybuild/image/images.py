"""Base images for FROM / COPY --from: the local store, `oci:DIR[:tag]`, `oci-archive:FILE[:tag]`.

Images from a layout are imported into the store first (pybuild.image.layout), so every later
step reads one place.
"""
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


def import_image(store, ref: str, what: str) -> dict:
    """Import `oci:DIR[:tag]` / `oci-archive:FILE[:tag]` into the store; its manifest descriptor."""
    from .layout import import_image as _import
    try:
        return _import(store, ref)
    except OCIError as e:
        raise OCIError(f"{what}: {e}") from None
    except OSError as e:
        raise OCIError(f"{what}: {e.filename or ref}: {e.strerror}") from None


PULL_POLICIES = ("missing", "always", "never")


def resolve_base(store, ref: str, what: str, *, pull: str = "never", registry=None,
                 platform: dict | None = None) -> tuple[dict, dict, dict]:
    """(manifest descriptor, manifest, config) of a base image by name or layout reference.

    A name the store lacks is pulled with pull="missing"; "always" pulls it every time (once
    per build: `registry` is the build's PullContext) and "never" only looks in the store."""
    transport, _, _ = split_transport(ref)
    if transport:
        desc = import_image(store, ref, what)
    else:
        desc = None
        if pull != "always":
            from ..registry.names import store_candidates
            for name in store_candidates(ref):
                try:
                    desc = store.resolve(name)
                    break
                except OCIError:
                    continue
        if desc is None and pull == "never":
            raise OCIError(f"{what}: image {ref!r} is not in the local store",
                           hint="pull it, build it, or use --pull=missing")
        if desc is None:
            desc = registry.pull(store, ref, platform, what)
    man = store.manifest(desc)
    cfg = store.image_config(man)
    if len(cfg["rootfs"]["diff_ids"]) != len(man["layers"]):
        raise OCIError(f"{what}: image {ref}: config has {len(cfg['rootfs']['diff_ids'])} "
                       f"diff_ids for {len(man['layers'])} layers")
    return desc, man, cfg


class PullContext:
    """A build's registry settings and the images it pulled already (each name once)."""

    def __init__(self, options=None, progress_mode: str = "plain", *,
                 signature_policy: str | None = None, registries_d: str | None = None):
        import threading
        self.options = options
        self.progress_mode = progress_mode
        # FROM pulls satisfy the signature policy as `pybuild pull` does (as buildah's)
        self.signature_policy = signature_policy
        self.registries_d = registries_d
        self._check = None
        self._done: dict = {}
        self._lock = threading.Lock()

    def pull(self, store, ref: str, platform, what: str) -> dict:
        from .. import recordclass
        from ..registry import client as _client
        from ..registry import progress as _progress
        from ..registry import transfer
        key = (ref, repr(platform))
        with self._lock:  # stages that FROM one image wait for one pull
            if key in self._done:
                return self._done[key]
            opts = recordclass.replace(self.options or _client.Options(), platform=platform)
            if self._check is None:
                from ..trust import hooks
                pol = hooks.load_policy(self.signature_policy)
                self._check = hooks.checker(pol, self.registries_d) or (lambda *a: None)
            pr = _progress.make(self.progress_mode, "pulling")
            try:
                _, desc = transfer.pull(store, ref, opts, pr, check=self._check)
            except OCIError as e:
                raise OCIError(f"{what}: {e}") from None
            finally:
                pr.close()
            self._done[key] = desc
            return desc


# -- the store's images as `pybuild images / inspect / history` show them -----------------

def lookup(store, text: str) -> tuple[dict, list[str]]:
    """(manifest descriptor, its tags) for a name[:tag], an image ID (config digest) or a
    manifest digest (full or a prefix of 4+ hex digits)."""
    from ocispec import image as _image
    from .gc import find_entries
    entries, _ = find_entries(store, text)
    if entries:
        digest = entries[0]["digest"]
        desc = {k: v for k, v in entries[0].items() if k != "annotations"}
    elif text.startswith("sha256:") and store.has(text):
        desc, digest = store.resolve(text), text
    else:
        raise OCIError(f"image {text} does not exist in the store {store.root}")
    tags = sorted(n for n in (_image.ref_name(m) for m in store._read_index()["manifests"]
                              if m["digest"] == digest) if n)
    return desc, tags


def split_name(ref: str) -> tuple[str, str]:
    """`host:5000/a/b:tag` -> ("host:5000/a/b", "tag")."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "<none>"
    return name, tag


def summary(store, desc: dict) -> dict:
    """What `images` shows of one image: id, digest, created, size (its blobs' bytes)."""
    man = store.manifest(desc)
    size = man["config"].get("size", 0) + sum(d.get("size", 0) for d in man["layers"])
    created = None
    try:
        created = store.image_config(man).get("created")
    except OCIError:
        pass
    return {"Id": man["config"]["digest"], "Digest": desc["digest"], "Created": created,
            "Size": size}


def list_rows(store) -> list[dict]:
    rows = []
    for name, desc in store.list_images():
        repo, tag = split_name(name)
        try:
            s = summary(store, desc)
        except (OCIError, OSError, ValueError) as e:  # `pybuild fsck` says more
            s = {"Id": "", "Digest": desc["digest"], "Created": None, "Size": 0,
                 "Error": str(e)}
        rows.append({"Repository": repo, "Tag": tag, **s})
    return rows


def inspect(store, text: str) -> dict:
    desc, tags = lookup(store, text)
    doc = store.read_json(desc["digest"])
    man = store.manifest(desc)
    cfg = store.image_config(man)
    return {"Id": man["config"]["digest"], "Digest": desc["digest"], "RepoTags": tags,
            "Created": cfg.get("created"), "Author": cfg.get("author"),
            "Architecture": cfg.get("architecture"), "Os": cfg.get("os"),
            "Variant": cfg.get("variant"),
            "Size": man["config"].get("size", 0) + sum(d.get("size", 0) for d in man["layers"]),
            "Index": doc if "manifests" in doc else None,
            "Manifest": man, "Config": cfg, "History": cfg.get("history") or []}


def history_rows(store, text: str) -> list[dict]:
    """Newest first, as docker: each history entry with the layer it made (empty_layer
    entries made none) and that layer's size."""
    desc, _ = lookup(store, text)
    man = store.manifest(desc)
    cfg = store.image_config(man)
    layers = list(man["layers"])
    hist = cfg.get("history") or [{} for _ in layers]
    rows, li = [], 0
    for h in hist:
        layer = None
        if not h.get("empty_layer") and li < len(layers):
            layer, li = layers[li], li + 1
        rows.append({"Created": h.get("created"), "CreatedBy": h.get("created_by", ""),
                     "Comment": h.get("comment", ""), "Size": layer.get("size", 0) if layer else 0,
                     "Layer": layer["digest"] if layer else None})
    for layer in layers[li:]:  # layers the history does not mention
        rows.append({"Created": None, "CreatedBy": "", "Comment": "", "Size": layer.get("size", 0),
                     "Layer": layer["digest"]})
    rows.reverse()
    if rows:
        rows[0]["Id"] = man["config"]["digest"]
    return rows
