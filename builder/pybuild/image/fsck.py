"""Checking a store: every blob re-hashed, every reference resolved, every extracted layer
compared with the layer blob that gives its diff_id.

An extracted layer (ROOT/layers/<diff_id hex>) cannot be re-tarred into its diff_id (tar
bytes are not a function of a tree), so it is checked against the blob: the blob is streamed
once, its digest and uncompressed digest verified (that is the diff_id), and every entry
compared with the tree as extraction made it (type, mode, owner, size and content, link
target, device numbers, whiteouts as overlayfs marks); anything in the tree the layer does
not explain is reported too.

--repair drops what is broken: a corrupt blob, the tags of images that lack a blob, a
tampered or uncheckable extracted layer, cache entries naming a missing blob. The next
build, pull or load brings back what is needed. A user record (a container) naming a missing
image is reported, never dropped: its owner removes it.
"""
import contextlib
import hashlib
import json
import os
import stat
import tarfile
from ..recordclass import record, field

from ocispec import digest as _digest
from ocispec import image as _image
from ocispec.errors import OCIError

from . import gc as _gc
from .store import Store


@record
class Report:
    problems: list = field(default_factory=list)
    repaired: list = field(default_factory=list)
    blobs: int = 0
    images: int = 0
    layers: int = 0

    def add(self, msg: str) -> None:
        self.problems.append(msg)


def _hash_file(path: str) -> str:
    return _digest.hash_file(path)[0]


def check_blobs(store: Store, rep: Report) -> set:
    """Digests whose blob content is wrong (and stray names in the blob dirs)."""
    bad = set()
    base = os.path.join(store.root, "blobs")
    for alg in sorted(os.listdir(base)):
        d = os.path.join(base, alg)
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            dg = f"{alg}:{name}"
            if not _digest.is_valid(dg) or not os.path.isfile(p) or os.path.islink(p):
                rep.add(f"blobs/{alg}/{name}: not a blob (stray file)")
                bad.add(dg)
                continue
            rep.blobs += 1
            try:
                got = _digest.hash_file(p, alg)[0]
            except OSError as e:
                rep.add(f"blob {dg}: unreadable: {e.strerror}")
                bad.add(dg)
                continue
            if got != dg:
                rep.add(f"blob {dg}: content hashes to {got} (corrupt)")
                bad.add(dg)
    return bad


def _image_problem(store: Store, digest: str, bad: set) -> str | None:
    """Why the image at manifest `digest` is incomplete, or None."""
    todo = [digest]
    while todo:
        dg = todo.pop()
        if dg in bad or not store.has(dg):
            return f"{'corrupt' if dg in bad else 'missing'} manifest {dg}"
        try:
            doc = json.loads(store.read_blob(dg, verify=False))
        except (ValueError, UnicodeDecodeError, OSError):
            return f"manifest {dg} is not JSON"
        if not isinstance(doc, dict):
            return f"manifest {dg} is not an object"
        if "manifests" in doc:
            try:
                todo += [m["digest"] for m in _image.parse_index(doc)["manifests"]]
            except OCIError as e:
                return str(e)
            continue
        try:
            man = _image.parse_manifest(doc, source=f"manifest {dg}")
        except OCIError as e:
            return str(e)
        cdg = man["config"]["digest"]
        if cdg in bad or not store.has(cdg):
            return f"{'corrupt' if cdg in bad else 'missing'} config {cdg}"
        try:
            cfg = _image.parse_config(store.read_blob(cdg, verify=False), source=f"config {cdg}")
        except OCIError as e:
            return str(e)
        for layer in man["layers"]:
            if layer["digest"] in bad or not store.has(layer["digest"]):
                return f"{'corrupt' if layer['digest'] in bad else 'missing'} layer {layer['digest']}"
        n = len(cfg["rootfs"]["diff_ids"])
        if n != len(man["layers"]):
            return f"config {cdg} has {n} diff_ids for {len(man['layers'])} layers"
    return None


