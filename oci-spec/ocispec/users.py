"""/etc/passwd and /etc/group as both tools read them: one parser for pyrunc (inside the
container, for HOME) and pybuild (in an image's rootfs, for USER and --chown)."""

import posix  # os's functions without importing os: pyrunc's create skips it (pyrunc.oslite)
import _stat as stat  # the C module under stat.py, as posix is under os

# An image controls these files: read at most this much, and only from a regular file
# (a FIFO or /dev/zero in their place must not hang or exhaust the reader).
MAX_BYTES = 4 << 20


def read_db(path: str, dir_fd: int | None = None) -> list[list[str]]:
    """The entries of a passwd/group file, each split on ':'; [] when there is none."""
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        return []
    try:
        if not stat.S_ISREG(posix.fstat(fd).st_mode):
            return []
        data = posix.read(fd, MAX_BYTES)
    except OSError:
        return []
    finally:
        posix.close(fd)
    return parse(data.decode("utf-8", "replace"))


def parse(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines()
            if line.strip() and not line.startswith("#")]


def home(passwd: list[list[str]], uid: int) -> str:
    """The home directory of uid, or / as runc's default exec user has."""
    for ent in passwd:
        if len(ent) > 5 and ent[2] == str(uid):
            return ent[5] or "/"
    return "/"
