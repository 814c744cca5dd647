"""`python -m pybuild.dockerfile [--target T] [--build-arg K=V] [--platform P] FILE`

Prints the parse tree and the build plan as JSON: a debugging aid for the front end on
its own. Errors print as `FILE:LINE:COL: reason` and exit 1.
"""

from __future__ import annotations

import argparse
from .. import recordclass
import json
import sys

from ocispec.errors import OCIError

from . import parse, plan
from .parser import decode_text


def _data(obj):
    if recordclass.is_record(obj):
        out = {"kind": type(obj).__name__} if not hasattr(obj, "kind") else {}
        for f in recordclass.fields(obj):
            if f.name in ("flag_pos", "dockerfile", "stage"):
                continue
            out[f.name] = _data(getattr(obj, f.name))
        return out
    if isinstance(obj, (list, tuple)):
        return [_data(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _data(v) for k, v in obj.items()}
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pybuild.dockerfile", description=__doc__)
    ap.add_argument("file")
    ap.add_argument("--target")
    ap.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    ap.add_argument("--platform")
    a = ap.parse_args(argv)
    try:
        with open(a.file, "rb") as f:
            df = parse(decode_text(f.read(), a.file), filename=a.file)
        args = dict(kv.partition("=")[::2] for kv in a.build_arg)
        bp = plan(df, target=a.target, build_args=args, platform=a.platform)
    except (OCIError, OSError) as e:
        print(e, file=sys.stderr)
        return 1
    json.dump({"dockerfile": _data(df), "plan": {
        "stages": [_data(s) | {"instructions": len(s.stage.instructions)} for s in bp.stages],
        "levels": bp.levels, "images": bp.images, "platform": bp.platform,
        "build_platform": bp.build_platform, "warnings": bp.warnings}},
        sys.stdout, indent=1, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
