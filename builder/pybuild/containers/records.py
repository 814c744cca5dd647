"""Container records in the store.

Each container (made by `pybuild from`, or by `pybuild unpack` for an overlay bundle) has
ROOT/containers/<id>/container.json, written atomically:

    {"id": 64 hex, "name": "...", "image": "name:tag" (or the digest it was given),
     "image_digest": "sha256:..." (the image's manifest), "created": RFC 3339,
     "dir": where upper/, work/ and rootfs/ live (ROOT/containers/<id> or the bundle),
     "bundle": true for an unpacked bundle, "config": the image config's "config" with
     this container's changes, "history": [what ran or was copied], "author": ...}

The image a container came from must stay: each container is also recorded as a user of its
image in the store (Store.add_user("containers", id, ...)), which `rmi` refuses to remove
and `gc` keeps, with everything the image needs.
"""
import contextlib
import datetime
import fcntl
import json
import os
import re
import uuid

from ocispec.errors import OCIError

from ..image.store import private_dir, write_atomic

RECORD = "container.json"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")


def containers_dir(root: str) -> str:
    return os.path.join(root, "containers")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            rec = json.load(f)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("id") else None


def all_records(root: str) -> list[dict]:
    base = containers_dir(root)
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        rec = _read(os.path.join(base, n, RECORD))
        if rec is not None:
            out.append(rec)
    return sorted(out, key=lambda r: r.get("created", ""))


def save(root: str, rec: dict) -> None:
    d = private_dir(os.path.join(containers_dir(root), rec["id"]))
    write_atomic(os.path.join(d, RECORD), json.dumps(rec, indent=1).encode())


def record_dir(root: str, rec: dict) -> str:
    return os.path.join(containers_dir(root), rec["id"])


def new_record(store, *, name: str | None, default_name: str, image: str, image_digest: str,
               config: dict, author: str | None, dir_: str | None = None,
               bundle: bool = False) -> dict:
    """Reserve a name (unique in the store) and write the record; returns it."""
    if name is not None and not _NAME.match(name):
        raise OCIError(f"container name {name!r}: use letters, digits, '_', '.' and '-' "
                       "(starting with a letter or digit)")
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    with store.lock():
        taken = {r["name"] for r in all_records(store.root)}
        if name is not None and name in taken:
            raise OCIError(f"the container name {name!r} is already in use; "
                           "choose another with --name or remove it with `pybuild rm`")
        if name is None:
            base = re.sub(r"[^a-zA-Z0-9_.-]", "-", default_name).lstrip("-_.") or "container"
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base}-{n}"
        rec = {"id": cid, "name": name, "image": image, "image_digest": image_digest,
               "created": now(), "dir": dir_ or os.path.join(containers_dir(store.root), cid),
               "bundle": bundle, "config": config, "history": [], "author": author}
        save(store.root, rec)
    try:  # outside the index lock, which add_user takes itself
        store.add_user("containers", cid, image_digest)
    except BaseException:
        remove_record(store, rec)
        raise
    return rec


def find(root: str, ref: str) -> dict:
    """A container by name, id (or a unique id prefix of 3+), or bundle directory."""
    recs = all_records(root)
    for r in recs:
        if r["name"] == ref or r["id"] == ref:
            return r
    if os.sep in ref or os.path.isdir(ref):
        path = os.path.realpath(ref)
        for r in recs:
            if r.get("bundle") and os.path.realpath(r["dir"]) == path:
                return r
    if len(ref) >= 3 and all(c in "0123456789abcdef" for c in ref):
        hits = [r for r in recs if r["id"].startswith(ref)]
        if len(hits) == 1:
            return hits[0]
    raise OCIError(f"container {ref} does not exist in the store {root} "
                   "(`pybuild containers` lists them)")


def remove_record(store, rec: dict) -> None:
    """Remove the record's directory (a working container's whole directory: unmount first)
    and its use of the image."""
    from ..rootfs import rmtree_safe
    rmtree_safe(record_dir(store.root, rec))
    store.remove_user("containers", rec["id"])


@contextlib.contextmanager
def using(root: str, rec: dict, *, exclusive: bool, what: str):
    """Hold the container's use lock: shared while a command runs in it, exclusive for
    commit and rm, which must not happen under a running command."""
    path = os.path.join(record_dir(root, rec), "use.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OCIError(f"cannot {what} container {rec['name']}: a command is running in it "
                           "(`pybuild run`); wait for it to end") from None
        yield lambda: _upgrade(fd)
    finally:
        os.close(fd)


def _upgrade(fd: int) -> bool:
    """Shared -> exclusive if no one else holds the lock (for work only the last user may do)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
