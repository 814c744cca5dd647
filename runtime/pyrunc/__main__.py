import gc
from . import oslite as os
import sys

# No cycle collection in a command that lives a few milliseconds: collections during the
# imports, and in init after the clone (where touching the parent's objects copies their
# pages), cost ~1.2 ms of a `pyrunc run`. The few commands that stay (events, a console
# relay) turn it back on.
gc.disable()

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
