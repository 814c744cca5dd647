"""TAP lines as cases end, then a summary table (one runtime or two side by side)."""

import json

from .runner import FAIL, OK, SKIP


def tap_line(index: int, r) -> str:
    if r.status == OK:
        line = f"ok {index} - {r.name}"
    elif r.status == SKIP:
        line = f"ok {index} - {r.name} # SKIP {r.reason}"
    else:
        line = f"not ok {index} - {r.name} # {r.reason}"
    if r.leftovers:
        line += f"\n# {r.name}: cleanup could not remove: {r.leftovers}"
    return line


def _cell(r) -> str:
    return {OK: "ok", FAIL: "not ok", SKIP: "skip"}[r.status]


def _table(header: list[str], rows: list[list[str]], last_free: bool = True) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    fmt = lambda row: "  ".join(  # noqa: E731
        c if (last_free and i == len(row) - 1) else c.ljust(widths[i])
        for i, c in enumerate(row)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), sep] + [fmt(r) for r in rows])


def counts(results) -> str:
    n = {s: sum(r.status == s for r in results) for s in (OK, FAIL, SKIP)}
    return f"{n[OK]} ok, {n[FAIL]} not ok, {n[SKIP]} skipped"


def summary(results, runtime: str) -> str:
    rows = [[r.name, _cell(r), r.reason] for r in results]
    return (f"# {runtime}: {counts(results)}\n"
            + _table(["case", "result", "reason"], rows))


def comparison(a, b, name_a: str, name_b: str) -> str:
    by_b = {r.name: r for r in b}
    rows = []
    for ra in a:
        rb = by_b[ra.name]
        reason = ra.reason if ra.status != OK else rb.reason
        if ra.status == FAIL and rb.status == OK:
            reason = f"REGRESSION: {ra.reason}"
        elif ra.reason and rb.reason and ra.reason != rb.reason and rb.status != OK:
            reason = f"A: {ra.reason} | B: {rb.reason}"
        rows.append([ra.name, _cell(ra), _cell(rb), reason])
    return (f"# A = {name_a}: {counts(a)}\n# B = {name_b}: {counts(b)}\n"
            + _table(["case", "A", "B", "reason"], rows))


def regressions(a, b) -> list[str]:
    """Cases A fails that B passes."""
    by_b = {r.name: r for r in b}
    return [r.name for r in a if r.status == FAIL and by_b[r.name].status == OK]


def write_json(path: str, runs: list[tuple[str, list]], host: dict) -> None:
    doc = {"host": host,
           "runs": [{"runtime": rt, "results": [r.to_json() for r in res]} for rt, res in runs]}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
