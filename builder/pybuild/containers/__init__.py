"""Working containers (buildah's half of the tool): an image plus one writable layer.

records  where each container is recorded in the store (ROOT/containers/<id>/container.json)
         and which images they use (rmi must refuse those)
working  from, mount, umount, copy, config, rm, list
commit   the writable layer (whiteouts and opaque dirs included) -> one new layer
options  run-time options (-e, -v, --memory, --network, -p, ...) -> config.json
network  bridge networking through the CNI plugins, attached by OCI hooks
"""
