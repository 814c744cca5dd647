"""The OCI specifications, shared by pyrunc and pybuild.

This package is the one place that knows the runtime-spec and image-spec: schemas,
media types, digests, validation and the tables of names (capabilities, rlimits,
namespaces, mount options, seccomp actions) that both validation and `features` use.
Modules here import only the standard library on import, so pyrunc's start-up stays lean.
"""
