"""pyrunc's command line, runc's flag for flag.

The flags are data (COMMANDS, GLOBAL_FLAGS): the parser, `--help` and the docs come from
these tables. Parsing follows runc's urfave/cli: long flags take one or two dashes,
`--flag value` or `--flag=value`, booleans accept `--flag=false`, and flags may follow
the positional arguments except for `exec`, whose command line starts at the first
argument after the container id.
"""

from . import oslite as os
import sys

from ocispec.errors import OCIError, oserror_text

from . import __version__, trace


class Flag:
    __slots__ = ("name", "short", "kind", "default", "help", "aliases")

    def __init__(self, name, kind=str, default=None, short=None, help="", aliases=()):
        self.name = name
        self.aliases = aliases  # other long spellings (runc's and ours)
        self.kind = kind  # str, int, bool or list (repeatable string)
        self.default = default if default is not None else ([] if kind is list else (False if kind is bool else None))
        self.short = short
        self.help = help


GLOBAL_FLAGS = [
    Flag("root", default="/run/pyrunc", help="root directory for storage of container state"),
    Flag("log", default="", help="set the log file to write runtime logs to (default stderr)"),
    Flag("log-format", default="text", help="log format: text or json"),
    Flag("debug", bool, help="enable debug logging"),
    Flag("systemd-cgroup", bool, help="treat cgroupsPath as slice:prefix:name (systemd style)"),
    Flag("rootless", default="auto", help="accepted for compatibility (true, false or auto); "
         "pyrunc runs as root and does not change its behaviour for it"),
    Flag("criu", default="criu", help="accepted for compatibility; checkpointing is not supported"),
    Flag("version", bool, short="v", help="print the version"),
    Flag("trace", bool, help="print how long each phase of the command took (to --log, or stderr; "
         "also PYRUNC_TRACE=1 in the environment)"),
]

_CREATE_FLAGS = [
    Flag("bundle", short="b", default="", help="path to the root of the bundle directory (default: current directory)"),
    Flag("console-socket", default="", help="path to an AF_UNIX socket that receives the pty master"),
    Flag("pid-file", default="", help="file to write the container init's process id to"),
    Flag("no-pivot", bool, help="do not use pivot_root (chroot instead, e.g. on a ramdisk)"),
    Flag("no-new-keyring", bool, help="do not create a new session keyring"),
    Flag("preserve-fds", int, default=0, help="pass N additional file descriptors (3..3+N-1) to the container"),
]

