"""pybuild's command line. The usual `pybuild [--root DIR] build ...` runs straight from
pybuild.buildcmd; everything else goes to the typer app in pybuild.commands, imported only
then (typer costs more to import than a cached build takes)."""
import os
import sys


def main(argv=None):
    """Run the command and exit with its status (as pyrunc's main does): a launcher that
    only calls main() gets the same exit status as the console script. A build skips the
    interpreter's teardown (module and object finalisation: ~15-20 ms after a cold build
    here, ~4 ms of a 34 ms no-change rebuild), as pyrunc does: by then its files are
    closed, its threads and the guardian are done, and only its output needs flushing."""
    code, built = _run(argv)
    if built:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os._exit(code)
    sys.exit(code)


def _main(argv=None) -> int:
    """The command's exit status (in this process: no exit)."""
    return _run(argv)[0]


def _run(argv):
    args = sys.argv[1:] if argv is None else list(argv)
    from . import buildcmd
    parsed = buildcmd.parse(args)
    if parsed is None:
        from .commands import main as typer_main
        return typer_main(args), False
    return buildcmd.guarded(lambda: buildcmd.run(parsed[0], **parsed[1]) or 0), True


if __name__ == "__main__":
    main()
