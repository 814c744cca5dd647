"""linux.seccomp: compile the profile with libseccomp, load it with seccomp(2), and hand the
notify fd to listenerPath when the profile uses SCMP_ACT_NOTIFY.

Rules follow runc: unknown syscall names are skipped (profiles list syscalls of every arch and
kernel), a rule whose action equals the default is skipped (libseccomp refuses it), and several
conditions on one argument index become one rule per condition (libseccomp would AND them,
which can never match for most pairs).
"""

from . import oslite as os

from ocispec.errors import OCIError, SpecError
from ocispec.tables import SECCOMP_ACTIONS, SECCOMP_ARCHES, SECCOMP_FLAGS, SECCOMP_OPERATORS

from . import libseccomp as ls
from .enosys import stub as enosys_stub

F = "linux.seccomp"
_EPERM = 1
_NOTIFY = SECCOMP_ACTIONS["SCMP_ACT_NOTIFY"]
_U64 = (1 << 64) - 1
# Between loading the filter and handing the notify fd over, the runtime itself needs these: a
# notify rule on them would wait for a listener that never gets the fd.
_NEEDED_AFTER_LOAD = ("sendmsg", "close")
_STATE_KEYS = ("ociVersion", "id", "status", "pid", "bundle", "annotations")


def _action(name, errno_ret, path, errno_path):
    if name not in SECCOMP_ACTIONS:
        raise SpecError(path, f"unknown action {name!r}")
    value = SECCOMP_ACTIONS[name]
    if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        if errno_ret is None:
            errno_ret = _EPERM  # runc's default for both
        elif type(errno_ret) is not int or not 0 <= errno_ret <= 0xFFFF:
            raise SpecError(errno_path, f"must be an integer from 0 to 65535, not {errno_ret!r}")
        return value | errno_ret
    if errno_ret is not None:
        raise SpecError(errno_path, f"is only valid with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {name}")
    return value


