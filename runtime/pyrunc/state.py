"""Per-container state under --root: one directory per container.

<root>/<id>/state.json   what later commands need (written atomically)
<root>/<id>/exec.fifo    exists from create until start: init blocks on it
<root>/<id>/lock         flock'ed by every command that reads or changes the container;
                         create writes its own pid into it (see dead_create)

The status is never stored: it is derived from the init process (alive? same start
time? zombie?), the fifo and the freezer, as runc does, so it cannot go stale.

A create records what it is about to make before making it: state.json first holds a
"creating" record (bundle, the cgroups it will make, and who is creating), written
before the cgroups exist, and becomes the full state when init is ready. So a create
killed at any moment leaves either a directory without state.json (nothing made outside
it yet) or a record whose creator is gone: status "stopped", and delete undoes it.
"""

import fcntl
from . import oslite as os
import time

from ocispec import fastjson as json
from ocispec.errors import OCIError

SPEC_VERSION = "1.2.0"
# runc's rule, ^[\w+-\.]+$, without paying for the re module on every start.
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def check_id(container_id: str) -> None:
    if not container_id:
        raise OCIError("container id cannot be empty")
    if not _ID_CHARS.issuperset(container_id) or container_id in (".", ".."):
        raise OCIError(f"invalid container id {container_id!r}: use letters, digits, '_', '+', '-' and '.'")


def write_atomic(path: str, data: bytes, mode: int = 0o600, durable: bool = False) -> None:
    """Write to a temp name and rename: readers see the old file or the new, never half.

    Runtime state is not fsynced unless asked: it describes processes that a crash takes
    with it, and it normally lives on tmpfs (/run), where fsync is a no-op anyway.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    if not durable:
        # Over an existing file, swap and unlink the old content instead of renaming over it:
        # ext4 starts writing a file renamed over another at once (auto_da_alloc), and the
        # delete that unlinks it later waits for that write (0.3-3 ms here; runc writes its
        # state.json once). Readers still see the old file or the new one, never neither.
        from . import linux

        try:
            linux.rename_exchange(tmp, path)
        except OSError:  # no such file yet, or a filesystem without exchange
            pass
        else:
            os.unlink(tmp)
            return
    os.rename(tmp, path)


def proc_start_time(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks, state letter) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19]), fields[0].decode()


def alive(pid: int, start: int) -> bool:
    """Is pid still the process that had this start time (not recycled, not a zombie)?"""
    st = proc_start_time(pid) if pid > 0 else None
    return st is not None and st[0] == start and st[1] not in ("Z", "X")


def self_identity() -> list:
    """[pid, start time] of this process, for alive()."""
    pid = os.getpid()
    return [pid, proc_start_time(pid)[0]]


def now_rfc3339() -> str:
    t = time.time_ns()
    secs, nanos = divmod(t, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


class Container:
    """A container's state directory and what it says."""

    def __init__(self, root: str, container_id: str):
        self.root = root
        self.id = container_id
        self.dir = os.path.join(root, container_id)
        self.data: dict = {}
        self._lock_fd: int | None = None

    # -- paths
    @property
    def state_file(self) -> str:
        return os.path.join(self.dir, "state.json")

    @property
    def fifo(self) -> str:
        return os.path.join(self.dir, "exec.fifo")

    # -- loading
    @classmethod
    def load(cls, root: str, container_id: str, lock: bool = True) -> "Container":
        check_id(container_id)
        c = cls(root, container_id)
        if lock:
            c.lock()
        try:
            with open(c.state_file, "rb") as f:
                c.data = json.loads(f.read())
        except FileNotFoundError:
            c.unlock()
            raise OCIError(f"container {container_id!r} does not exist") from None
        except ValueError as e:
            c.unlock()
            raise OCIError(f"{c.state_file}: corrupt state: {e}") from None
        return c

    def lock(self, block: bool = True, creator: bool = False) -> bool:
        """Take the container's lock; False if block is false and it is held. creator:
        write our pid into the lock file, so that dead_create() can tell that the holder
        was a create."""
        try:
            fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise OCIError(f"container {self.id!r} does not exist") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if creator:
            try:
                os.write(fd, b"%d" % os.getpid())
            except OSError as e:
                os.close(fd)
                raise OCIError(f"{self.dir}: cannot write its lock file: {e.strerror}",
                               errno=e.errno) from None
        self._lock_fd = fd
        return True

    def dead_create(self) -> bool:
        """With the lock held and no state.json: did a create take this lock and go away
        before writing its record? (Empty: a create may be between mkdir and lock.)"""
        with open(os.path.join(self.dir, "lock"), "rb") as f:
            return bool(f.read(1))

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def save(self) -> None:
        write_atomic(self.state_file, json.dumps(self.data).encode())

    # -- status
    @property
    def pid(self) -> int:
        return int(self.data.get("pid") or 0)

    def init_alive(self) -> bool:
        return alive(self.pid, self.data.get("init_start"))

    @property
    def creating(self) -> bool:
        """A create's record: the container was never ready."""
        return "creating" in self.data

    def status(self) -> str:
        if self.creating:
            # Its create is still at work, or was killed: then the container is broken for
            # good, "stopped" as runc reports a container without a live init.
            return "creating" if alive(*self.data["creating"]) else "stopped"
        if not self.init_alive():
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        cg = self.data.get("cgroup")
        if cg:
            # the freezer file alone: `state` and `start` need no cgroup Manager (~1 ms)
            from .cgroups.files import freezer_state

            try:
                if freezer_state((cg.get("v1") or {}).get("freezer"), cg.get("v2")) == "frozen":
                    return "paused"
            except OSError:
                pass
        return "running"

    def spec_state(self, status: str | None = None) -> dict:
        """The runtime-spec state: what hooks get on stdin."""
        st = status or self.status()
        return {
            "ociVersion": SPEC_VERSION,
            "id": self.id,
            "status": st,
            "pid": self.pid if st != "stopped" else 0,
            "bundle": self.data["bundle"],
            "annotations": self.data.get("annotations") or {},
        }

    def runc_state(self, owner: bool = False) -> dict:
        """`pyrunc state` output, field for field as runc prints it. runc's `state` leaves
        "owner" empty and only `list` fills it in (owner=True)."""
        st = self.status()
        out = {
            "ociVersion": SPEC_VERSION,
            "id": self.id,
            "pid": self.pid if st != "stopped" else 0,
            "status": st,
            "bundle": self.data["bundle"],
            "rootfs": self.data["rootfs"],
            "created": self.data["created"],
        }
        if self.data.get("annotations"):
            out["annotations"] = self.data["annotations"]
        out["owner"] = self.owner() if owner else ""
        return out

    def owner(self) -> str:
        """The name of the user who owns the container's state dir (runc's list)."""
        try:
            uid = os.stat(self.dir).st_uid
        except OSError:
            return ""
        import pwd

        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return f"#{uid}"


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(root, n, "state.json")))
