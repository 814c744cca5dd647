"""--log / --log-format: where runtime messages go.

containerd's shim reads the log file after a failed command and takes the message of the
last `{"level":"error","msg":...}` line as the error, so every error reaches the file in
that shape. Without --log, messages go to stderr only.
"""

from . import oslite as os
import sys
import time

from ocispec import fastjson as json


class Log:
    def __init__(self, path: str, fmt: str = "text", debug: bool = False):
        from ocispec.errors import OCIError

        if fmt not in ("text", "json"):
            raise OCIError(f"--log-format: unknown format {fmt!r} (use text or json)")
        self.path = path
        self.fmt = fmt
        self.debug_on = debug
        if path:
            # runc opens --log for every command: callers (containerd, conmon) read it
            # after any call, and a missing file is an error to them.
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                 0o644))
            except OSError as e:
                raise OCIError(f"--log {path}: {e.strerror}") from None

    def _write(self, level: str, msg: str) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": msg, "time": now})
        else:
            line = f'time="{now}" level={level} msg={json.dumps(msg)}'
        if not self.path:
            if level != "error":  # errors are printed by the CLI itself
                print(line, file=sys.stderr)
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def error(self, msg: str) -> None:
        self._write("error", msg)

    def info(self, msg: str) -> None:
        self._write("info", msg)

    def warn(self, msg: str) -> None:
        self._write("warning", msg)

    def debug(self, msg: str) -> None:
        if self.debug_on:
            self._write("debug", msg)
