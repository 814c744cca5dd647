"""Reading a bundle: config.json parsed, validated and checked against the host.

Nothing touches the kernel before the whole config is known to be valid.
"""

from . import oslite as os

from ocispec import fastjson as json
from ocispec.errors import OCIError, SpecError


def load_bundle(bundle: str) -> tuple[str, dict, str]:
    """(absolute bundle dir, config dict, absolute rootfs path)."""
    bundle = os.path.abspath(bundle or ".")
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if not os.path.isdir(bundle):
            raise OCIError(f"bundle {bundle}: no such directory") from None
        raise OCIError(f"{path}: no such file (is {bundle} an OCI bundle?)") from None
    except OSError as e:
        raise OCIError(f"{path}: {e.strerror}") from None
    try:
        cfg = json.loads(raw)
    except ValueError as e:
        raise OCIError(f"{path}: invalid JSON: {e}") from None
    validate(cfg, path)
    root = (cfg.get("root") or {}).get("path")
    rootfs = root if os.path.isabs(root) else os.path.join(bundle, root)
    rootfs = os.path.realpath(rootfs)
    if not os.path.isdir(rootfs):
        raise SpecError("root.path", f"{rootfs}: no such directory", source=path)
    return bundle, cfg, rootfs


def validate(cfg, source: str) -> None:
    if not isinstance(cfg, dict):
        raise SpecError("", "must be a JSON object", source=source)
    from ocispec.runtime_config import validate_config

    validate_config(cfg, source=source)
