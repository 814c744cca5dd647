"""--trace (or PYRUNC_TRACE=1 in the environment, for runtimes started by containerd or
conmon): where one command spends its time, phase by phase.

Every process of the command (the CLI, stage1, init) keeps its own list of marks: a mark
names the phase that just ended. The children send theirs to the parent in the protocol
messages they send anyway ("pid", "ready"); CLOCK_MONOTONIC is one clock for all of them,
so the parent prints one timeline. Off, a mark is one function call and a test: this
module is imported by every command before anything else, and imports nothing but time.
"""

import time

T0 = time.monotonic_ns()  # the first line of pyrunc's own code that runs
_CPU0 = time.process_time_ns()  # what the interpreter's start-up (and site) cost before it
on = False
_who = "cli"
_marks: list = []  # [who, phase, monotonic ns]


def enable() -> None:
    global on
    on = True


def mark(phase: str, t: int = 0) -> None:
    if on:
        _marks.append((_who, phase, t or time.monotonic_ns()))


def fields() -> dict:
    """What a child adds to its protocol message: its marks, when tracing."""
    return {"trace": _marks} if on else {}


def child(who: str) -> None:
    """In a forked child: start its own list, from the moment of the fork."""
    global _who, _marks
    if on:
        _who = who
        _marks = [(who, "forked", time.monotonic_ns())]


def take() -> list:
    """This process's marks, for a protocol message (None when off: nothing is sent)."""
    return _marks if on else None


def merge(marks) -> None:
    if on and marks:
        _marks.extend(tuple(m) for m in marks)


def report(command: str) -> list[str]:
    """Lines: one per phase (its duration since the same process's previous mark, and when it
    ended since pyrunc's first line ran), then the total. Before them the interpreter's
    start-up, measured as the CPU time spent before pyrunc's first line (the kernel keeps no
    finer wall clock of a process's start)."""
    end = time.monotonic_ns()
    lines = [f"trace {command}: interpreter start {_CPU0 / 1e6:.2f} ms (cpu, before pyrunc's code)"]
    last: dict = {"cli": T0}
    for who, phase, t in sorted(_marks, key=lambda m: m[2]):
        prev = last.get(who, t)
        last[who] = t
        if phase == "forked":
            continue
        where = "" if who == "cli" else f"{who}: "
        lines.append(f"trace {command}: {where}{phase} {(t - prev) / 1e6:.2f} ms "
                     f"(at {(t - T0) / 1e6:.2f})")
    lines.append(f"trace {command}: total {(end - T0) / 1e6:.2f} ms after interpreter start")
    return lines