def _layer_sources(store: Store) -> dict:
    """diff_id -> [layer descriptor] from every manifest in the store, and the
    blob->diff_id notes extraction left."""
    out: dict = {}
    for dg in _gc._all_blobs(store):
        doc = _gc._json_blob(store, dg)
        if not doc or not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
            continue
        cfg = _gc._json_blob(store, doc["config"].get("digest", ""))
        ids = ((cfg or {}).get("rootfs") or {}).get("diff_ids") or []
        if len(ids) != len(doc["layers"]):
            continue
        for layer, did in zip(doc["layers"], ids):
            if isinstance(layer, dict) and isinstance(did, str):
                out.setdefault(did, []).append(layer)
    notes = os.path.join(_gc.layers_dir(store), ".blobs")
    for name in _gc._listdir(notes):
        with contextlib.suppress(OSError):
            with open(os.path.join(notes, name)) as f:
                did = f.read().strip()
            out.setdefault(did, []).append({"digest": "sha256:" + name})
    return out


# -- an extracted layer against its blob ----------------------------------------------------

_WHITEOUT = "whiteout"


class _Expected:
    __slots__ = ("kind", "mode", "uid", "gid", "size", "sha", "link", "rdev")

    def __init__(self, kind, mode=0, uid=0, gid=0, size=0, sha=None, link=None, rdev=0):
        self.kind, self.mode, self.uid, self.gid = kind, mode, uid, gid
        self.size, self.sha, self.link, self.rdev = size, sha, link, rdev


def _expected_tree(blob_path: str, desc: dict, diff_id: str, what: str):
    """({path: _Expected}, opaque dirs) from streaming the blob once, digests checked."""
    from .extract import _Tap, _clean, _stream_errors, open_decompressed
    from .layer import WHITEOUT_OPAQUE, WHITEOUT_PREFIX
    tree: dict = {}
    opaque: set = set()
    with open(blob_path, "rb") as f:
        raw = _Tap(f, hashed=True, limit=desc.get("size"), what=what)
        plain = _Tap(open_decompressed(raw), hashed=True, what=what)
        try:
            with tarfile.open(fileobj=plain, mode="r|") as tf:
                for m in tf:
                    name = _clean(m.name)
                    if not name:
                        continue
                    head, _, base = name.rpartition("/")
                    if base == WHITEOUT_OPAQUE:
                        opaque.add(head)
                        continue
                    if base.startswith(WHITEOUT_PREFIX):
                        target = (f"{head}/" if head else "") + base[len(WHITEOUT_PREFIX):]
                        if target not in tree:  # extraction skips whiteouts of its own entries
                            _put(tree, target, _Expected(_WHITEOUT))
                        continue
                    mode = m.mode & 0o7777
                    if m.isreg():
                        h = hashlib.sha256()
                        src = tf.extractfile(m)
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            h.update(chunk)
                        e = _Expected("file", mode, m.uid, m.gid, m.size, h.hexdigest())
                    elif m.isdir():
                        e = _Expected("dir", mode, m.uid, m.gid)
                    elif m.issym():
                        e = _Expected("symlink", 0, m.uid, m.gid, link=m.linkname)
                    elif m.islnk():
                        e = _Expected("hardlink", link=_clean(m.linkname))
                    elif m.ischr() or m.isblk() or m.isfifo():
                        e = _Expected("chr" if m.ischr() else "blk" if m.isblk() else "fifo",
                                      mode, m.uid, m.gid,
                                      rdev=0 if m.isfifo() else os.makedev(m.devmajor, m.devminor))
                    else:
                        continue
                    _put(tree, name, e)
            plain.drain()
            raw.drain()
        except _stream_errors() as e:
            raise OCIError(f"{what}: not a valid tar stream: {e}") from None
    if raw.h.digest != desc["digest"]:
        raise OCIError(f"{what}: blob content hashes to {raw.h.digest}")
    if plain.h.digest != diff_id:
        raise OCIError(f"{what}: blob {desc['digest']} gives {plain.h.digest}, not this diff_id")
    return tree, opaque