COMMANDS = {
    "create": (_CREATE_FLAGS, "ID", "create a container"),
    "start": ([], "ID", "start the user process of a created container"),
    "run": (_CREATE_FLAGS + [
        Flag("detach", bool, short="d", help="detach from the container's process"),
        Flag("keep", bool, help="do not delete the container after it exits"),
        Flag("no-subreaper", bool, help="accepted for compatibility"),
    ], "ID", "create and run a container"),
    "state": ([], "ID", "output the state of a container"),
    "kill": ([Flag("all", bool, short="a", help="send the signal to all processes of the container")],
             "ID [SIGNAL]", "send a signal (default SIGTERM) to the container's init"),
    "delete": ([Flag("force", bool, short="f", help="kill the container first if it is still running")],
               "ID", "delete a container and everything it holds"),
    "list": ([Flag("format", short="f", default="table", help="table or json"),
              Flag("quiet", bool, short="q", help="display only container ids")], "", "list containers"),
    "ps": ([Flag("format", short="f", default="table", help="table or json")], "ID [PS ARGS]",
           "list the processes of a container"),
    "exec": ([
        Flag("console-socket", default="", help="path to an AF_UNIX socket that receives the pty master"),
        Flag("cwd", default="", help="current working directory in the container"),
        Flag("env", list, short="e", help="set an environment variable (K=V)"),
        Flag("tty", bool, short="t", help="allocate a pseudo-TTY"),
        Flag("user", short="u", default="", help="UID[:GID]"),
        Flag("additional-gids", list, short="g", help="additional group id (repeatable)"),
        Flag("process", short="p", default="", help="path to a process.json"),
        Flag("detach", bool, short="d", help="detach from the process"),
        Flag("pid-file", default="", help="file to write the process id to"),
        Flag("process-label", default="", help="SELinux label of the process"),
        Flag("apparmor", default="", help="AppArmor profile of the process"),
        Flag("no-new-privs", bool, help="set no_new_privs for the process"),
        Flag("cap", list, short="c", help="add a capability"),
        Flag("preserve-fds", int, default=0, help="pass N additional file descriptors to the process"),
        Flag("cgroup", list, help="run in this sub-cgroup of the container: PATH or CONTROLLER[,...]:PATH"),
        Flag("ignore-paused", bool, help="allow exec into a paused container"),
    ], "ID COMMAND [ARGS...]", "run a new process inside a container"),
    "pause": ([], "ID", "freeze all processes of a container"),
    "resume": ([], "ID", "thaw a paused container"),
    "update": ([
        Flag("resources", short="r", default="", help="path to a linux.resources JSON file, or - for stdin"),
        Flag("memory", default=None, help="memory limit (bytes, or with k/m/g)"),
        Flag("memory-reservation", default=None, help="memory soft limit"),
        Flag("memory-swap", default=None, help="memory plus swap limit; -1 for unlimited swap"),
        Flag("kernel-memory", default=None, help="kernel memory limit (deprecated; warned about where ignored)"),
        Flag("kernel-memory-tcp", default=None, help="kernel TCP buffer limit (deprecated)"),
        Flag("cpu-share", default=None, help="CPU shares (relative weight)", aliases=("cpu-shares",)),
        Flag("cpu-quota", default=None, help="CPU CFS quota in microseconds per period"),
        Flag("cpu-period", default=None, help="CPU CFS period in microseconds"),
        Flag("cpu-rt-runtime", default=None, help="CPU realtime runtime in microseconds"),
        Flag("cpu-rt-period", default=None, help="CPU realtime period in microseconds"),
        Flag("cpuset-cpus", default=None, help="CPUs to use (e.g. 0-2,4)"),
        Flag("cpuset-mems", default=None, help="memory nodes to use"),
        Flag("pids-limit", default=None, help="maximum number of processes"),
        Flag("blkio-weight", default=None, help="block I/O weight, 10 to 1000"),
        Flag("l3-cache-schema", default=None, help="Intel RDT L3 cache schema (not supported)"),
        Flag("mem-bw-schema", default=None, help="Intel RDT memory bandwidth schema (not supported)"),
    ], "ID", "update a container's resource limits"),
    "events": ([Flag("stats", bool, help="print the container's stats once and exit"),
                Flag("interval", default="5s", help="stats interval")], "ID", "show container events and stats"),
    "features": ([], "", "show the features this runtime supports (JSON)"),
    "spec": ([Flag("bundle", short="b", default="", help="directory to write config.json in"),
              Flag("rootless", bool, help="a spec for a rootless container")], "", "write a default config.json"),
}


class Args:
    """Parsed command line: global options, the command, its options and positionals."""

    def __init__(self):
        self.g: dict = {}
        self.command: str | None = None
        self.opts: dict = {}
        self.args: list[str] = []


def _index(flags):
    idx = {}
    for f in flags:
        idx[f.name] = f
        for al in f.aliases:
            idx[al] = f
        if f.short:
            idx[f.short] = f
    return idx


def _parse_flags(argv, i, flags, out, stop_at_positional, positionals):
    idx = _index(flags)
    while i < len(argv):
        a = argv[i]
        if a == "--":
            positionals.extend(argv[i + 1:])
            return len(argv)
        if len(a) < 2 or a[0] != "-" or a == "-":
            if stop_at_positional:
                return i
            positionals.append(a)
            i += 1
            continue
        name, eq, val = a.lstrip("-").partition("=")
        f = idx.get(name)
        if f is None:
            if name in ("h", "help"):
                out["help"] = True
                i += 1
                continue
            raise OCIError(f"flag provided but not defined: -{name}")
        i += 1
        if f.kind is bool:
            if eq:
                if val.lower() not in ("true", "false", "1", "0"):
                    raise OCIError(f"invalid boolean value {val!r} for -{name}")
                out[f.name] = val.lower() in ("true", "1")
            else:
                out[f.name] = True
            continue
        if not eq:
            if i >= len(argv):
                raise OCIError(f"flag needs an argument: -{name}")
            val = argv[i]
            i += 1
        if f.kind is int:
            try:
                out[f.name] = int(val)
            except ValueError:
                raise OCIError(f"invalid value {val!r} for flag -{name}: not a number") from None
        elif f.kind is list:
            out.setdefault(f.name, []).append(val)
        else:
            out[f.name] = val
    return i


