"""A pybuild process's claim on its scratch files, and removing what dead processes left.

Every pybuild process that writes into the store opens a session: an id, a lock file
ROOT/build/<id>.lock that it holds (flock) for its whole life, and a scratch dir ROOT/build/<id>/
(overlay mounts of RUN and COPY, the runtime's state root). Its temp blobs (.tmp/<id>-*)
and half-extracted layers (layers/.tmp-<id>-*) carry the id. The kernel drops the flock when
the process dies, however it dies: a lock file that can be locked belongs to a dead process,
and prune() then deletes that session's containers (with the runtime recorded in its scratch
dir), unmounts what is mounted below its scratch dir and removes its files. A live session's
lock cannot be taken, so a concurrent build's files are never touched.

A build that runs containers also starts a guardian: a small process in its own session that
waits for the build to close a pipe. If the build dies without saying "done", the guardian
prunes the build at once, so its RUN container dies with it rather than at the next run.
"""
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid

from ocispec.errors import OCIError

from .. import mounts as _mounts
from ..image.store import private_dir, write_atomic

# Files without a session id come from before sessions: removed after this long.
LEGACY_GRACE = 3600
_RUNTIME_FILE = "runtime.json"
# Where a session's runtime state (state root) goes when one of them is a tmpfs: the
# runtime writes and removes a few files per container there (state dir, lock, fifo,
# state.json), which cost an ext4 journal handle each on the store's disk (runc's own
# default root is /run/runc). The dir is pybuild-<session id>, 0700.
_STATE_TMPFS = ("/run", "/dev/shm")
_STATE_PREFIX = "pybuild-"
_CONTAINER_ID = re.compile(r"[\w+.-]+")


def build_dir(root: str) -> str:
    return os.path.join(root, "build")


class Session:
    """This process's lock and scratch dir in a store (see the module doc)."""

    def __init__(self, root: str):
        self.root = root
        self.dir_parent = private_dir(build_dir(root))
        while True:
            sid = uuid.uuid4().hex[:12]
            # Lock under a temporary name first: prune never sees an unlocked live lock file.
            new = os.path.join(self.dir_parent, f".new-{sid}")
            fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.rename(new, os.path.join(self.dir_parent, f"{sid}.lock"))
            except FileNotFoundError:  # a prune took it for a dead one's: try another id
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            break
        self.id, self._fd = sid, fd
        self.scratch = os.path.join(self.dir_parent, sid)
        self._guardian = None
        self._runtimes: list[dict] = []
        self._tlock = threading.Lock()
        self._state_root: str | None = None

    def state_root(self) -> str:
        """The runtime state root of this session's RUN containers: a private dir on a tmpfs
        (/run or /dev/shm) when there is one, else in the scratch dir."""
        with self._tlock:
            if self._state_root is None:
                path = _tmpfs_state_path(self.id)
                if path is not None:
                    # named in the record before it exists: prune removes it if we die
                    self._record({"root": path})
                    try:
                        os.mkdir(path, 0o700)  # never follows a planted symlink: EEXIST
                    except OSError:
                        path = None
                self._state_root = path or os.path.join(self.scratch_dir(), "runtime")
            return self._state_root

    def _record(self, rec: dict) -> None:
        if rec not in self._runtimes:
            self._runtimes.append(rec)
            write_atomic(os.path.join(self.scratch_dir(), _RUNTIME_FILE),
                         json.dumps(self._runtimes).encode(), durable=False)

    def scratch_dir(self) -> str:
        if not os.path.isdir(self.scratch):
            os.mkdir(self.scratch, 0o700)
        return self.scratch

    def record_runtime(self, runtime: str, state_root: str) -> None:
        """Say which runtime and state root this session's containers use (for prune), and
        start the guardian that kills them if this process dies."""
        with self._tlock:
            self._record({"runtime": runtime, "root": state_root})
            if self._guardian is None:
                self._guardian = _start_guardian(self.root, self.id)

    def close(self) -> None:
        """Remove the scratch dir and the lock: the session ends cleanly. If something
        cannot be removed (a busy mount), the lock file stays, so that prune retries once
        this process is gone; the error that ended the build is the one reported."""
        if self._fd is None:
            return
        ok = False
        try:
            _clean(self.root, self.id)
            ok = True
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir_parent, f"{self.id}.lock"))
            with contextlib.suppress(OSError):
                os.rmdir(self.dir_parent)
        except (OSError, OCIError):
            pass
        finally:
            os.close(self._fd)
            self._fd = None
            g, self._guardian = self._guardian, None
            if g is not None:  # it exits on its own; no need to wait for its start-up
                with contextlib.suppress(OSError):
                    if ok:  # else it prunes what is left once we are gone
                        g.stdin.write(b"done")
                    g.stdin.close()


