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


PULL_POLICIES = ("missing", "always", "never")


def resolve_base(store, ref: str, what: str, *, pull: str = "never", registry=None,
                 platform: dict | None = None) -> tuple[dict, dict, dict]:
    """(manifest descriptor, manifest, config) of a base image by name or layout reference.

    A name the store lacks is pulled with pull="missing"; "always" pulls it every time (once
    per build: `registry` is the build's PullContext) and "never" only looks in the store."""
    transport, _, _ = split_transport(ref)
    if transport:
        desc = import_image(store, ref, what)
    else:
        desc = None
        if pull != "always":
            from ..registry.names import store_candidates
            for name in store_candidates(ref):
                try:
                    desc = store.resolve(name)
                    break
                except OCIError:
                    continue
        if desc is None and pull == "never":
            raise OCIError(f"{what}: image {ref!r} is not in the local store",
                           hint="pull it, build it, or use --pull=missing")
        if desc is None:
            desc = registry.pull(store, ref, platform, what)
    man = store.manifest(desc)
    cfg = store.image_config(man)
    if len(cfg["rootfs"]["diff_ids"]) != len(man["layers"]):
        raise OCIError(f"{what}: image {ref}: config has {len(cfg['rootfs']['diff_ids'])} "
                       f"diff_ids for {len(man['layers'])} layers")
    return desc, man, cfg


class PullContext:
    """A build's registry settings and the images it pulled already (each name once)."""

    def __init__(self, options=None, progress_mode: str = "plain"):
        import threading
        self.options = options
        self.progress_mode = progress_mode
        self._done: dict = {}
        self._lock = threading.Lock()

    def pull(self, store, ref: str, platform, what: str) -> dict:
        import dataclasses
        from ..registry import client as _client
        from ..registry import progress as _progress
        from ..registry import transfer
        key = (ref, repr(platform))
        with self._lock:  # stages that FROM one image wait for one pull
            if key in self._done:
                return self._done[key]
            opts = dataclasses.replace(self.options or _client.Options(), platform=platform)
            pr = _progress.make(self.progress_mode, "pulling")
            try:
                _, desc = transfer.pull(store, ref, opts, pr)
            except OCIError as e:
                raise OCIError(f"{what}: {e}") from None
            finally:
                pr.close()
            self._done[key] = desc
            return desc