def _put(tree: dict, name: str, e: _Expected) -> None:
    old = tree.get(name)
    if old is not None and old.kind == "dir" and e.kind != "dir":
        pre = name + "/"
        for k in [k for k in tree if k.startswith(pre)]:
            del tree[k]
    tree[name] = e


def _file_sha(path: str) -> str:
    return _hash_file(path).split(":", 1)[1]


def compare_layer(path: str, tree: dict, opaque: set) -> list[str]:
    """What differs between the extracted dir and the layer's entries (first few)."""
    same_owner = os.geteuid() == 0
    diffs = []
    parents = {"/".join(k.split("/")[:i]) for k in list(tree) + list(opaque)
               for i in range(1, k.count("/") + 1)}
    seen = set()
    for dirpath, dirnames, filenames in os.walk(path):
        rel_dir = os.path.relpath(dirpath, path)
        rel_dir = "" if rel_dir == "." else rel_dir
        for n in dirnames + filenames:
            rel = f"{rel_dir}/{n}" if rel_dir else n
            seen.add(rel)
            e = tree.get(rel)
            if e is None:
                if not (rel in parents and n in dirnames and not os.path.islink(os.path.join(dirpath, n))):
                    diffs.append(f"{rel}: not in the layer")
                continue
            why = _differs(os.path.join(path, rel), e, same_owner, path)
            if why:
                diffs.append(f"{rel}: {why}")
        if len(diffs) > 5:
            break
    for rel in tree:
        if rel not in seen and len(diffs) <= 5:
            diffs.append(f"{rel}: missing")
    for d in opaque:
        try:
            v = os.getxattr(os.path.join(path, d) if d else path, "trusted.overlay.opaque",
                            follow_symlinks=False)
        except OSError:
            v = None
        if v != b"y":
            diffs.append(f"{d or '/'}: opaque mark missing")
    return diffs


def _differs(p: str, e: _Expected, same_owner: bool, root: str) -> str | None:
    st = os.lstat(p)
    fmt = stat.S_IFMT(st.st_mode)
    if e.kind == _WHITEOUT:
        return None if fmt == stat.S_IFCHR and st.st_rdev == 0 else "whiteout mark missing"
    if e.kind == "hardlink":
        try:
            t = os.lstat(os.path.join(root, e.link))
        except OSError:
            return f"hard link target {e.link} missing"
        return None if (t.st_ino, t.st_dev) == (st.st_ino, st.st_dev) else f"not a hard link to {e.link}"
    want = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
            "chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO}[e.kind]
    if fmt != want:
        return f"type differs (want {e.kind})"
    if same_owner and (st.st_uid, st.st_gid) != (e.uid, e.gid):
        return f"owner {st.st_uid}:{st.st_gid}, layer says {e.uid}:{e.gid}"
    if e.kind == "symlink":
        return None if os.readlink(p) == e.link else "link target differs"
    if stat.S_IMODE(st.st_mode) != e.mode:
        return f"mode {stat.S_IMODE(st.st_mode):o}, layer says {e.mode:o}"
    if e.kind == "file":
        if st.st_size != e.size:
            return f"size {st.st_size}, layer says {e.size}"
        if _file_sha(p) != e.sha:
            return "content differs"
    if e.kind in ("chr", "blk") and st.st_rdev != e.rdev:
        return "device number differs"
    return None


def check_extracted(store: Store, rep: Report, bad: set, sources: dict) -> list[str]:
    """diff_ids of extracted layers that are wrong or cannot be checked."""
    broken = []
    base = _gc.layers_dir(store)
    for did in _gc.extracted_layers(store):
        rep.layers += 1
        path = os.path.join(base, _digest.parse(did)[1])
        cands = [d for d in sources.get(did, []) if d["digest"] not in bad and store.has(d["digest"])]
        if not cands:
            rep.add(f"extracted layer {did}: no intact blob in the store gives this diff_id "
                    "(cannot be checked)")
            broken.append(did)
            continue
        desc = cands[0]
        what = f"extracted layer {did}"
        try:
            tree, opaque = _expected_tree(store.blob_path(desc["digest"]), desc, did, what)
        except OCIError as e:
            rep.add(str(e))
            broken.append(did)
            continue
        diffs = compare_layer(path, tree, opaque)
        if diffs:
            rep.add(f"{what}: differs from blob {desc['digest']}: " + "; ".join(diffs[:5]))
            broken.append(did)
    return broken


