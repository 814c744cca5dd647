"""The one error type of the project.

Every failure a user can act on is an OCIError: a one-line message that says what is
wrong and, where it helps, how to fix it. The CLIs print `str(err)` and exit 1.
"""


class OCIError(Exception):
    """An error with a message a user can act on.

    errno: the OS error number behind it, when there is one.
    hint: a short suggestion appended to the message.
    """

    def __init__(self, message: str, *, errno: int | None = None, hint: str | None = None):
        self.message = message
        self.errno = errno
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


def oserror_text(err: OSError) -> str:
    """One line for an OSError no code turned into a sentence: its reason and its file."""
    return f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")


class SpecError(OCIError):
    """A document does not follow its specification.

    Rendered as `FILE: JSON.PATH: reason`, e.g.
    `config.json: process.rlimits[2].type: unknown rlimit "RLIMIT_FOO"`.
    """

    def __init__(self, path: str, reason: str, *, source: str = "config.json"):
        self.path = path
        self.reason = reason
        self.source = source
        msg = f"{source}: {path}: {reason}" if path else f"{source}: {reason}"
        super().__init__(msg)
