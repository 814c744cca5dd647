"""The parent/child protocol of `create` and `exec`: who sends what, when (runc's sync.go).

The runtime process (the parent) talks to the processes it forks over a SOCK_SEQPACKET
socketpair, one small JSON object per message, {"type": NAME, ...fields}.

create (process.start_init):

  parent (pyrunc create)            stage1 (then init, its child)
                                    [user namespace: unshare it]
        <-- IDMAP {pid}             a new user namespace wants uid_map/gid_map of pid
  [write the maps]
        --> IDMAP_DONE
  [cgroups made, stage1 in them]    [join the namespaces given by path, unshare the rest]
        --> JOINED                  stage1 may fork init: it is born in the cgroups
        <-- PID {pid}               init's host pid (stage1 exits)
  [resources, netDevices]
        --> CONTINUE {pid, cgroup}  init goes on: mounts, devices

  With no user, time or by-path namespace (process.direct_flags) there is no stage1: the
  parent makes the cgroup2 directory, clones init into its new namespaces and that
  directory (clone3), makes the v1 directories and writes the resources while init starts,
  and sends CONTINUE {pid, cgroup}; init then writes "0" to each v1 `tasks` file itself,
  and goes on as below.

  Where stage1 can join the cgroups itself (process.can_join_self: no user namespace),
  the parent does not write stage1's pid (a write that waits out an RCU grace period):

  [cgroups made, empty]
        --> JOINED {join}           stage1 writes "0" to each v1 `tasks` file and forks
                                    init with clone3 into the cgroup2 directory
  [resources]
        <-- PID {pid, in_v2}        in_v2 false: the clone3 was refused, init was forked
  [init into cgroup2 unless in_v2,  plainly, and the parent puts it in the cgroup2 dir
   netDevices]
        --> CONTINUE {pid, cgroup}
        <-- HOOKS                   mounts done (only when there are prestart or
  [prestart, createRuntime hooks]     createRuntime hooks)
        --> HOOKS_DONE
        <-- READY                   set up; init closes its end and blocks on exec.fifo

exec (execproc):

  parent (pyrunc exec)              child (joins the namespaces), then its child
        <-- PID {pid}               the process's host pid (the first child exits)
  [cgroups]
        --> CONTINUE {pid}
        <-- READY                   settings applied; it execs the process

Either child may instead send ERROR {msg, errno} at any point before READY: the parent
raises it as its own error (never a bare exit status), kills the children it has
(kill_reap) and reaps them. The parent may send JOINED before
stage1 waits for it; Channel.wait keeps a message that comes early.
"""

from . import oslite as os
import _signal as signal  # the C module: `signal` imports enum (~1 ms) for names we do not need

# _socket, not socket: the wrapper module costs ~2 ms of imports (enum, selectors).
import _socket

from ocispec import fastjson as json
from ocispec.errors import OCIError, oserror_text

# child -> parent
IDMAP = "idmap"
PID = "pid"
HOOKS = "hooks"
READY = "ready"
ERROR = "error"
# parent -> child
IDMAP_DONE = "idmap-done"
JOINED = "joined"
CONTINUE = "continue"
HOOKS_DONE = "hooks-done"


class Channel:
    """One end of the sync socket, carrying JSON messages."""

    def __init__(self, sock):
        self.sock = sock
        self._early: dict[str, dict] = {}

    def send(self, kind: str, **fields) -> None:
        fields["type"] = kind
        self.sock.send(json.dumps(fields).encode())

    def recv(self) -> dict | None:
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            # The peer exited with a message of ours unread (stage1 failing before it read
            # JOINED): the kernel reports that first, then still delivers what it sent.
            data = self.sock.recv(1 << 16)
        return json.loads(data) if data else None

    def expect(self, kind: str) -> dict:
        msg = self.recv()
        if msg is None:
            raise OCIError(f"the runtime's parent went away while init waited for {kind!r}")
        if msg["type"] != kind:
            raise OCIError(f"runtime protocol error: expected {kind!r}, got {msg['type']!r}")
        return msg

    def expect_any(self) -> dict:
        msg = self.recv()
        if msg is None:
            raise OCIError("the runtime's parent went away during container setup")
        return msg

    def wait(self, kind: str) -> dict:
        """Wait for a message of this kind; one that came before it was waited for counts."""
        while kind not in self._early:
            msg = self.expect_any()
            self._early[msg["type"]] = msg
        return self._early[kind]

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def pair() -> tuple[Channel, Channel]:
    """(the parent's end, the child's end): after fork each closes the other's."""
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    return Channel(a), Channel(b)


def send_error(ch: Channel, err: BaseException) -> None:
    """ERROR for err, as one line the parent can show; a parent gone already is ignored."""
    if isinstance(err, OCIError):
        msg = str(err)
    elif isinstance(err, OSError):
        msg = oserror_text(err)
    else:
        msg = f"{type(err).__name__}: {err}"
    try:
        ch.send(ERROR, msg=msg, errno=getattr(err, "errno", None))
    except OSError:
        pass


def reap(pid: int) -> int | None:
    """Wait for our child pid; its status, or None when it is not (or no longer) ours."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def kill_reap(pid: int) -> None:
    """SIGKILL our child pid and wait for it (a setup that failed half-way)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    reap(pid)