_GUARDIAN = """
import os, sys
got = b""
while True:
    try:
        b = os.read(0, 16)
    except InterruptedError:
        continue
    if not b:
        break
    got += b
if got != b"done":
    from pybuild.build.session import prune_session
    prune_session(sys.argv[1], sys.argv[2], wait=30)
"""


def _start_guardian(root: str, sid: str):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    # -S: sys.path comes whole through PYTHONPATH; the guardian starts in a few ms
    return subprocess.Popen([sys.executable, "-S", "-c", _GUARDIAN, root, sid], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True, cwd="/")


def _take_dead_lock(root: str, sid: str, wait: float = 0) -> tuple[bool, int | None]:
    """(dead, fd): whether session sid's process is gone, with its lock held while we clean."""
    path = os.path.join(build_dir(root), f"{sid}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True, None  # a live session makes its lock before any of its files
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True, fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return False, None
            time.sleep(0.05)


def _session_of(name: str, prefix: str = "") -> str | None:
    """The session id in a temp name made by a session (`<prefix><id>-...`), else None."""
    if not name.startswith(prefix):
        return None
    sid, sep, _ = name[len(prefix):].partition("-")
    return sid if sep and len(sid) == 12 and all(c in "0123456789abcdef" for c in sid) else None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _delete_containers(scratch: str) -> list[str]:
    try:
        with open(os.path.join(scratch, _RUNTIME_FILE)) as f:
            recs = json.load(f)
    except (OSError, ValueError):
        return []
    out = []
    for rec in recs if isinstance(recs, list) else []:
        runtime, state_root = rec.get("runtime"), rec.get("root")
        if not runtime or not state_root:
            continue
        for cid in _listdir(state_root):
            # runc's rule for a container id: other entries are the runtime's own (pyrunc
            # keeps compiled seccomp filters in @seccomp), and a delete of them would only
            # cost a runtime start
            if not _CONTAINER_ID.fullmatch(cid) or cid.startswith(".") or \
                    not os.path.isdir(os.path.join(state_root, cid)):
                continue
            try:  # kills the container's processes and removes its state
                subprocess.run([runtime, "--root", state_root, "delete", "--force", cid],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            out.append(f"container {cid}")
    return out


def _tmpfs_state_path(sid: str) -> str | None:
    """Session sid's state root on the first tmpfs of _STATE_TMPFS, or None."""
    try:
        tmpfs = _mounts.tmpfs_mount_points()
    except (OSError, ValueError):
        return None
    for parent in _STATE_TMPFS:
        if parent in tmpfs and os.access(parent, os.W_OK):
            return os.path.join(parent, _STATE_PREFIX + sid)
    return None


def _state_roots(scratch: str, sid: str) -> list[str]:
    """The tmpfs state roots session sid recorded (only those named as _tmpfs_state_path
    names them: the record cannot make prune remove anything else)."""
    try:
        with open(os.path.join(scratch, _RUNTIME_FILE)) as f:
            recs = json.load(f)
    except (OSError, ValueError):
        return []
    ours = {os.path.join(p, _STATE_PREFIX + sid) for p in _STATE_TMPFS}
    return [r["root"] for r in recs if isinstance(recs, list) and isinstance(r, dict)
            and r.get("root") in ours]


def _clean(root: str, sid: str) -> list[str]:
    """Remove everything session sid made (its lock must be ours or gone)."""
    from ..rootfs import rmtree_safe
    removed = []
    scratch = os.path.join(build_dir(root), sid)
    if os.path.isdir(scratch):
        removed += _delete_containers(scratch)
        for state in _state_roots(scratch, sid):
            rmtree_safe(state)
            removed.append(state)
        for mp in sorted(_mounts.mounts_under(scratch), key=len, reverse=True):
            _mounts.umount_detach(mp)
            removed.append(f"mount {mp}")
        rmtree_safe(scratch)
        removed.append(scratch)
    tmp = os.path.join(root, ".tmp")
    for name in _listdir(tmp):
        if _session_of(name) == sid:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(tmp, name))
            removed.append(os.path.join(tmp, name))
    layers = os.path.join(root, "layers")
    for name in _listdir(layers):
        if _session_of(name, ".tmp-") == sid:
            rmtree_safe(os.path.join(layers, name))
            removed.append(os.path.join(layers, name))
    return removed


def prune_session(root: str, sid: str, *, wait: float = 0) -> list[str]:
    """Clean session sid if its process is dead (waiting up to `wait` s for its lock)."""
    dead, fd = _take_dead_lock(root, sid, wait)
    if not dead:
        return []
    try:
        return _clean(root, sid)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(build_dir(root), f"{sid}.lock"))
        if fd is not None:
            os.close(fd)


