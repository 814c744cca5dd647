"""Validating documents against the JSON Schemas in ocispec/schemas/.

The schema files are ours, written from the runtime-spec and image-spec. Where a field takes
names from ocispec.tables, the schema says `"x-ocispec-enum": "TABLE"` and we add the table's
names as the enum on load, so the lists live in one place. jsonschema is imported on first
use only: tests and pybuild validate with it; pyrunc's hot path uses runtime_config instead.
"""
import functools
import json
import os

from . import tables
from .errors import SpecError

KINDS = ("config", "state", "features", "descriptor", "manifest", "index", "image-config",
         "oci-layout")
_DIR = os.path.join(os.path.dirname(__file__), "schemas")
ALIASES = {"image_config": "image-config", "imageConfig": "image-config", "layout": "oci-layout",
           "image-manifest": "manifest", "image-index": "index", "runtime-config": "config"}


def schema_path(kind: str) -> str:
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"unknown document kind {kind!r}: want one of {', '.join(KINDS)}")
    return os.path.join(_DIR, f"{kind}.json")


def _fill_enums(node):
    if isinstance(node, dict):
        table = node.get("x-ocispec-enum")
        if table is not None:
            node["enum"] = list(getattr(tables, table))
        for v in node.values():
            _fill_enums(v)
    elif isinstance(node, list):
        for v in node:
            _fill_enums(v)


@functools.lru_cache(maxsize=None)
def load_schema(kind: str) -> dict:
    """The schema for `kind` (one of KINDS), with table enums filled in."""
    with open(schema_path(kind)) as f:
        doc = json.load(f)
    _fill_enums(doc)
    return doc


@functools.lru_cache(maxsize=None)
def _validator(kind: str):
    import jsonschema
    schema = load_schema(kind)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def json_path(parts) -> str:
    """['process', 'rlimits', 2, 'type'] -> 'process.rlimits[2].type'."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _message(err) -> str:
    table = err.schema.get("x-ocispec-enum") if isinstance(err.schema, dict) else None
    if err.validator == "enum" and table:
        return f"unknown {table.lower().replace('_', ' ')} name {json.dumps(err.instance)}"
    return err.message


def iter_errors(doc, kind: str):
    """Every schema violation as (json_path, message), deepest-first order of the document."""
    errs = sorted(_validator(ALIASES.get(kind, kind)).iter_errors(doc), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    for e in errs:
        yield json_path(e.absolute_path), _message(e)


def validate_document(doc, kind: str, *, source: str | None = None) -> None:
    """SpecError naming the JSON path of the first violation of `kind`'s schema."""
    import jsonschema
    kind = ALIASES.get(kind, kind)
    err = jsonschema.exceptions.best_match(_validator(kind).iter_errors(doc))
    if err is not None:
        raise SpecError(json_path(err.absolute_path), _message(err),
                        source=source or ("config.json" if kind == "config" else kind))