class Profile:
    """The parsed, validated profile; kernel untouched."""

    def __init__(self, sc: dict):
        if not isinstance(sc, dict):
            raise SpecError(F, "must be an object")
        self.default = _action(sc.get("defaultAction"), sc.get("defaultErrnoRet"),
                               f"{F}.defaultAction", f"{F}.defaultErrnoRet")
        if self.default == _NOTIFY:
            raise SpecError(f"{F}.defaultAction", "SCMP_ACT_NOTIFY cannot be the default action "
                            "(the runtime's own syscalls would wait for the listener)")
        self.arches = []
        for i, a in enumerate(sc.get("architectures") or []):
            if a not in SECCOMP_ARCHES:
                raise SpecError(f"{F}.architectures[{i}]", f"unknown architecture {a!r}")
            self.arches.append((i, a))
        self.flags = 0
        for i, f in enumerate(sc.get("flags") or []):
            if f not in SECCOMP_FLAGS:
                raise SpecError(f"{F}.flags[{i}]", f"unknown flag {f!r}")
            self.flags |= SECCOMP_FLAGS[f]
        self.listener_path = sc.get("listenerPath") or None
        self.metadata = sc.get("listenerMetadata") or ""
        self.allow_like_default = sc.get("defaultAction") in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")
        self.rules = []  # (path, action, [names], [conditions])
        self.notify = False
        syscalls = sc.get("syscalls") or []
        if not isinstance(syscalls, list):
            raise SpecError(f"{F}.syscalls", "must be an array")
        for i, s in enumerate(syscalls):
            p = f"{F}.syscalls[{i}]"
            if not isinstance(s, dict):
                raise SpecError(p, "must be an object")
            names = s.get("names")
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                raise SpecError(f"{p}.names", "must be a non-empty array of syscall names")
            act = _action(s.get("action"), s.get("errnoRet"), f"{p}.action", f"{p}.errnoRet")
            if act == _NOTIFY:
                self.notify = True
                for n in names:
                    if n in _NEEDED_AFTER_LOAD:
                        raise SpecError(f"{p}.names", f"SCMP_ACT_NOTIFY cannot be used for {n!r}: "
                                        "the runtime needs it to pass the notify fd on")
            conds = []
            for j, a in enumerate(s.get("args") or []):
                ap = f"{p}.args[{j}]"
                if not isinstance(a, dict):
                    raise SpecError(ap, "must be an object")
                idx = a.get("index")
                if type(idx) is not int or not 0 <= idx <= 5:
                    raise SpecError(f"{ap}.index", f"must be an integer from 0 to 5, not {idx!r}")
                vals = []
                for k in ("value", "valueTwo"):
                    v = a.get(k, 0)
                    if type(v) is not int or not 0 <= v <= _U64:
                        raise SpecError(f"{ap}.{k}", f"must be an integer from 0 to 2^64-1, not {v!r}")
                    vals.append(v)
                op = a.get("op")
                if op not in SECCOMP_OPERATORS:
                    raise SpecError(f"{ap}.op", f"unknown operator {op!r}")
                conds.append((idx, SECCOMP_OPERATORS[op], vals[0], vals[1]))
            self.rules.append((p, act, names, conds))
        if self.notify and not self.listener_path:
            raise SpecError(f"{F}.listenerPath", "must be set when a rule uses SCMP_ACT_NOTIFY")
        if self.listener_path is not None and not isinstance(self.listener_path, str):
            raise SpecError(f"{F}.listenerPath", "must be a string")
        if not isinstance(self.metadata, str):
            raise SpecError(f"{F}.listenerMetadata", "must be a string")

    def compile(self) -> bytes:
        """The filter as a BPF program (struct sock_filter[])."""
        flt = ls.Filter(self.default)
        try:
            for i, a in self.arches:
                v = ls.arch_value(a)
                if not v:
                    raise OCIError(f"{F}.architectures[{i}]: {a} is not supported by libseccomp "
                                   f"{'.'.join(map(str, ls.version()))}")
                r = flt.add_arch(v)
                if r < 0 and r != -17:  # EEXIST: the native arch is always there
                    raise OCIError(f"{F}.architectures[{i}]: adding {a}: {os.strerror(-r)}", errno=-r)
            for p, act, names, conds in self.rules:
                if act == self.default:
                    continue
                if len({c[0] for c in conds}) == len(conds):
                    groups = [conds]
                else:
                    groups = [[c] for c in conds]
                for n in names:
                    nr = ls.resolve_syscall(n)
                    if nr == ls.NR_SCMP_ERROR:
                        continue  # not a syscall on these arches: ignored, as runc does
                    for g in groups:
                        r = flt.add_rule(act, nr, g)
                        if r < 0:
                            raise OCIError(f"{p}: adding the rule for {n!r}: {os.strerror(-r)}", errno=-r)
            prog = flt.export_bpf()
        finally:
            flt.close()
        if self.allow_like_default or not self.rules:
            return prog
        return enosys_stub(self._max_syscalls()) + prog

    def _max_syscalls(self) -> dict[int, int]:
        arches = {ls.native_arch()} | {ls.arch_value(a) for _, a in self.arches}
        names = {n for _, _, ns, _ in self.rules for n in ns}
        out = {}
        for a in arches:
            nrs = [ls.resolve_syscall(n, a) for n in names]
            top = max((nr for nr in nrs if nr >= 0), default=-1)
            if top >= 0:
                out[a] = top
        return out


def check(sc: dict) -> Profile:
    """Validate linux.seccomp without touching the kernel (for create's validation pass)."""
    return Profile(sc)