def prune(root: str, *, own: str | None = None) -> list[str]:
    """Remove what dead pybuild processes left in the store at `root`; returns what went.

    Live sessions (their lock is held) and `own` are left alone. Temp files from before
    sessions existed are removed once they are LEGACY_GRACE seconds old.
    """
    from ..rootfs import rmtree_safe
    bdir, tmp, layers = build_dir(root), os.path.join(root, ".tmp"), os.path.join(root, "layers")
    sids, removed = set(), []
    for name in _listdir(bdir):
        if name.startswith(".new-"):  # a session that died while locking, or one starting now
            _drop_new(bdir, name)
            continue
        sid = name[:-5] if name.endswith(".lock") else name
        if _session_of(sid + "-"):
            sids.add(sid)
    sids |= {s for s in map(_session_of, _listdir(tmp)) if s}
    sids |= {s for s in (_session_of(n, ".tmp-") for n in _listdir(layers)) if s}
    sids.discard(own)
    for sid in sorted(sids):
        removed += prune_session(root, sid)
    now = time.time()

    def old(p):
        try:
            return now - os.lstat(p).st_mtime > LEGACY_GRACE
        except FileNotFoundError:
            return False
    for name in _listdir(tmp):
        p = os.path.join(tmp, name)
        if _session_of(name) is None and old(p) and os.path.isfile(p):
            os.unlink(p)
            removed.append(p)
    for name in _listdir(layers):
        p = os.path.join(layers, name)
        if name.startswith(".tmp-") and _session_of(name, ".tmp-") is None and old(p):
            rmtree_safe(p)
            removed.append(p)
    for name in _listdir(bdir):  # scratch dirs of builds from before sessions
        p = os.path.join(bdir, name)
        if not name.endswith(".lock") and not name.startswith(".") and \
                not os.path.exists(p + ".lock") and old(p) and os.path.isdir(p):
            for mp in sorted(_mounts.mounts_under(p), key=len, reverse=True):
                _mounts.umount_detach(mp)
            rmtree_safe(p)
            removed.append(p)
    return removed


def _drop_new(bdir: str, name: str) -> None:
    """Remove `.new-<id>` if no process holds it (one starting now renames it in a moment)."""
    path = os.path.join(bdir, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
