"""Base images for FROM / COPY --from: the local store, `oci:DIR[:tag]`, `oci-archive:FILE[:tag]`.

Images from a layout are imported into the store first (pybuild.image.layout), so every later
step reads one place.
"""
from ocispec.errors import OCIError


def split_transport(ref: str) -> tuple[str, str, str | None]:
    """`oci:DIR:tag` -> ("oci", DIR, tag); a plain name -> ("", name, None)."""
    for t in ("oci-archive", "oci"):
        if ref.startswith(t + ":"):
            rest = ref[len(t) + 1:]
            path, sep, tag = rest.rpartition(":")
            if sep and "/" not in tag and path:
                return t, path, tag
            return t, rest, None
    return "", ref, None


def import_image(store, ref: str, what: str) -> dict:
    """Import `oci:DIR[:tag]` / `oci-archive:FILE[:tag]` into the store; its manifest descriptor."""
    from .layout import import_image as _import
    try:
        return _import(store, ref)
    except OCIError as e:
        raise OCIError(f"{what}: {e}") from None
    except OSError as e:
        raise OCIError(f"{what}: {e.filename or ref}: {e.strerror}") from None


def resolve_base(store, ref: str, what: str) -> tuple[dict, dict, dict]:
    """(manifest descriptor, manifest, config) of a base image by name or layout reference."""
    transport, _, _ = split_transport(ref)
    if transport:
        desc = import_image(store, ref, what)
    else:
        try:
            desc = store.resolve(ref)
        except OCIError:
            raise OCIError(f"{what}: image {ref!r} is not in the local store and registry pulls "
                           f"are not supported yet", hint="use oci:DIR:tag or build it first") from None
    man = store.manifest(desc)
    cfg = store.image_config(man)
    if len(cfg["rootfs"]["diff_ids"]) != len(man["layers"]):
        raise OCIError(f"{what}: image {ref}: config has {len(cfg['rootfs']['diff_ids'])} "
                       f"diff_ids for {len(man['layers'])} layers")
    return desc, man, cfg
