"""`os.path` (posixpath) for pyrunc, without importing `os` (see oslite): str paths.

Each function is posixpath's, for str paths; tests/runtime/test_oslite.py holds them to
posixpath's answers, so they cannot drift apart.
"""

from posix import _path_normpath, getcwd, lstat, readlink, stat

from _stat import S_ISDIR, S_ISLNK, S_ISREG


def join(a: str, *p: str) -> str:
    path = a
    for b in p:
        if b.startswith("/"):
            path = b
        elif not path or path.endswith("/"):
            path += b
        else:
            path += "/" + b
    return path


def split(p: str) -> tuple[str, str]:
    i = p.rfind("/") + 1
    head, tail = p[:i], p[i:]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head, tail


def dirname(p: str) -> str:
    return split(p)[0]


def basename(p: str) -> str:
    return p[p.rfind("/") + 1:]


def normpath(p: str) -> str:
    return _path_normpath(p) or "."


def isabs(p: str) -> bool:
    return p.startswith("/")


def abspath(p: str) -> str:
    return normpath(p if isabs(p) else join(getcwd(), p))


def _mode(p: str, follow: bool = True) -> int:
    try:
        return (stat(p) if follow else lstat(p)).st_mode
    except (OSError, ValueError):
        return 0


def exists(p: str) -> bool:
    return _mode(p) != 0


def lexists(p: str) -> bool:
    return _mode(p, False) != 0


def isdir(p: str) -> bool:
    return S_ISDIR(_mode(p))


def isfile(p: str) -> bool:
    return S_ISREG(_mode(p))


def islink(p: str) -> bool:
    return S_ISLNK(_mode(p, False))


def realpath(filename: str) -> str:
    """posixpath.realpath (not strict): symlinks resolved, a missing part kept as it is."""
    path, _ = _joinrealpath("", filename, {})
    return abspath(path)


def _joinrealpath(path: str, rest: str, seen: dict) -> tuple[str, bool]:
    if isabs(rest):
        rest = rest[1:]
        path = "/"
    while rest:
        name, _, rest = rest.partition("/")
        if not name or name == ".":
            continue
        if name == "..":
            if path:
                path, name = split(path)
                if name == "..":
                    path = join(path, "..", "..")
            else:
                path = ".."
            continue
        newpath = join(path, name)
        if not S_ISLNK(_mode(newpath, False)):
            path = newpath
            continue
        if newpath in seen:
            path = seen[newpath]
            if path is not None:
                continue  # already resolved
            return join(newpath, rest), False  # a loop
        seen[newpath] = None
        path, ok = _joinrealpath(path, readlink(newpath), seen)
        if not ok:
            return join(path, rest), False
        seen[newpath] = path
    return path, True
