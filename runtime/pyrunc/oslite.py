"""`os` for pyrunc, without importing `os`.

`import os` costs about 1.2 ms of every command here (its `_collections_abc` ABCs, the
decoding of environ, posixpath): more than all of `pyrunc state`'s own work. Nearly all of
`os` is `posix`, the C module it re-exports, so pyrunc's modules take the same functions
from here (`from . import oslite as os`). What `os` and `posixpath` write in Python and
pyrunc uses is written here once, as they have it; `path` is `pyrunc.pathlite`. A module
that needs more of `os` (walk, environ) imports it where it uses it.
"""

import sys
from posix import *  # noqa: F401,F403  the functions and constants os re-exports
from posix import _exit  # noqa: F401
from posix import environ as _environb
from posix import mkdir

from . import pathlite as path

# posix's environ is bytes to bytes; os.environ is str. Not exported, so that code written
# for os.environ fails loudly here instead of missing every key: use getenv().
del environ  # noqa: F821

SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2
_ENC, _ERRS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def fsencode(filename) -> bytes:
    filename = fspath(filename)  # noqa: F405
    return filename.encode(_ENC, _ERRS) if isinstance(filename, str) else filename


def fsdecode(filename) -> str:
    filename = fspath(filename)  # noqa: F405
    return filename.decode(_ENC, _ERRS) if isinstance(filename, bytes) else filename


def getenv(key: str, default=None):
    """os.getenv, from the environment this process started with."""
    value = _environb.get(key.encode(_ENC, _ERRS))
    return default if value is None else value.decode(_ENC, _ERRS)


def makedirs(name: str, mode: int = 0o777, exist_ok: bool = False) -> None:
    """os.makedirs: the parents with default mode, the leaf with mode."""
    head, tail = path.split(name)
    if not tail:
        head, tail = path.split(head)
    if head and tail and not path.exists(head):
        try:
            makedirs(head, exist_ok=exist_ok)
        except FileExistsError:
            pass  # made meanwhile by someone else
        if tail == ".":
            return
    try:
        mkdir(name, mode)
    except OSError:
        if not exist_ok or not path.isdir(name):
            raise
