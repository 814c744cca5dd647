"""A runtime-spec conformance suite that runs against any OCI runtime binary."""
