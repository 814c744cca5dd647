"""pybuild's command line. The usual `pybuild [--root DIR] build ...` runs straight from
pybuild.buildcmd; everything else goes to the typer app in pybuild.commands, imported only
then (typer costs more to import than a cached build takes)."""
import sys


def main(argv=None):
    """Run the command and exit with its status (as pyrunc's main does): a launcher that
    only calls main() gets the same exit status as the console script."""
    sys.exit(_main(argv))


def _main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    from . import buildcmd
    parsed = buildcmd.parse(args)
    if parsed is None:
        from .commands import main as typer_main
        return typer_main(args)
    return buildcmd.guarded(lambda: buildcmd.run(parsed[0], **parsed[1]) or 0)


if __name__ == "__main__":
    main()