def fsck(store: Store, *, repair: bool = False, on_wait=None) -> Report:
    """Check the store; with repair, drop what is broken (holding the store exclusively)."""
    rep = Report()
    ctx = store.exclusive(wait=True, on_wait=on_wait) if repair else contextlib.nullcontext()
    with ctx:
        bad = check_blobs(store, rep)
        broken_tags, broken_images = [], set()
        for m in store._read_index()["manifests"]:
            rep.images += 1
            name = _image.ref_name(m) or m["digest"]
            why = _image_problem(store, m["digest"], bad)
            if why:
                rep.add(f"image {name}: {why}")
                broken_tags.append(name)
                broken_images.add(m["digest"])
        for u in store.users():
            dg = u.get("manifest")
            why = _image_problem(store, dg, bad) if isinstance(dg, str) else "no manifest digest"
            if why:
                rep.add(f"{u['kind']}/{u['id']} uses image {u.get('image') or dg}: {why} "
                        "(not repaired: remove the container)")
        sources = _layer_sources(store)
        broken_layers = check_extracted(store, rep, bad, sources)
        stale = _stale_cache(store, bad)
        for k in stale:
            rep.add(f"cache entry {k[:12]}: names a missing or broken blob or image")
        if repair:
            _repair(store, rep, bad, broken_tags, broken_images, broken_layers)
    return rep


def _stale_cache(store: Store, bad: set) -> list[str]:
    """Layer cache entries a build must not trust: a layer blob that is missing or corrupt,
    or an image (a build's final result) that is incomplete."""
    out = []
    cdir = os.path.join(store.root, "cache")
    for name in _gc.cache_entries(store):
        try:
            with open(os.path.join(cdir, name)) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            out.append(name)
            continue
        if not isinstance(entry, dict):
            out.append(name)
            continue
        layer, man = entry.get("layer"), entry.get("manifest")
        if isinstance(layer, dict) and (layer.get("digest") in bad or not store.has(layer.get("digest", ""))):
            out.append(name)
        elif isinstance(man, dict) and _image_problem(store, man.get("digest", ""), bad):
            out.append(name)
    return out


def _repair(store: Store, rep: Report, bad: set, broken_tags, broken_images, broken_layers) -> None:
    with store.lock():
        for dg in sorted(bad):
            alg, _, hexd = dg.partition(":")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(store.root, "blobs", alg, hexd))
            rep.repaired.append(f"removed blob {dg}")
        if broken_tags:
            drop = set(broken_tags)
            store._write_index([m for m in store._read_index()["manifests"]
                                if (_image.ref_name(m) or m["digest"]) not in drop])
            rep.repaired += [f"untagged {t}" for t in broken_tags]
        in_use = _gc.mounted_lowerdirs()
        base = _gc.layers_dir(store)
        gone = set()
        for did in broken_layers:
            if os.path.join(base, _digest.parse(did)[1]) in in_use:
                rep.repaired.append(f"kept extracted layer {did}: a mounted overlay uses it")
                continue
            _gc.remove_extracted(store, did)
            gone.add(did)
            rep.repaired.append(f"removed extracted layer {did}")
        _gc._drop_blob_notes(store, bad, gone)
        n = len(_stale_cache(store, set()))
        for name in _stale_cache(store, set()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(store.root, "cache", name))
        if n:
            rep.repaired.append(f"removed {n} cache entries")
        if broken_images:  # what only the dropped images used goes, as rmi would
            cand, cand_diffs = _gc.closure(store, broken_images)
            freed = _gc._sweep(store, candidates=cand, candidate_layers=cand_diffs, grace_seconds=-1)
            if freed.blobs or freed.layers:
                rep.repaired.append(f"removed {len(freed.blobs)} blobs and {len(freed.layers)} "
                                    "extracted layers only the dropped images used")
