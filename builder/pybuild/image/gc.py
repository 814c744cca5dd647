"""Freeing store space: what no image needs any more goes, never what someone uses.

Roots are the tags in index.json and the users recorded under ROOT/refs (working
containers). Everything an image reaches is kept: its manifest (or index and manifests),
config and layer blobs, and the extracted layers (ROOT/layers/<diff_id hex>) of its diff_ids.
The sweep removes the rest: blobs, extracted layers, the layers' blob->diff_id notes, and
the layer cache entries (ROOT/cache) naming a removed blob, so no later cache hit hands out
a layer that is gone.

It runs holding the store's use lock exclusively (Store.exclusive): no build, pull or
unpack is running, so no blob that only a live process knows about (a cached layer a
build is about to reuse, an image written but not tagged yet) can be taken. An extracted
layer that is a lowerdir of a mounted overlay is kept in any case.

rmi uses the same sweep limited to the image it untagged: "what only that image used".
"""
import contextlib
import json
import os
import stat
import time
import uuid
from ..recordclass import record, field

from ocispec import digest as _digest
from ocispec import image as _image
from ocispec.errors import OCIError

from .store import Store, StoreBusy, _listdir, normalize_ref


@record
class Freed:
    blobs: list = field(default_factory=list)    # [(digest, size)]
    layers: list = field(default_factory=list)   # [(diff_id, bytes on disk)]
    cache_entries: int = 0
    kept_in_use: list = field(default_factory=list)  # extracted layers kept: mounted

    @property
    def bytes(self) -> int:
        return sum(s for _, s in self.blobs) + sum(s for _, s in self.layers)


