"""Run cases one at a time, each in its own process group with a time limit, and clean up
after each one whatever happened."""

import json
import os
import secrets
import select
import signal
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass

from . import cleanup
from .context import Context
from .runtime import CaseFailed, CaseSkipped

OK, FAIL, SKIP = "ok", "not ok", "skip"


@dataclass
class Result:
    name: str
    status: str          # ok | not ok | skip
    reason: str = ""
    seconds: float = 0.0
    leftovers: str = ""  # what cleanup could not remove (a problem either way)

    def to_json(self) -> dict:
        return asdict(self)


def _child(case, ctx: Context, wfd: int) -> None:
    os.setpgid(0, 0)
    try:
        case.func(ctx)
        res = (OK, "")
    except CaseSkipped as e:
        res = (SKIP, str(e))
    except CaseFailed as e:
        res = (FAIL, str(e))
    except Exception as e:  # a bug in the case, not in the runtime: say so
        tb = traceback.extract_tb(e.__traceback__)[-1]
        res = (FAIL, f"harness error: {type(e).__name__}: {e} "
                     f"({os.path.basename(tb.filename)}:{tb.lineno})")
    os.write(wfd, json.dumps(res).encode())


def run_case(case, runtime: str, base: str, token: str, timeout: float) -> Result:
    workdir = os.path.join(base, case.name)
    os.makedirs(workdir)
    os.chmod(workdir, 0o755)
    ctx = Context(runtime, workdir, token, min(10.0, timeout))
    start = time.monotonic()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(rfd)
        code = 0
        try:
            _child(case, ctx, wfd)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child got there first
    data = b""
    deadline = start + timeout
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([rfd], [], [], left)
        if ready:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            data += chunk
    os.close(rfd)
    cleanup.kill_group(pid)
    os.waitpid(pid, 0)
    seconds = time.monotonic() - start
    if timed_out:
        result = Result(case.name, FAIL, f"timed out after {timeout:g}s", seconds)
    elif not data:
        result = Result(case.name, FAIL, "harness error: the case process died", seconds)
    else:
        status, reason = json.loads(data)
        # One line per result: TAP and the table have no room for more.
        result = Result(case.name, status, " ".join(reason.split()), seconds)
    result.leftovers = clean(ctx)
    return result


def clean(ctx: Context) -> str:
    """Remove everything the case made; describe what could not be removed."""
    problems = []
    left = cleanup.delete_containers(ctx.rt)
    if left:
        problems.append(f"containers {left} survive `delete -f`")
    # Containers' processes outlive the runtime when it is broken: they sit in our cgroups.
    cg = cleanup.remove_cgroups(ctx.token)
    if cg:
        problems.append(f"cgroups {cg}")
    mounts = cleanup.unmount_under(ctx.workdir)
    if mounts:
        problems.append(f"mounts {mounts}")
    try:
        cleanup.remove_tree(ctx.workdir)
    except OSError as e:
        problems.append(f"{ctx.workdir}: {e}")
    return "; ".join(problems)


def run(cases, runtime: str, timeout: float = 30.0, on_result=None,
        workroot: str | None = None) -> list[Result]:
    """Run cases against one runtime binary; on_result(index, result) as each ends."""
    run_id = secrets.token_hex(3)
    base = tempfile.mkdtemp(prefix="occ-", dir=workroot)
    os.chmod(base, 0o755)
    results = []
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for i, case in enumerate(cases, 1):
            r = run_case(case, runtime, base, f"occ-{run_id}-{i:03d}", timeout)
            results.append(r)
            if on_result:
                on_result(i, r)
    finally:
        signal.signal(signal.SIGINT, old)
        if not cleanup.unmount_under(base):
            cleanup.remove_tree(base)
    return results
