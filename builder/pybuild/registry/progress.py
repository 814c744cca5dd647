"""Transfer progress: one live line per blob on a terminal (bytes, rate), plain lines
otherwise, JSON objects with `--progress json`, nothing with `-q`.

Events: blob(digest, size) -> handle; advance(handle, n); finish(handle, how) where how is
"done", "exists", "mounted" or "failed"; info(text); result(name, digest).
"""
import json
import sys
import threading
import time


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}GB"


class Blob:
    __slots__ = ("digest", "size", "done", "start", "how")

    def __init__(self, digest, size):
        self.digest, self.size, self.done, self.start, self.how = digest, size, 0, time.monotonic(), ""

    @property
    def short(self) -> str:
        return self.digest.split(":", 1)[-1][:12]

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.start, 1e-6)


class Progress:
    """Plain lines on stderr; the result on stdout."""

    def __init__(self, verb: str = "copying"):
        self.verb = verb
        self._lock = threading.Lock()

    def _emit(self, text):
        with self._lock:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def blob(self, digest, size) -> Blob:
        b = Blob(digest, size)
        self._start(b)
        return b

    def _start(self, b):
        self._emit(f"{self.verb} blob {b.short} ({_human(b.size)})")

    def skipped(self, digest, size, how="exists"):
        """A blob that needs no transfer: only its end is shown."""
        b = Blob(digest, size)
        b.how = how
        self._end(b)

    def advance(self, b, n):
        b.done += n

    def restart(self, b, offset):
        b.done = offset

    def finish(self, b, how="done"):
        b.how = how
        self._end(b)

    def _end(self, b):
        secs = time.monotonic() - b.start
        if b.how == "done":
            self._emit(f"blob {b.short} done: {_human(b.done)} in {secs:.2f}s "
                       f"({_human(b.rate())}/s)")
        else:
            self._emit(f"blob {b.short} {b.how}")

    def info(self, text):
        self._emit(text)

    def result(self, name, digest):
        sys.stdout.write(f"{name} {digest}\n")
        sys.stdout.flush()

    def close(self):
        pass


class QuietProgress(Progress):
    def _emit(self, text):
        pass

    def result(self, name, digest):
        sys.stdout.write(digest + "\n")
        sys.stdout.flush()


class JsonProgress(Progress):
    def __init__(self, verb="copying"):
        super().__init__(verb)
        self._last: dict = {}

    def _event(self, **ev):
        ev["time"] = round(time.time(), 6)
        with self._lock:
            sys.stdout.write(json.dumps(ev, sort_keys=True) + "\n")
            sys.stdout.flush()

    def _start(self, b):
        self._event(event="blob", status="running", digest=b.digest, size=b.size)

    def advance(self, b, n):
        b.done += n
        now = time.monotonic()
        if now - self._last.get(b.digest, 0) >= 0.5:  # a few lines a second, not per chunk
            self._last[b.digest] = now
            self._event(event="blob", status="progress", digest=b.digest, size=b.size,
                        bytes=b.done)

    def _end(self, b):
        self._event(event="blob", status=b.how, digest=b.digest, size=b.size, bytes=b.done,
                    seconds=round(time.monotonic() - b.start, 4))

    def info(self, text):
        self._event(event="info", text=text)

    def result(self, name, digest):
        self._event(event="result", name=name, digest=digest)


class TtyProgress(Progress):
    def __init__(self, verb="copying"):
        super().__init__(verb)
        from rich.console import Console
        from rich.live import Live
        self.console = Console(file=sys.stderr)
        self._running: list[Blob] = []
        self._live = Live(self._render(), console=self.console, refresh_per_second=8,
                          transient=True, get_renderable=self._render)
        self._live.start()

    def _render(self):
        from rich.text import Text
        t = Text()
        for b in list(self._running):
            pct = f"{100 * b.done / b.size:5.1f}%" if b.size else ""
            t.append(f"{self.verb} {b.short} ", style="bold")
            t.append(f"{_human(b.done)}/{_human(b.size)} {pct} {_human(b.rate())}/s\n",
                     style="cyan")
        return t

    def _start(self, b):
        with self._lock:
            self._running.append(b)

    def _end(self, b):
        with self._lock:
            if b in self._running:
                self._running.remove(b)
        self._live.update(self._render(), refresh=True)  # drop its live line first
        secs = time.monotonic() - b.start
        tail = f"{_human(b.done)} in {secs:.2f}s" if b.how == "done" else b.how
        self.console.print(f"blob {b.short} {tail}", markup=False, highlight=False)

    def info(self, text):
        self.console.print(text, markup=False, highlight=False)

    def close(self):
        self._live.stop()


def make(mode: str, verb: str) -> Progress:
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    cls = {"tty": TtyProgress, "json": JsonProgress, "quiet": QuietProgress}.get(mode, Progress)
    return cls(verb)