def _json_blob(store: Store, dg: str):
    try:
        doc = store.read_json(dg)
    except (OCIError, OSError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def closure(store: Store, manifest_digests) -> tuple[set, set]:
    """(blob digests, diff_ids) that the given manifests (or indexes) reach. Missing or
    unreadable documents are skipped: fsck reports them."""
    blobs, diff_ids = set(), set()
    todo = list(manifest_digests)
    while todo:
        dg = todo.pop()
        if dg in blobs:
            continue
        blobs.add(dg)
        doc = _json_blob(store, dg)
        if doc is None:
            continue
        for d in doc.get("manifests") or []:
            if isinstance(d, dict) and isinstance(d.get("digest"), str):
                todo.append(d["digest"])
        cfg = doc.get("config")
        if isinstance(cfg, dict) and isinstance(cfg.get("digest"), str):
            blobs.add(cfg["digest"])
            c = _json_blob(store, cfg["digest"])
            ids = ((c or {}).get("rootfs") or {}).get("diff_ids") if c else None
            diff_ids.update(i for i in ids or [] if isinstance(i, str))
        for d in doc.get("layers") or []:
            if isinstance(d, dict) and isinstance(d.get("digest"), str):
                blobs.add(d["digest"])
    return blobs, diff_ids


def root_manifests(store: Store, *, skip_tags=()) -> set:
    """Manifest digests of every tag (but skip_tags) and every recorded user."""
    out = {m["digest"] for m in store._read_index()["manifests"]
           if _image.ref_name(m) not in skip_tags}
    out |= {u["manifest"] for u in store.users() if isinstance(u.get("manifest"), str)}
    return out


def _all_blobs(store: Store) -> list[str]:
    out = []
    base = os.path.join(store.root, "blobs")
    for alg in sorted(os.listdir(base)):
        for name in os.listdir(os.path.join(base, alg)):
            dg = f"{alg}:{name}"
            if _digest.is_valid(dg):
                out.append(dg)
    return out


def layers_dir(store: Store) -> str:
    return os.path.join(store.root, "layers")


def extracted_layers(store: Store) -> list[str]:
    """diff_ids of the layers extracted in the store."""
    base = layers_dir(store)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return ["sha256:" + n for n in sorted(names) if len(n) == 64 and not n.startswith(".")]


def mounted_lowerdirs() -> set:
    """Every directory a mounted overlay of this mount namespace uses as a layer."""
    out = set()
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.readlines()
    except OSError:
        return out
    for line in lines:
        _, _, rest = line.partition(" - ")
        parts = rest.split(" ", 2)
        if len(parts) < 3 or parts[0] != "overlay":
            continue
        opts = parts[2].strip()
        # options are comma separated; a path's own ',' and ':' come escaped with '\'
        for opt in _split_unescaped(opts, ","):
            key, _, val = opt.partition("=")
            if key in ("lowerdir", "upperdir", "lowerdir+", "datadir+"):
                for p in _split_unescaped(val, ":"):
                    out.add(os.path.normpath(p.replace("\\\\", "\\")))
    return out


def _split_unescaped(text: str, sep: str) -> list[str]:
    out, cur, esc = [], [], False
    for ch in text:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def du(path: str) -> int:
    """Bytes the files below `path` take (lstat sizes; no mount crossing)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames + dirnames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def remove_extracted(store: Store, diff_id: str) -> int:
    """Remove one extracted layer: renamed out of the way first (a reader finds it whole or
    not at all; a crash leaves a session temp dir prune removes); returns its size."""
    from ..rootfs import rmtree_safe
    base = layers_dir(store)
    path = os.path.join(base, _digest.parse(diff_id)[1])
    size = du(path)
    gone = os.path.join(base, f".tmp-{store.session().id}-gc-{uuid.uuid4().hex[:8]}")
    os.rename(path, gone)
    rmtree_safe(gone)
    return size


def _drop_blob_notes(store: Store, removed_blobs: set, removed_diff_ids: set) -> None:
    """layers/.blobs/<blob hex> says which diff_id a blob was checked to give: drop notes of
    removed blobs and of removed extracted layers (a new extraction checks again)."""
    notes = os.path.join(layers_dir(store), ".blobs")
    for name in _listdir(notes):
        p = os.path.join(notes, name)
        try:
            with open(p) as f:
                did = f.read().strip()
        except OSError:
            continue
        if "sha256:" + name in removed_blobs or did in removed_diff_ids:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def cache_entries(store: Store) -> list[str]:
    """Names of the layer cache's entries: the regular files directly in ROOT/cache (its
    subdirectories, such as explain/ with the inputs of each step, are not entries), less
    those a cache.put is still writing (*.tmp)."""
    cdir = os.path.join(store.root, "cache")
    out = []
    for name in _listdir(cdir):
        if name.endswith(".tmp") or name.startswith("."):
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(os.path.join(cdir, name)).st_mode):
                out.append(name)
    return sorted(out)


def sweep_cache(store: Store, present) -> int:
    """Remove layer cache entries naming a blob for which present(digest) is false."""
    cdir = os.path.join(store.root, "cache")
    n = 0
    for name in cache_entries(store):
        p = os.path.join(cdir, name)
        try:
            with open(p) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            entry = None
        if isinstance(entry, dict):
            named = [d.get("digest") for d in (entry.get("layer"), entry.get("manifest"))
                     if isinstance(d, dict)]
            if all(isinstance(d, str) and present(d) for d in named):
                continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
        n += 1
    return n


def _sweep(store: Store, *, candidates: set | None, candidate_layers: set | None,
           grace_seconds: float) -> Freed:
    """Under the exclusive use lock and the index lock: remove candidates (all when None)
    that no root reaches."""
    freed = Freed()
    keep, keep_diffs = closure(store, root_manifests(store))
    now = time.time()
    for dg in sorted(candidates) if candidates is not None else _all_blobs(store):
        if dg in keep:
            continue
        p = store.blob_path(dg)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if grace_seconds > 0 and now - st.st_mtime < grace_seconds:
            continue
        os.unlink(p)
        freed.blobs.append((dg, st.st_size))
    in_use = mounted_lowerdirs()
    base = layers_dir(store)
    layers = extracted_layers(store)
    if candidate_layers is not None:
        layers = [d for d in layers if d in candidate_layers]
    for did in layers:
        if did in keep_diffs:
            continue
        if os.path.join(base, _digest.parse(did)[1]) in in_use:
            freed.kept_in_use.append(did)
            continue
        freed.layers.append((did, remove_extracted(store, did)))
    removed = {d for d, _ in freed.blobs}
    _drop_blob_notes(store, removed, {d for d, _ in freed.layers})
    if removed:
        freed.cache_entries = sweep_cache(store, store.has)
    return freed


def collect(store: Store, *, grace_seconds: float = 0, wait: bool = True, on_wait=None) -> Freed:
    """Remove every blob, extracted layer and cache entry that no tag or user reaches.
    Waits for the other pybuild processes on the store to finish (wait=False: StoreBusy)."""
    with store.exclusive(wait=wait, on_wait=on_wait), store.lock():
        return _sweep(store, candidates=None, candidate_layers=None, grace_seconds=grace_seconds)


# -- rmi ----------------------------------------------------------------------------------

@record
class Removal:
    untagged: list = field(default_factory=list)
    freed: Freed | None = None
    busy: bool = False       # data left for gc: other processes use the store
    still_used: bool = False  # another tag or a user still has the image


def _matches_id(m: dict, config_digest: str | None, text: str) -> bool:
    t = text.removeprefix("sha256:")
    return m["digest"].removeprefix("sha256:").startswith(t) or bool(
        config_digest and config_digest.removeprefix("sha256:").startswith(t))


def _config_digest(store: Store, manifest_digest: str) -> str | None:
    doc = _json_blob(store, manifest_digest)
    cfg = (doc or {}).get("config")
    return cfg.get("digest") if isinstance(cfg, dict) else None


def find_entries(store: Store, text: str) -> tuple[list[dict], bool]:
    """(index entries, by_id) that `text` names: a name[:tag] (first, as docker), else an
    image ID (config digest) or manifest digest, in full or as a prefix of 4+ hex digits."""
    ms = store._read_index()["manifests"]
    if "@" in text:
        name, _, dg = text.partition("@")
        return [m for m in ms if m["digest"] == dg and
                (_image.ref_name(m) or "").rsplit(":", 1)[0] == normalize_ref(name).rsplit(":", 1)[0]], False
    hexpart = text.removeprefix("sha256:")
    if not text.startswith("sha256:"):
        ref = normalize_ref(text)
        hits = [m for m in ms if _image.ref_name(m) == ref]
        if hits or len(hexpart) < 4 or any(c not in "0123456789abcdef" for c in hexpart):
            return hits, False
    hits = [m for m in ms if _matches_id(m, _config_digest(store, m["digest"]), text)]
    if len({m["digest"] for m in hits}) > 1:
        raise OCIError(f"image ID {text!r} is ambiguous: it names {len({m['digest'] for m in hits})} "
                       "images", hint="give more digits")
    return hits, True


def remove_image(store: Store, text: str, *, force: bool = False) -> Removal:
    """Untag `text`; when no other tag and no user has the image then, delete what only it
    used. An image a user (container) has is refused unless force (then it is untagged and
    its data stays until the user is gone). An image ID with several tags needs force."""
    out = Removal()
    with store.lock():
        entries, by_id = find_entries(store, text)
        if not entries:
            raise OCIError(f"image {text} does not exist in the store {store.root}")
        names = sorted(filter(None, map(_image.ref_name, entries)))
        if len(names) > 1 and by_id and not force:
            raise OCIError(f"image {text} has {len(names)} tags ({', '.join(names)})",
                           hint="remove them by name, or all at once with --force")
        digests = {e["digest"] for e in entries}
        users = [u for u in store.users() if u.get("manifest") in digests]
        if users and not force:
            who = ", ".join(f"{u['kind'].rstrip('s')} {u['id']}" for u in users[:3])
            raise OCIError(f"image {text} is in use by {who}",
                           hint="remove the container first, or untag it anyway with --force "
                                "(its data stays while the container exists)")
        drop = {_image.ref_name(e) for e in entries}
        store._write_index([m for m in store._read_index()["manifests"]
                            if _image.ref_name(m) not in drop])
        out.untagged = names
        if digests & root_manifests(store):
            out.still_used = True
            return out
    cand, cand_diffs = closure(store, digests)
    try:
        with store.exclusive(wait=False), store.lock():
            out.freed = _sweep(store, candidates=cand, candidate_layers=cand_diffs,
                               grace_seconds=-1)
    except StoreBusy:
        out.busy = True
    return out