def compile(sc: dict, cache_dir: str | None = None) -> bytes:
    """The profile as a BPF program, for load(prog=...). With cache_dir (a root-only directory
    of the runtime's, e.g. under --root), programs are kept by the SHA-256 of the profile and
    the libseccomp version: a docker-default-sized profile for three arches costs libseccomp
    ~8 ms to compile and a cache hit ~0.1 ms. Call it where cache_dir resolves (before
    pivot_root), and pass the result to load() in the init."""
    prof = Profile(sc)
    if not cache_dir:
        return prof.compile()
    from ocispec.fastjson import dumps  # `import json` brings re and enum: ~8 ms a start
    try:
        from _sha256 import sha256  # hashlib would load OpenSSL: ~2.5 ms more per start
    except ImportError:
        from hashlib import sha256

    # keys in the config's order: a reordered profile only misses the cache
    key = sha256(dumps([sc, list(ls.version()), ls._MACHINE]).encode()).hexdigest()
    path = os.path.join(cache_dir, key + ".bpf")
    try:
        with open(path, "rb") as f:
            prog = f.read()
        if prog and len(prog) % 8 == 0:
            return prog
    except OSError:
        pass
    prog = prof.compile()
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, prog)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs time
    return prog


_prepared = {}  # id(profile dict) -> (profile dict, program, listener socket)


def prepare(sc: dict, cache_dir: str | None = None, connect: bool = True) -> None:
    """Everything load() needs from the host, done while the host is still reachable.

    Python modules and libseccomp.so live on the host, not in the container's rootfs, and
    listenerPath is a host path. The runtime's parent calls prepare(sc, cache_dir,
    connect=False) before it forks (the program is compiled once, errors become create's
    error, and the fork keeps it all); the init calls prepare(sc) again before pivot_root,
    which reuses the program and connects to listenerPath (a connection made in the parent
    would not survive the init's fd cleanup). load(sc, ...) of this same dict uses both.
    """
    old = _prepared.get(id(sc))
    prog = old[1] if old and old[0] is sc else compile(sc, cache_dir)
    listener = old[2] if old and old[0] is sc else None
    if connect and listener is None:
        listener = connect_listener(sc)
    if listener is not None or _has_notify(sc):
        import json  # noqa: F401 - process_state needs it after pivot_root
    _prepared[id(sc)] = (sc, prog, listener)


def held_fds() -> list[int]:
    """The listener connections prepare() holds: a runtime that closes fds between prepare()
    and load() must keep these (load closes them)."""
    return [p[2].fileno() for p in _prepared.values() if p[2] is not None]


def preload(sc: dict | None = None) -> None:
    """The init's hook before pivot_root: prepare(sc), or with no profile just libseccomp."""
    if sc is None:
        ls.lib()
    else:
        prepare(sc)


def load(sc: dict, state: dict, *, prog: bytes | None = None, listener=None, send_fd=None,
         pid: int | None = None) -> None:
    """Load the profile into the calling process; after that its next execve runs filtered.

    prog: the program from compile(sc) when it was compiled beforehand; else what prepare(sc)
    made, else it is compiled here (which needs libseccomp.so reachable).

    With SCMP_ACT_NOTIFY the notify fd goes, with the containerProcessState, to listenerPath:
    over `listener` (a socket connected to it beforehand, e.g. by connect_listener() before
    pivot_root), or by connecting to listenerPath now (only works where that path resolves),
    or, when `send_fd` is given, send_fd(fd) hands the fd to the runtime's parent, which then
    calls send_listener(). Either way the fd is closed here: it never reaches the container's
    program.

    pid: the host pid of the process being filtered when it is not the container's init (an
    exec'd process); the containerProcessState's pid, while its state keeps the init's.
    """
    prof = Profile(sc)
    pre = _prepared.pop(id(sc), None)
    if pre is not None and pre[0] is sc:
        if prog is None:
            prog = pre[1]
        if listener is None and send_fd is None:
            listener = pre[2]
        elif pre[2] is not None:
            pre[2].close()
    if prog is None:
        prog = prof.compile()
    flags = prof.flags

    if not prof.notify:
        # the kernel takes WAIT_KILLABLE_RECV only with a listener; without one it means nothing
        flags &= ~ls.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV

    sock = None
    msg = None
    if prof.notify:
        flags |= ls.SECCOMP_FILTER_FLAG_NEW_LISTENER
        if flags & SECCOMP_FLAGS["SECCOMP_FILTER_FLAG_TSYNC"]:
            # the kernel refuses TSYNC with NEW_LISTENER unless failures report as ESRCH
            flags |= ls.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
        if send_fd is None:
            # Everything that allocates or connects happens before the filter is in place.
            msg = process_state(state, prof.metadata, pid)
            if listener is None:
                sock = connect_listener(sc)
            elif isinstance(listener, int):
                import socket
                sock = socket.socket(fileno=listener)
            else:
                sock = listener
    try:
        fd = ls.load_bpf(prog, flags)
    except OSError as e:
        if sock is not None:
            sock.close()
        raise OCIError(f"{F}: loading the filter: {e.strerror}"
                       + (" (needs CAP_SYS_ADMIN or noNewPrivileges)" if e.errno == 13 else ""),
                       errno=e.errno) from None
    if not prof.notify:
        return
    try:
        if send_fd is not None:
            send_fd(fd)
        else:
            _send(sock, fd, msg, prof.listener_path)
    finally:
        os.close(fd)
        if sock is not None:
            sock.close()


