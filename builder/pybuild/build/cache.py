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
            json.dump(entry, f, sort_keys=True)
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
            json.dump(inputs, f, sort_keys=True)
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
