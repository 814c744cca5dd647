"""One function per command: read the parsed flags, call the library, print.

Each takes (args, log) and returns the exit status. Positional argument checks give
runc's messages.
"""

from . import oslite as os

from ocispec import fastjson as json
from ocispec.errors import OCIError


def _id(a, name: str) -> str:
    if not a.args:
        raise OCIError(f'"{name}" requires a container id (usage: pyrunc {name} ID)')
    return a.args[0]


def _create_kw(a) -> dict:
    return {
        "pid_file": a.opts["pid-file"],
        "console_socket": a.opts["console-socket"],
        "no_pivot": a.opts["no-pivot"],
        "no_new_keyring": a.opts["no-new-keyring"],
        "preserve_fds": a.opts["preserve-fds"] + _listen_fds(),
        "systemd": a.g["systemd-cgroup"],
    }


def _listen_fds() -> int:
    # systemd socket activation: fds 3.. stay open for the container, like runc.
    try:
        if int(os.getenv("LISTEN_PID", "0")) in (0, os.getpid()):
            return int(os.getenv("LISTEN_FDS", "0"))
    except ValueError:
        pass
    return 0


def cmd_create(a, log) -> int:
    from .container import create

    create(a.g["root"], _id(a, "create"), a.opts["bundle"], log=log, **_create_kw(a))
    return 0


def cmd_start(a, log) -> int:
    from .container import start

    start(a.g["root"], _id(a, "start"), log)
    return 0


def cmd_run(a, log) -> int:
    from .container import run

    return run(a.g["root"], _id(a, "run"), a.opts["bundle"], detach=a.opts["detach"],
               keep=a.opts["keep"], log=log, **_create_kw(a))


def cmd_state(a, log) -> int:
    from .state import Container

    c = Container.load(a.g["root"], _id(a, "state"), lock=False)
    print(json.dumps(c.runc_state(), indent=2))
    return 0


def cmd_kill(a, log) -> int:
    from .container import kill

    sig = a.args[1] if len(a.args) > 1 else "SIGTERM"
    kill(a.g["root"], _id(a, "kill"), sig, a.opts["all"])
    return 0


def cmd_delete(a, log) -> int:
    from .container import delete

    if not a.args:
        raise OCIError('"delete" requires at least one container id')
    for cid in a.args:
        delete(a.g["root"], cid, a.opts["force"], log)
    return 0


def cmd_list(a, log) -> int:
    from .state import Container, list_ids

    states = []
    for cid in list_ids(a.g["root"]):
        try:
            states.append(Container.load(a.g["root"], cid, lock=False).runc_state(owner=True))
        except OCIError:
            continue  # deleted while we listed
    if a.opts["quiet"]:
        for s in states:
            print(s["id"])
    elif a.opts["format"] == "json":
        print(json.dumps(states or None))
    elif a.opts["format"] == "table":
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]) for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        for r in rows:
            print("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    else:
        raise OCIError(f"invalid format option {a.opts['format']!r} (use table or json)")
    return 0


def cmd_ps(a, log) -> int:
    from .container import cgroup_manager
    from .state import Container

    c = Container.load(a.g["root"], _id(a, "ps"), lock=False)
    m = cgroup_manager(c)
    try:
        pids = sorted(m.pids()) if m is not None else [c.pid] if c.init_alive() else []
    except OSError:  # the cgroup is gone: nothing runs (runc prints the header alone)
        pids = []
    if a.opts["format"] == "json":
        print(json.dumps(pids or None))  # Go encodes runc's empty pid slice as null
        return 0
    if a.opts["format"] != "table":
        raise OCIError(f"invalid format option {a.opts['format']!r} (use table or json)")
    import subprocess

    ps_args = a.args[1:] or ["-ef"]
    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True)
    if out.returncode != 0:
        raise OCIError(f"ps {' '.join(ps_args)}: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0]
    try:
        col = header.split().index("PID")
    except ValueError:
        raise OCIError("ps output has no PID column") from None
    print(header)
    wanted = set(pids)
    for line in lines[1:]:
        f = line.split()
        if len(f) > col and f[col].isdigit() and int(f[col]) in wanted:
            print(line)
    return 0


def cmd_pause(a, log) -> int:
    from .container import pause

    pause(a.g["root"], _id(a, "pause"))
    return 0


def cmd_resume(a, log) -> int:
    from .container import resume

    resume(a.g["root"], _id(a, "resume"))
    return 0


def cmd_exec(a, log) -> int:
    from .execproc import exec_command

    return exec_command(a, log)


def cmd_update(a, log) -> int:
    from .update import update

    return update(a, log)


def cmd_events(a, log) -> int:
    from .events import events

    return events(a, log)


def cmd_features(a, log) -> int:
    from .features import features

    print(json.dumps(features(), indent=2))
    return 0


def cmd_spec(a, log) -> int:
    from .spec import default_spec
    from .state import write_atomic

    path = os.path.join(a.opts["bundle"] or ".", "config.json")
    if os.path.exists(path):
        raise OCIError(f"{path} already exists: remove it first")
    data = json.dumps(default_spec(rootless=a.opts["rootless"]), indent="\t").encode()
    try:
        write_atomic(path, data, 0o644, durable=True)
    except OSError as e:
        raise OCIError(f"{path}: {e.strerror}") from None
    return 0
