"""`--output` of a build: oci:DIR[:tag], oci-archive:FILE[:tag], docker-archive:FILE[:name:tag].

The formats are pybuild.image.layout's; this only picks the reference a build's -t implies when
the output names none.
"""
from .layout import (_tag_of, parse_destination, write_docker_archive, write_oci_archive,
                     write_oci_layout)


def parse_output(spec: str) -> tuple[str, str, str | None]:
    return parse_destination(spec)


def export(store, desc: dict, spec: str, tags=()) -> None:
    kind, path, ref = parse_destination(spec)
    first = tags[0] if tags else None
    if kind == "oci":
        write_oci_layout(store, desc, path, ref or _tag_of(first))
    elif kind == "oci-archive":
        write_oci_archive(store, desc, path, ref or _tag_of(first))
    else:
        write_docker_archive(store, desc, path, ref or first)
