"""Image trust: signatures (containers simple signing with OpenPGP, sigstore/cosign), the
containers-policy.json that decides which are required, and ocicrypt layer encryption.

Imported only by the commands that sign, verify or encrypt (push, pull, verify,
generate-key), never on the build or run paths.
"""