def _has_notify(sc: dict) -> bool:
    return any(s.get("action") == "SCMP_ACT_NOTIFY" for s in (sc or {}).get("syscalls") or ())


def connect_listener(sc: dict):
    """A SOCK_STREAM connection to linux.seccomp.listenerPath, or None when the profile has no
    notify rule. Call it where the path resolves (before pivot_root) and pass it to load()."""
    path = (sc or {}).get("listenerPath")
    if not path or not _has_notify(sc):
        return None
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise OCIError(f"{F}.listenerPath: connecting to {path}: {e.strerror}", errno=e.errno) from None
    return s


def process_state(state: dict, metadata: str = "", pid: int | None = None) -> bytes:
    """The runtime-spec containerProcessState sent with the notify fd."""
    import json
    # only the spec's state fields: the runtime may carry its own keys in the same dict
    st = {k: state[k] for k in _STATE_KEYS if k in state}
    return json.dumps({"ociVersion": state.get("ociVersion", "1.2.0"), "fds": ["seccompFd"],
                       "pid": state.get("pid") if pid is None else pid, "metadata": metadata,
                       "state": st}).encode()


def send_listener(listener_path: str, fd: int, state: dict, metadata: str = "") -> None:
    """Connect to listenerPath and send fd with the containerProcessState (for a runtime parent
    that received the fd from its init through load(send_fd=...))."""
    s = connect_listener({"listenerPath": listener_path, "syscalls": [{"action": "SCMP_ACT_NOTIFY"}]})
    with s:
        _send(s, fd, process_state(state, metadata), listener_path)


def _send(sock, fd: int, msg: bytes, path: str) -> None:
    import socket
    try:
        n = socket.send_fds(sock, [msg], [fd])
        if n < len(msg):
            sock.sendall(msg[n:])
    except OSError as e:
        raise OCIError(f"{F}.listenerPath: sending the notify fd to {path}: {e.strerror}",
                       errno=e.errno) from None


def supported() -> dict:
    """linux.seccomp of the runtime-spec features document, from what this libseccomp and
    kernel accept."""
    try:
        ls.lib()
    except OCIError:
        return {"enabled": False}
    actions = [a for a, v in SECCOMP_ACTIONS.items() if ls.action_available(v)]
    return {
        "enabled": True,
        "actions": actions,
        "operators": list(SECCOMP_OPERATORS),
        "archs": [a for a in SECCOMP_ARCHES if ls.arch_value(a)],
        "knownFlags": list(SECCOMP_FLAGS),
        "supportedFlags": [f for f, v in SECCOMP_FLAGS.items() if ls.flag_available(v)],
    }
