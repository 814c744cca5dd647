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
