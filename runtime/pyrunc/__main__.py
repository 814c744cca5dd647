import os
import sys

from . import trace  # noqa: F401  first: its clock starts where pyrunc's code does
from .cli import main as _main


def main() -> None:
    code = _main()
    # Skip interpreter teardown (module and object finalisation): nothing of ours needs
    # it once output is flushed, and every container start pays for it.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
