"""pyrunc: an OCI runtime with runc's command line."""

__version__ = "0.1.0"
