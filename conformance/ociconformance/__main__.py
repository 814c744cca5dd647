"""oci-conformance: run the runtime-spec conformance cases against runtime binaries.

    oci-conformance --runtime PATH [--root DIR] [--timeout S] [--json FILE] [CASE...]
    oci-conformance --compare PATH_A PATH_B [...]

Prints TAP as cases end, then a summary table. Exit status: 1 when a case fails (with
--compare: when A fails a case B passes), 2 on a usage error.
"""

import argparse
import os
import shutil
import sys

from . import host, report, runner
from .registry import all_cases


def _resolve(p: argparse.ArgumentParser, path: str) -> str:
    found = shutil.which(path) if os.sep not in path else path
    if not found or not os.access(found, os.X_OK) or os.path.isdir(found):
        p.error(f"runtime {path!r} is not an executable")
    return os.path.abspath(found)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="oci-conformance", description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--runtime", metavar="PATH", help="runtime binary with runc's CLI")
    g.add_argument("--compare", nargs=2, metavar=("PATH_A", "PATH_B"),
                   help="run both; fail when A fails a case that B passes")
    g.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--root", metavar="DIR",
                   help="directory for the cases' bundles and state (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="time limit per case in seconds (default 30)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("cases", nargs="*", metavar="CASE", help="case names (default: all)")
    args = p.parse_args(argv)

    known = all_cases()
    if args.list:
        for c in known.values():
            print(f"{c.name}: {c.description}")
        return 0
    unknown = [n for n in args.cases if n not in known]
    if unknown:
        p.error(f"unknown case(s): {', '.join(unknown)} (see --list)")
    cases = [known[n] for n in args.cases] if args.cases else list(known.values())
    if os.geteuid() != 0:
        p.error("the cases create containers and cgroups: run as root")
    if args.root:
        os.makedirs(args.root, exist_ok=True)

    runtimes = [_resolve(p, r) for r in (args.compare or [args.runtime])]
    runs = []
    for rt in runtimes:
        print(f"# runtime: {rt}")
        print(f"1..{len(cases)}", flush=True)
        results = runner.run(cases, rt, args.timeout, workroot=args.root,
                             on_result=lambda i, r: print(report.tap_line(i, r), flush=True))
        runs.append((rt, results))
    print()
    if args.compare:
        (a, ra), (b, rb) = runs
        print(report.comparison(ra, rb, a, b))
        bad = report.regressions(ra, rb)
        if bad:
            print(f"# A fails {len(bad)} case(s) that B passes: {', '.join(bad)}")
    else:
        print(report.summary(runs[0][1], runs[0][0]))
        bad = [r.name for r in runs[0][1] if r.status == runner.FAIL]
    if args.json:
        report.write_json(args.json, runs, host.summary())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
