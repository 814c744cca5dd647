"""Small builders and parsers for image-spec documents: descriptor, manifest, index, config.

Documents are plain dicts; `dumps` gives the canonical bytes we store and hash (sorted keys,
no whitespace), so the same document always has the same digest.
"""
import json
import platform as _platform

from . import digest as _digest
from . import mediatypes as mt
from .errors import SpecError

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"

# Python's machine names -> GOARCH, which the image-spec platform uses.
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
           "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64", "mips64": "mips64"}


def host_platform() -> dict:
    arch = _GOARCH.get(_platform.machine(), _platform.machine())
    p = {"architecture": arch, "os": "linux"}
    if arch == "arm":
        p["variant"] = "v7" if _platform.machine() == "armv7l" else "v6"
    return p


def parse_platform(text: str) -> dict:
    """`linux/amd64`, `linux/arm64/v8` -> platform dict."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise SpecError("", f"invalid platform {text!r}: want os/arch[/variant]", source="platform")
    p = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        p["variant"] = parts[2]
    return p


def dumps(doc) -> bytes:
    """Canonical JSON bytes of a document (sorted keys, compact)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def descriptor(media_type: str, digest: str, size: int, *, annotations=None, platform=None,
               artifact_type=None, urls=None) -> dict:
    d = {"mediaType": media_type, "digest": digest, "size": size}
    if urls:
        d["urls"] = list(urls)
    if annotations:
        d["annotations"] = dict(annotations)
    if platform:
        d["platform"] = dict(platform)
    if artifact_type:
        d["artifactType"] = artifact_type
    return d


def descriptor_for(data: bytes, media_type: str, **kw) -> dict:
    """The descriptor of some bytes."""
    return descriptor(media_type, _digest.sha256_bytes(data), len(data), **kw)


def manifest(config: dict, layers, *, annotations=None, subject=None, artifact_type=None) -> dict:
    m = {"schemaVersion": 2, "mediaType": mt.IMAGE_MANIFEST, "config": dict(config),
         "layers": [dict(x) for x in layers]}
    if artifact_type:
        m["artifactType"] = artifact_type
    if subject:
        m["subject"] = dict(subject)
    if annotations:
        m["annotations"] = dict(annotations)
    return m


def index(manifests, *, annotations=None) -> dict:
    i = {"schemaVersion": 2, "mediaType": mt.IMAGE_INDEX, "manifests": [dict(x) for x in manifests]}
    if annotations:
        i["annotations"] = dict(annotations)
    return i


def image_config(*, diff_ids=(), config=None, history=None, created=None, author=None,
                 platform=None) -> dict:
    """An image config (config.md). `config` is the execution parameters (Env, Cmd, ...)."""
    p = platform or host_platform()
    c = {"architecture": p["architecture"], "os": p["os"]}
    if p.get("variant"):
        c["variant"] = p["variant"]
    if created:
        c["created"] = created
    if author:
        c["author"] = author
    c["config"] = dict(config or {})
    c["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    if history:
        c["history"] = [dict(h) for h in history]
    return c


def _load(data, source):
    if isinstance(data, (bytes, bytearray, str)):
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise SpecError("", f"invalid JSON: {e}", source=source) from None
    else:
        doc = data
    if not isinstance(doc, dict):
        raise SpecError("", "not a JSON object", source=source)
    return doc


def check_descriptor(d, path: str, source: str) -> dict:
    """SpecError unless `d` is a well-formed descriptor."""
    if not isinstance(d, dict):
        raise SpecError(path, "descriptor must be an object", source=source)
    mtype = d.get("mediaType")
    if not isinstance(mtype, str) or not mtype:
        raise SpecError(f"{path}.mediaType", "required string", source=source)
    dg = d.get("digest")
    if not isinstance(dg, str):
        raise SpecError(f"{path}.digest", "required string", source=source)
    try:
        _digest.parse(dg)
    except Exception as e:
        raise SpecError(f"{path}.digest", str(e), source=source) from None
    size = d.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise SpecError(f"{path}.size", "required non-negative integer", source=source)
    ann = d.get("annotations")
    if ann is not None and (not isinstance(ann, dict) or
                            not all(isinstance(v, str) for v in ann.values())):
        raise SpecError(f"{path}.annotations", "must map strings to strings", source=source)
    return d


def parse_manifest(data, *, source: str = "manifest") -> dict:
    """A manifest (OCI or Docker schema 2) from bytes or a dict, checked for shape."""
    m = _load(data, source)
    if m.get("schemaVersion") != 2:
        raise SpecError("schemaVersion", "must be 2", source=source)
    mtype = m.get("mediaType", mt.IMAGE_MANIFEST)
    if mtype not in mt.MANIFEST_TYPES:
        raise SpecError("mediaType", f"not a manifest media type: {mtype!r}", source=source)
    check_descriptor(m.get("config"), "config", source)
    layers = m.get("layers")
    if not isinstance(layers, list):
        raise SpecError("layers", "required array", source=source)
    for i, layer in enumerate(layers):
        check_descriptor(layer, f"layers[{i}]", source)
    return m


def parse_index(data, *, source: str = "index.json") -> dict:
    """An image index (or Docker manifest list) from bytes or a dict, checked for shape."""
    doc = _load(data, source)
    if doc.get("schemaVersion") != 2:
        raise SpecError("schemaVersion", "must be 2", source=source)
    mtype = doc.get("mediaType", mt.IMAGE_INDEX)
    if mtype not in mt.INDEX_TYPES:
        raise SpecError("mediaType", f"not an index media type: {mtype!r}", source=source)
    ms = doc.get("manifests")
    if not isinstance(ms, list):
        raise SpecError("manifests", "required array", source=source)
    for i, d in enumerate(ms):
        check_descriptor(d, f"manifests[{i}]", source)
    return doc


def parse_config(data, *, source: str = "image config") -> dict:
    """An image config from bytes or a dict, checked for the fields we rely on."""
    c = _load(data, source)
    for key in ("architecture", "os"):
        if not isinstance(c.get(key), str):
            raise SpecError(key, "required string", source=source)
    rootfs = c.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise SpecError("rootfs.type", 'must be "layers"', source=source)
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise SpecError("rootfs.diff_ids", "required array", source=source)
    for i, d in enumerate(diff_ids):
        if not _digest.is_valid(d):
            raise SpecError(f"rootfs.diff_ids[{i}]", f"invalid digest {d!r}", source=source)
    cfg = c.get("config")
    if cfg is not None and not isinstance(cfg, dict):
        raise SpecError("config", "must be an object", source=source)
    return c


def ref_name(desc: dict) -> str | None:
    return (desc.get("annotations") or {}).get(ANNOTATION_REF_NAME)