def parse(argv: list[str]) -> Args:
    a = Args()
    a.g = {f.name: f.default for f in GLOBAL_FLAGS}
    i = _parse_flags(argv, 0, GLOBAL_FLAGS, a.g, True, [])
    if a.g.pop("help", False):
        a.command = "help"
        return a
    if a.g["version"]:
        a.command = "version"
        return a
    if i >= len(argv):
        a.command = "help"
        return a
    a.command = argv[i]
    if a.command == "help":
        return a
    if a.command not in COMMANDS:
        raise OCIError(f"no such command: {a.command} (see 'pyrunc --help')")
    flags = COMMANDS[a.command][0]
    a.opts = {f.name: (list(f.default) if f.kind is list else f.default) for f in flags}
    # exec and ps: flags come before the id and what follows it is the process's or ps's
    # own command line (runc's SkipArgReorder); everything else reorders.
    if a.command in ("exec", "ps"):
        j = _parse_flags(argv, i + 1, flags, a.opts, True, a.args)
        if j < len(argv):
            a.args.append(argv[j])
            a.args.extend(argv[j + 1:])
    else:
        _parse_flags(argv, i + 1, flags, a.opts, False, a.args)
    return a


def usage(command: str | None = None) -> str:
    lines = []
    if command and command in COMMANDS:
        flags, pos, desc = COMMANDS[command]
        lines.append(f"Usage: pyrunc {command} [options] {pos}".rstrip())
        lines.append("")
        lines.append(desc)
        if flags:
            lines.append("\nOptions:")
    else:
        lines.append("Usage: pyrunc [global options] COMMAND [options] ARGS...")
        lines.append("\nCommands:")
        for name, (_, pos, desc) in COMMANDS.items():
            lines.append(f"  {name:<10} {desc}")
        lines.append("\nGlobal options:")
        flags = GLOBAL_FLAGS
    for f in flags:
        spell = ", ".join(f"--{n}" for n in (f.name, *f.aliases)) + (f", -{f.short}" if f.short else "")
        if f.kind is not bool:
            spell += " value"
        lines.append(f"  {spell:<28} {f.help}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    log = a = None
    t_main = trace.time.monotonic_ns()
    try:
        a = parse(argv)
        if a.g["trace"] or os.getenv("PYRUNC_TRACE"):
            trace.enable()
            trace.mark("imports (cli)", t_main)
            trace.mark("parse flags")
        if a.command == "version":
            print(_version())
            return 0
        if a.command == "help":
            print(usage())
            return 0
        if a.opts.get("help"):
            print(usage(a.command))
            return 0
        from .log import Log

        log = Log(a.g["log"], a.g["log-format"], a.g["debug"])
        from . import commands

        log.debug(f"pyrunc {a.command} {' '.join(a.args)}".rstrip())
        trace.mark("log, imports (commands)")
        try:
            rc = getattr(commands, "cmd_" + a.command.replace("-", "_"))(a, log) or 0
        finally:
            if trace.on:
                for line in trace.report(a.command):
                    log.info(line)
        log.debug(f"pyrunc {a.command}: done, exit status {rc}")
        return rc
    except BrokenPipeError:  # `pyrunc list | head`: the reader left, nothing to report
        return 0
    except (OCIError, OSError) as e:
        # An OSError nobody turned into a sentence (a full disk, a read-only --root): one
        # line that names the file, never a traceback.
        msg = str(e) if isinstance(e, OCIError) else oserror_text(e)
        if log is None:
            from .log import Log

            try:
                log = Log(_peek(argv, "log"), _peek(argv, "log-format") or "text", False)
            except Exception:  # a bad --log path must not hide the real error
                log = None
        if log is not None:
            log.error(msg)
        print(f"pyrunc: {msg}", file=sys.stderr)
        # runc's exec fails with 255, so that callers can tell its own failure from any
        # status of the process
        return 255 if a is not None and a.command == "exec" else 1
    except KeyboardInterrupt:
        return 130


def _version() -> str:
    """runc's lines (version, commit, spec) and then what we are built on."""
    try:  # written by .ci/setup from `git describe` when it installs
        with open(os.path.join(os.path.dirname(__file__), "COMMIT")) as f:
            commit = f.read().strip() or "unknown"
    except OSError:
        commit = "unknown"
    return (f"pyrunc version {__version__}\ncommit: {commit}\nspec: 1.2.0\n"
            f"python: {sys.version.split()[0]}")


def _peek(argv, name):
    for i, a in enumerate(argv):
        if a in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(f"--{name}=") or a.startswith(f"-{name}="):
            return a.split("=", 1)[1]
    return ""
