"""What the container's process is allowed to do: the init (and `exec`) call prepare() while
still root with every capability, then finalize() to become the configured user with the
configured capabilities. Each first checks its whole part of the config, so a bad value fails
before anything changed.

Standard library only: this is on the path of every container start.
"""

from . import oslite as os

from ocispec.errors import OCIError, SpecError
from ocispec.tables import PERSONALITY_DOMAINS, PERSONALITY_FLAGS

from . import capabilities, lsm, procfs, rlimits, scheduling
from .capabilities import PR_SET_KEEPCAPS, prctl

PR_SET_NO_NEW_PRIVS = 38


def check(process: dict, linux: dict | None = None) -> None:
    """Validate every field prepare() and finalize() use, without touching the kernel (for
    create's validation pass). Host support of apparmor/selinux is checked too."""
    _parse_prepare(process, linux or {})
    _parse_finalize(process)


def _parse_prepare(process: dict, linux: dict):
    rl = rlimits.parse(process.get("rlimits"))
    oom = process.get("oomScoreAdj")
    if oom is not None and (type(oom) is not int or not -1000 <= oom <= 1000):
        raise SpecError("process.oomScoreAdj", f"must be an integer from -1000 to 1000, not {oom!r}")
    pers = _parse_personality(linux.get("personality"))
    sched = scheduling.parse_scheduler(process.get("scheduler"))
    ioprio = scheduling.parse_ioprio(process.get("ioPriority"))
    labels = lsm.check(process, linux)
    return rl, oom, pers, sched, ioprio, labels


def _parse_personality(p, field="linux.personality") -> int | None:
    if p is None:
        return None
    if not isinstance(p, dict):
        raise SpecError(field, "must be an object")
    dom = p.get("domain")
    if dom not in PERSONALITY_DOMAINS:
        raise SpecError(f"{field}.domain", f"unknown domain {dom!r} (known: {', '.join(PERSONALITY_DOMAINS)})")
    value = PERSONALITY_DOMAINS[dom]
    flags = p.get("flags") or []
    if not isinstance(flags, list):
        raise SpecError(f"{field}.flags", "must be an array")
    for i, f in enumerate(flags):
        if f not in PERSONALITY_FLAGS:
            raise SpecError(f"{field}.flags[{i}]", f"unknown flag {f!r}")
        value |= PERSONALITY_FLAGS[f]
    return value


def prepare(process: dict, linux: dict) -> None:
    """rlimits, oomScoreAdj, personality, scheduler, ioPriority and the LSM exec labels."""
    rl, oom, pers, sched, ioprio, (profile, label) = _parse_prepare(process, linux or {})
    rlimits.apply(rl)
    if oom is not None:
        _set_oom_score_adj(oom)
    if pers is not None:
        _set_personality(pers)
    if sched is not None:
        scheduling.set_scheduler(sched)
    if ioprio is not None:
        scheduling.set_ioprio(ioprio)
    lsm.apply(profile, label)


def _set_oom_score_adj(value: int) -> None:
    try:
        procfs.write("self/oom_score_adj", str(value))
    except OSError as e:
        if e.errno == 13:
            raise OCIError(f"process.oomScoreAdj: lowering the OOM score adjustment to {value} "
                           f"needs CAP_SYS_RESOURCE, which the runtime does not have", errno=e.errno) from None
        raise OCIError(f"process.oomScoreAdj: writing {value}: {e.strerror}", errno=e.errno) from None


def _set_personality(value: int) -> None:
    from . import linux

    try:
        linux.personality(value)
    except OSError as e:
        raise OCIError(f"linux.personality: personality({value:#x}): {os.strerror(e.errno)}",
                       errno=e.errno) from None


def _parse_finalize(process: dict):
    caps = capabilities.parse(process.get("capabilities"))
    user = process.get("user")
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise SpecError("process.user", "must be an object")
    ids = []
    for k in ("uid", "gid"):
        v = user.get(k, 0)
        if type(v) is not int or not 0 <= v < 2**32 - 1:
            raise SpecError(f"process.user.{k}", f"must be an integer from 0 to 2^32-2, not {v!r}")
        ids.append(v)
    groups = user.get("additionalGids")
    if groups is not None:
        if not isinstance(groups, list):
            raise SpecError("process.user.additionalGids", "must be an array")
        for i, g in enumerate(groups):
            if type(g) is not int or not 0 <= g < 2**32 - 1:
                raise SpecError(f"process.user.additionalGids[{i}]", f"must be a gid, not {g!r}")
    umask = user.get("umask")
    if umask is not None and (type(umask) is not int or not 0 <= umask <= 0o777):
        raise SpecError("process.user.umask", f"must be an integer from 0 to 0o777, not {umask!r}")
    nnp = process.get("noNewPrivileges", False)
    if not isinstance(nnp, bool):
        raise SpecError("process.noNewPrivileges", f"must be true or false, not {nnp!r}")
    return caps, ids[0], ids[1], groups, umask, nnp


def _setgroups_allowed() -> bool:
    # In a user namespace whose setgroups file says "deny", setgroups(2) fails with EPERM.
    try:
        return procfs.read("self/setgroups").strip() != "deny"
    except OSError:
        return True


def finalize(process: dict) -> None:
    """additionalGids, gid, uid, umask, the five capability sets and noNewPrivileges.

    Caps survive the uid switch because PR_SET_KEEPCAPS keeps the permitted set; capset then
    sets exactly the configured sets (setuid cleared the effective one). An ambient capability
    that is not in both permitted and inheritable is dropped, as runc does.
    """
    caps, uid, gid, groups, umask, nnp = _parse_finalize(process)
    capabilities.drop_bounding(caps)
    prctl(PR_SET_KEEPCAPS, 1, 0, "process.user: PR_SET_KEEPCAPS")
    try:
        if _setgroups_allowed():
            _do("process.user.additionalGids", os.setgroups, groups or [])
        elif groups:
            raise OCIError("process.user.additionalGids: setgroups is denied in this user namespace "
                           "(/proc/self/setgroups is \"deny\")")
        _do("process.user.gid", os.setresgid, gid, gid, gid)
        _do("process.user.uid", os.setresuid, uid, uid, uid)
    finally:
        prctl(PR_SET_KEEPCAPS, 0, 0, "process.user: PR_SET_KEEPCAPS")
    capabilities.apply(caps)
    # runc sets 0022 when the config has no umask; we do the same to be a drop-in.
    os.umask(0o022 if umask is None else umask)
    if nnp:
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, "process.noNewPrivileges: PR_SET_NO_NEW_PRIVS")


def _do(field, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        raise OCIError(f"{field}: {fn.__name__}{args}: {e.strerror}", errno=e.errno) from None
