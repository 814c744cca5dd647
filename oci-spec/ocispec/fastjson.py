"""JSON for pyrunc's start-up path, on the C accelerator alone.

`import json` pulls in re, enum and the json package's Python layers: about 4-8 ms of CPU
on every pyrunc command, more than the rest of `pyrunc state` costs. The C parts of
CPython's json (_json.make_scanner, _json.encode_basestring_ascii) do the real work without
them. Output equals json.dumps's for the documents we write; invalid input raises the same
json.JSONDecodeError (json.decoder is imported then, on the error path only).
"""

import _json

_WS = " \t\n\r"


class _Context:
    # The attributes _json.make_scanner reads from a json.JSONDecoder.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name):
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


_scan = _json.make_scanner(_Context())


def _error(msg: str, doc: str, pos: int):
    from json.decoder import JSONDecodeError

    return JSONDecodeError(msg, doc, pos)


def loads(s):
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("utf-8")
    n = len(s)
    i = 0
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _scan(s, i)
    except StopIteration as e:
        raise _error("Expecting value", s, e.value) from None
    except SystemError:
        # CPython 3.11's scanner builds its error from json.decoder only when that module is
        # already loaded; let the json package parse again and raise the real error.
        import json

        json.loads(s)
        raise
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        raise _error("Extra data", s, end)
    return obj


_esc = _json.encode_basestring_ascii


def _scalar(o) -> str:
    if isinstance(o, str):
        return _esc(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, int):
        return int.__repr__(o)
    if isinstance(o, float):
        if o != o:
            return "NaN"
        if o in (float("inf"), float("-inf")):
            return "Infinity" if o > 0 else "-Infinity"
        return float.__repr__(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def dumps(o, indent: int | str | None = None) -> str:
    """json.dumps(o) (compact separators when indent is None) or json.dumps(o, indent=indent)."""
    if indent is None:
        return _compact(o)
    pad = indent if isinstance(indent, str) else " " * indent
    out: list[str] = []
    _pretty(o, pad, "", out)
    return "".join(out)


def _compact(o) -> str:
    if isinstance(o, dict):
        return "{" + ",".join(_esc(str(k)) + ":" + _compact(v) for k, v in o.items()) + "}"
    if isinstance(o, (list, tuple)):
        return "[" + ",".join(_compact(v) for v in o) + "]"
    return _scalar(o)


def _pretty(o, pad: str, cur: str, out: list) -> None:
    if isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        inner = cur + pad
        out.append("{")
        first = True
        for k, v in o.items():
            out.append(("\n" if first else ",\n") + inner + _esc(str(k)) + ": ")
            first = False
            _pretty(v, pad, inner, out)
        out.append("\n" + cur + "}")
    elif isinstance(o, (list, tuple)):
        if not o:
            out.append("[]")
            return
        inner = cur + pad
        out.append("[")
        for i, v in enumerate(o):
            out.append(("\n" if i == 0 else ",\n") + inner)
            _pretty(v, pad, inner, out)
        out.append("\n" + cur + "]")
    else:
        out.append(_scalar(o))
