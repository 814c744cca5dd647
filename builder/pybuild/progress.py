"""Build progress: one event stream, several renderings (plain, json, quiet, tty).

Events: step(stage, nstages, n, total, text) -> handle; handle.done(cached) or
handle.fail(); output(handle, line); info(text); result(digest).
"""
import json
import sys
import threading
import time


class Step:
    __slots__ = ("stage", "nstages", "n", "total", "text", "start", "cached", "seconds", "status")

    def __init__(self, stage, nstages, n, total, text):
        self.stage, self.nstages, self.n, self.total, self.text = stage, nstages, n, total, text
        self.start = time.monotonic()
        self.cached = False
        self.seconds = 0.0
        self.status = "running"

    @property
    def label(self) -> str:
        return f"[stage {self.stage}/{self.nstages}] STEP {self.n}/{self.total}: {self.text}"


class Progress:
    """Plain lines (not a terminal)."""

    def __init__(self, out=None):
        self.out = out or sys.stderr
        self._lock = threading.Lock()

    def _emit(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def step(self, stage, nstages, n, total, text) -> Step:
        s = Step(stage, nstages, n, total, _short(text))
        self._started(s)
        return s

    def _started(self, s: Step) -> None:
        pass

    def done(self, s: Step, cached: bool = False) -> None:
        s.seconds = time.monotonic() - s.start
        s.cached = cached
        s.status = "cached" if cached else "done"
        self._finished(s)

    def fail(self, s: Step) -> None:
        s.seconds = time.monotonic() - s.start
        s.status = "failed"
        self._finished(s)

    def _finished(self, s: Step) -> None:
        tail = " (cached)" if s.cached else (" FAILED" if s.status == "failed" else "")
        self._emit(f"{s.label}{tail} {s.seconds:.2f}s")

    def output(self, s: Step, line: str) -> None:
        if s.status == "running":  # first output: say whose it is
            s.status = "output"
            self._emit(s.label)
        self._emit(f"  | {line}")

    def info(self, text: str) -> None:
        self._emit(text)

    def cache_miss(self, s: Step, reasons: list) -> None:
        """A layer step missed the cache: why (pybuild.build.cache.explain)."""
        self._emit(f"{s.label}: cache miss: " + "; ".join(reasons))

    def explain_cache(self, misses: list) -> None:
        """`build --explain-cache`: every step that missed, and why (on stderr)."""
        lines = [f"cache: {len(misses)} step(s) missed"] + [
            f"  {label}\n    " + "\n    ".join(reasons) for label, reasons in misses]
        with self._lock:
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()

    def result(self, digest: str, seconds: float) -> None:
        self._emit(f"built {digest} in {seconds:.2f}s")

    def close(self) -> None:
        pass


class QuietProgress(Progress):
    """Only the image digest, on stdout."""

    def _emit(self, text):
        pass

    def result(self, digest, seconds):
        sys.stdout.write(digest + "\n")
        sys.stdout.flush()


class JsonProgress(Progress):
    """One JSON object per event, on stdout."""

    def _event(self, **ev) -> None:
        ev["time"] = round(time.time(), 6)
        with self._lock:
            sys.stdout.write(json.dumps(ev, sort_keys=True) + "\n")
            sys.stdout.flush()

    def _started(self, s):
        self._event(event="step", status="running", stage=s.stage, stages=s.nstages, step=s.n,
                    steps=s.total, text=s.text)

    def _finished(self, s):
        self._event(event="step", status=s.status, stage=s.stage, stages=s.nstages, step=s.n,
                    steps=s.total, text=s.text, cached=s.cached, seconds=round(s.seconds, 4))

    def output(self, s, line):
        self._event(event="output", stage=s.stage, step=s.n, line=line)

    def info(self, text):
        self._event(event="info", text=text)

    def cache_miss(self, s, reasons):
        self._event(event="cache_miss", stage=s.stage, step=s.n, text=s.text, reasons=reasons)

    def result(self, digest, seconds):
        self._event(event="result", digest=digest, seconds=round(seconds, 4))


class TtyProgress(Progress):
    """A live view on a terminal: running steps with a clock, finished ones with timings."""

    def __init__(self):
        super().__init__(sys.stderr)
        from rich.console import Console
        from rich.live import Live
        self.console = Console(file=sys.stderr)
        self._running: list[Step] = []
        self._tail: dict[int, str] = {}
        self._live = Live(self._render(), console=self.console, refresh_per_second=8,
                          transient=True, get_renderable=self._render)
        self._live.start()

    def _render(self):
        from rich.text import Text
        t = Text()
        now = time.monotonic()
        for s in list(self._running):
            t.append(f"=> {s.label} ", style="bold")
            t.append(f"{now - s.start:.1f}s\n", style="cyan")
            tail = self._tail.get(id(s))
            if tail:
                t.append(f"   {tail[:150]}\n", style="dim")
        return t

    def _started(self, s):
        with self._lock:
            self._running.append(s)

    def _finished(self, s):
        with self._lock:
            if s in self._running:
                self._running.remove(s)
            self._tail.pop(id(s), None)
        style = "green" if s.cached else ("red" if s.status == "failed" else "blue")
        mark = "CACHED" if s.cached else ("FAILED" if s.status == "failed" else "DONE")
        self.console.print(f"[{style}]{mark:>6}[/] {s.label} [cyan]{s.seconds:.2f}s[/]",
                           markup=True, highlight=False)

    def output(self, s, line):
        with self._lock:
            self._tail[id(s)] = line

    def info(self, text):
        self.console.print(text, markup=False, highlight=False)

    def cache_miss(self, s, reasons):
        pass  # the live view stays short: --progress plain or --explain-cache say why

    def result(self, digest, seconds):
        self.console.print(f"built {digest} in {seconds:.2f}s", markup=False, highlight=False)

    def close(self):
        self._live.stop()


def make(mode: str) -> Progress:
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    if mode == "tty":
        return TtyProgress()
    if mode == "json":
        return JsonProgress()
    if mode == "quiet":
        return QuietProgress()
    return Progress()


def _short(text: str, width: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
