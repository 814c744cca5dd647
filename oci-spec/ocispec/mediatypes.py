"""Media types of the OCI image-spec (1.1) and the Docker formats it grew from."""

IMAGE_LAYOUT_FILE = "oci-layout"
IMAGE_LAYOUT_VERSION = "1.0.0"
IMAGE_INDEX_FILE = "index.json"

IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IMAGE_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# The empty JSON object `{}` (image-spec "Guidance for an empty descriptor").
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY_JSON_SIZE = 2

LAYER_TYPES = frozenset({
    LAYER_TAR, LAYER_GZIP, LAYER_ZSTD, LAYER_NONDIST_TAR, LAYER_NONDIST_GZIP,
    LAYER_NONDIST_ZSTD, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_LAYER_FOREIGN_GZIP,
})
MANIFEST_TYPES = frozenset({IMAGE_MANIFEST, DOCKER_MANIFEST_V2})
INDEX_TYPES = frozenset({IMAGE_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({IMAGE_CONFIG, DOCKER_CONFIG})

# Layer compression by media type: None (plain tar), "gzip" or "zstd".
_COMPRESSION = {
    LAYER_TAR: None, LAYER_NONDIST_TAR: None, DOCKER_LAYER_TAR: None,
    LAYER_GZIP: "gzip", LAYER_NONDIST_GZIP: "gzip", DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN_GZIP: "gzip",
    LAYER_ZSTD: "zstd", LAYER_NONDIST_ZSTD: "zstd",
}


def layer_compression(media_type: str) -> str | None:
    """The compression a layer media type declares; OCIError for a non-layer type."""
    try:
        return _COMPRESSION[media_type]
    except KeyError:
        from .errors import OCIError
        raise OCIError(f"{media_type!r} is not a layer media type") from None


def layer_media_type(compression: str | None) -> str:
    """The OCI layer media type for a compression: None, "gzip" or "zstd"."""
    return {None: LAYER_TAR, "gzip": LAYER_GZIP, "zstd": LAYER_ZSTD}[compression]
