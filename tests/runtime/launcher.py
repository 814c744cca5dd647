"""The installed pyrunc command's launcher: the interpreter (and flags) it runs on."""

import os
import shlex
import sys


def interpreter(pyrunc_bin: str) -> tuple[list[str], str]:
    """The interpreter (and its flags) the pyrunc command runs on, and the launcher's text."""
    with open(pyrunc_bin, "rb") as f:
        text = f.read().decode(errors="replace")
    first = text.splitlines()[0] if text.startswith("#!") else ""
    argv = shlex.split(first[2:]) or [sys.executable]
    if os.path.basename(argv[0]) == "env":
        argv = argv[1:]
    return argv, text
