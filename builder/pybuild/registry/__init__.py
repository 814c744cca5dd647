"""Registries: image names (names), credentials (auth), the HTTP API client (client), pull
and push (transfer), transfer progress (progress). Imported only by the commands that talk to
a registry, so pybuild's start-up does not pay for it."""
