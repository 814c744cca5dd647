"""pybuild: Dockerfiles to OCI images."""

__version__ = "0.1.0"
