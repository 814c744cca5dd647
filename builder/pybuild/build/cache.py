"""The layer cache: what a step produced, keyed by everything that decides its result.

key = sha256(parent chain key, instruction after expansion + flags, digests of its inputs).
An entry records the layer descriptor, diff_id and history entry; it only counts as a hit
while the layer blob is still in the store.
"""
import hashlib
import json
import os
import uuid


def chain_key(*parts) -> str:
    """A stable digest of JSON-able parts (the parent key is simply the first part)."""
    data = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()


class LayerCache:
    def __init__(self, store, enabled: bool = True):
        self.store = store
        self.enabled = enabled
        self.dir = os.path.join(store.root, "cache")
        os.makedirs(self.dir, exist_ok=True)

    def _path(self, key: str) -> str:
        return os.path.join(self.dir, key)

    def get(self, key: str) -> dict | None:
        if not self.enabled:
            return None
        try:
            with open(self._path(key)) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return None
        layer = entry.get("layer")
        if layer is not None and not self.store.has(layer["digest"]):
            return None
        return entry

    def put(self, key: str, entry: dict) -> None:
        """Record a result (also under --no-cache, so the next build can use it)."""
        tmp = f"{self._path(key)}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(entry, sort_keys=True))  # dumps: C encoder; dump: Python
        os.replace(tmp, self._path(key))


class ExplainLog:
    """Why a step missed: per step position (Dockerfile path, stage, step number) the
    inputs that made its key at the last build that had that step, under cache/explain/.
    The next build diffs its inputs against them."""

    def __init__(self, store, dockerfile: str):
        self.dir = os.path.join(store.root, "cache", "explain")
        os.makedirs(self.dir, exist_ok=True)
        self.dockerfile = os.path.abspath(dockerfile)

    def _path(self, stage: int, step: int) -> str:
        return os.path.join(self.dir, chain_key(self.dockerfile, stage, step)[:40])

    def load(self, stage: int, step: int) -> dict | None:
        try:
            with open(self._path(stage, step)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def save(self, stage: int, step: int, inputs: dict) -> None:
        path = self._path(stage, step)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(inputs, sort_keys=True))
        os.replace(tmp, path)


def explain(old: dict | None, new: dict) -> list[str]:
    """Reasons a step with inputs `new` missed, against the last build's `old`."""
    if old is None:
        return ["no earlier build had this step"]
    out = []
    if old.get("instruction") != new.get("instruction"):
        out.append(f"the instruction changed: was {old.get('instruction')!r}")
    oe, ne = old.get("env") or {}, new.get("env") or {}
    for k in sorted(set(oe) | set(ne)):
        if oe.get(k) != ne.get(k):
            was = "unset" if k not in oe else repr(oe[k])
            now = "unset" if k not in ne else repr(ne[k])
            out.append(f"build arg or ENV {k} changed: {was} -> {now}")
    of, nf = old.get("files") or {}, new.get("files") or {}
    changed = sorted(p for p in set(of) | set(nf) if of.get(p) != nf.get(p))
    if changed:
        shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        out.append(f"context files changed: {shown}")
    for k in sorted(set(old) | set(new)):
        if k in ("instruction", "env", "files", "parent") or old.get(k) == new.get(k):
            continue
        out.append(f"{k} changed")
    if old.get("parent") != new.get("parent"):
        out.append("the parent changed (an earlier step or the base image)")
    return out or ["same inputs: the cached result was pruned or --no-cache was given"]


# -- the build memo: a no-change rebuild without parsing, planning or importing the executor

_RACY_NS = 2_000_000_000  # as the context's stat cache: a change this recent may repeat unseen


_MEMO_MAX_ENTRIES = 50_000  # a bigger context costs its build two walks: no memo for it


def tree_fingerprint(root: str, extra=()) -> str | None:
    """A digest of the lstat identity (mode, owner, size, mtime, ctime, inode) of `root`,
    every path below it and the `extra` paths (or their absence). Any edit, create, delete,
    rename, chmod or touch changes it. None when something changed within the last 2 s, or
    the tree has more than _MEMO_MAX_ENTRIES paths."""
    import stat as _stat
    import time
    h = hashlib.sha256()
    limit = time.time_ns() - _RACY_NS

    def add(path, st):
        if st.st_mtime_ns > limit or st.st_ctime_ns > limit:
            return False
        h.update(f"{path}\0{st.st_mode:o} {st.st_uid}:{st.st_gid} {st.st_size} {st.st_mtime_ns} "
                 f"{st.st_ctime_ns} {st.st_ino}\n".encode("utf-8", "surrogateescape"))
        return True

    for p in extra:
        try:
            if not add(p, os.lstat(p)):
                return None
        except FileNotFoundError:
            h.update(f"{p}\0-\n".encode("utf-8", "surrogateescape"))
    if not add(root, os.lstat(root)):
        return None
    stack = [root]
    left = _MEMO_MAX_ENTRIES
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:  # order needs no sort: a directory whose entries change changes
                left -= 1
                if left < 0:
                    return None
                st = e.stat(follow_symlinks=False)
                if not add(e.path, st):
                    return None
                if _stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
    return h.hexdigest()


class BuildMemo:
    """The result of a whole build, kept in the layer cache beside the step entries (gc and
    fsck treat it as the image entry it is) under a key of the build's options, and valid
    while the context and Dockerfile are stat-for-stat the same and the base images resolve
    to the same digests. A hit tags the image and replays the step lines as cached."""

    def __init__(self, store, key_parts, context: str, dockerfile: str):
        self.store = store
        self.key = chain_key("build-memo", *key_parts)
        self.path = os.path.join(store.root, "cache", self.key)
        self.context, self.dockerfile = context, dockerfile
        self.extra = [dockerfile, dockerfile + ".dockerignore"]

    def fingerprint(self) -> str | None:
        try:
            return tree_fingerprint(self.context, self.extra)
        except OSError:
            return None

    def lookup(self) -> dict | None:
        """The memo entry if it still holds, else None."""
        try:
            with open(self.path) as f:
                entry = json.load(f)
            memo = entry["memo"]
            desc = entry["manifest"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not self.store.has(desc["digest"]) or memo.get("fp") != self.fingerprint():
            return None
        from ocispec.errors import OCIError
        from ..image.images import resolve_base
        for ref, digest in memo.get("bases", {}).items():
            try:
                if resolve_base(self.store, ref, "", pull="never")[0]["digest"] != digest:
                    return None
            except OCIError:
                return None
        return entry

    def record(self, fp: str, desc: dict, builder, steps: list) -> None:
        """After a build whose context had fingerprint `fp` before it started: kept only if
        it still has it now and the build read nothing the memo cannot check again."""
        from ..image.images import resolve_base, split_transport
        bases = {}
        for ps in builder._planned.values():
            for ref in ([ps.base] if ps.base_kind == "image" else []) + list(ps.images):
                if split_transport(ref)[0] or "$" in ref:
                    return  # a layout's content is not checked by name
                bases[ref] = resolve_base(self.store, ref, "", pull="never")[0]["digest"]
            for ins in ps.stage.instructions:
                if ins.kind == "ADD" and any("://" in s or s.startswith("git@") or "$" in s
                                             for s in ins.sources):
                    return  # a URL is fetched again on every build
        if self.fingerprint() != fp:
            return
        self.store_entry = {"manifest": desc, "history": {},
                            "memo": {"fp": fp, "bases": bases, "steps": steps}}
        LayerCache(self.store).put(self.key, self.store_entry)
