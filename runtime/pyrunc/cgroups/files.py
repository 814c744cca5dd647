"""Reading and writing cgroup files, with errors that name the config field."""

import errno as _errno
from .. import oslite as os

from ocispec.errors import OCIError


def reason(err: OSError) -> str:
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


def write(directory: str, name: str, value, field: str) -> None:
    """Write one value; a refusal becomes `FIELD: cannot set VALUE: REASON`."""
    path = f"{directory}/{name}"
    data = str(value)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OCIError(f"{field}: this host has no {name} in {directory}",
                       errno=_errno.ENOENT) from None
    except OSError as e:
        raise OCIError(f"{field}: cannot open {path}: {reason(e)}", errno=e.errno) from None
    try:
        os.write(fd, data.encode())
    except OSError as e:
        raise OCIError(f"{field}: cannot set {data}: {reason(e)} (writing {name})",
                       errno=e.errno) from None
    finally:
        os.close(fd)


def freezer_state(v1_freezer: str | None, v2: str | None) -> str:
    """"frozen" or "thawed", from the v1 freezer directory or else the cgroup2 one."""
    try:
        if v1_freezer:
            return "frozen" if read(v1_freezer, "freezer.state").strip() == "FROZEN" else "thawed"
        if v2:
            return "frozen" if read(v2, "cgroup.freeze").strip() == "1" else "thawed"
    except FileNotFoundError:
        pass
    return "thawed"


def read(directory: str, name: str) -> str:
    with open(f"{directory}/{name}") as f:
        return f.read()


def read_int(directory: str, name: str, default: int = 0) -> int:
    """An integer file; 'max' reads as 0 like runc's stats do for 'no limit'."""
    try:
        text = read(directory, name).strip()
    except OSError:
        return default
    if text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return default


def read_keyed(directory: str, name: str) -> dict:
    """A flat keyed file ('key value' per line) as {key: int}."""
    out = {}
    try:
        text = read(directory, name)
    except OSError:
        return out
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def exists(directory: str, name: str) -> bool:
    return os.path.exists(f"{directory}/{name}")
