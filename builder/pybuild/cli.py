"""pybuild's command line: a thin layer over pybuild.build.executor, store and unpack."""
import os
import sys
from typing import List, Optional

import typer

from ocispec.errors import OCIError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Build OCI images from Dockerfiles.")
_state = {"root": None}


@app.callback()
def _main(root: Optional[str] = typer.Option(None, "--root", envvar="PYBUILD_ROOT",
                                              help="store directory (default /var/lib/pybuild)")):
    _state["root"] = root


def _store():
    from .image.store import DEFAULT_ROOT, Store
    return Store(_state["root"] or DEFAULT_ROOT)


def _kv(values, flag: str) -> dict:
    out = {}
    for v in values or []:
        k, sep, val = v.partition("=")
        if not k:
            raise OCIError(f"{flag} {v!r}: want KEY=VALUE")
        if not sep:  # docker: --build-arg K takes K from the environment
            if k not in os.environ:
                continue
            val = os.environ[k]
        out[k] = val
    return out


def _secrets(values) -> dict:
    out = {}
    for v in values or []:
        fields = dict(f.partition("=")[::2] for f in v.split(","))
        sid = fields.get("id")
        src = fields.get("src") or fields.get("source")
        if not sid or not src:
            raise OCIError(f"--secret {v!r}: want id=ID,src=FILE")
        if not os.path.isfile(src):
            raise OCIError(f"--secret {v!r}: {src} is not a file")
        out[sid] = src
    return out


def _size(text: str, flag: str) -> int:
    """Bytes from `123`, `10K`, `500M`, `2G`, `1T` (powers of 1024; a trailing B or iB is fine)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = 1
    if t[-1:] in ("K", "M", "G", "T"):
        mult = 1 << (10 * ("KMGT".index(t[-1]) + 1))
        t = t[:-1]
    try:
        n = float(t)
    except ValueError:
        n = -1
    if not t or n < 0 or n != n or n * mult >= 1 << 63:
        raise OCIError(f"{flag} {text!r}: want a size in bytes such as 500M or 2G (0: no limit)")
    return int(n * mult)


def _seconds(value: float, flag: str) -> float:
    if not value >= 0 or value > 10 ** 9:
        raise OCIError(f"{flag} {value}: want a number of seconds (0: no limit)")
    return value


@app.command()
def build(
    context: str = typer.Argument(..., help="build context directory"),
    file: Optional[str] = typer.Option(None, "-f", "--file", help="Dockerfile (default CONTEXT/Dockerfile)"),
    tag: List[str] = typer.Option([], "-t", "--tag", help="name:tag for the image (repeatable)"),
    build_arg: List[str] = typer.Option([], "--build-arg", help="K=V (repeatable)"),
    target: Optional[str] = typer.Option(None, "--target", help="stage to build"),
    label: List[str] = typer.Option([], "--label", help="K=V label on the image (repeatable)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not use the layer cache"),
    platform: Optional[str] = typer.Option(None, "--platform", help="os/arch or os/arch/variant"),
    output: List[str] = typer.Option([], "-o", "--output",
                                     help="oci:DIR[:tag] | oci-archive:FILE[:tag] | docker-archive:FILE[:tag]"),
    progress: str = typer.Option("auto", "--progress", help="auto|plain|tty|quiet|json"),
    compression: str = typer.Option("gzip", "--compression", help="gzip|zstd"),
    runtime: str = typer.Option("pyrunc", "--runtime", help="OCI runtime for RUN (path or name)"),
    secret: List[str] = typer.Option([], "--secret", help="id=ID,src=FILE for RUN --mount=type=secret"),
    network: Optional[str] = typer.Option(None, "--network", help="default network for RUN: none|host|default"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="same as --progress quiet"),
    explain_cache: bool = typer.Option(False, "--explain-cache",
                                       help="print why each step missed the cache"),
    add_timeout: float = typer.Option(
        3600, "--add-timeout", envvar="PYBUILD_ADD_TIMEOUT", metavar="SECONDS",
        help="longest an ADD <URL> download may take, in seconds (0: no limit)"),
    add_idle_timeout: float = typer.Option(
        60, "--add-idle-timeout", envvar="PYBUILD_ADD_IDLE_TIMEOUT", metavar="SECONDS",
        help="an ADD <URL> download fails when the server sends nothing for this long (0: no limit)"),
    add_max_size: str = typer.Option(
        "0", "--add-max-size", envvar="PYBUILD_ADD_MAX_SIZE", metavar="SIZE",
        help="largest download, or unpacked archive content, one ADD may bring in, "
             "e.g. 500M or 2G (0: no limit)"),
):
    """Build an image from a Dockerfile and a context directory."""
    from . import progress as _progress
    from .build.executor import BuildOptions, Builder
    if progress not in ("auto", "plain", "tty", "quiet", "json"):
        raise OCIError(f"--progress {progress!r}: want auto, plain, quiet or json")
    if compression not in ("gzip", "zstd"):
        raise OCIError(f"--compression {compression!r}: want gzip or zstd")
    from .build.copy import AddLimits
    limits = AddLimits(timeout=_seconds(add_timeout, "--add-timeout"),
                       idle_timeout=_seconds(add_idle_timeout, "--add-idle-timeout"),
                       max_size=_size(add_max_size, "--add-max-size"))
    from .image.export import parse_output
    for o in output:
        parse_output(o)
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    if sde is not None and not sde.isdigit():
        raise OCIError(f"SOURCE_DATE_EPOCH={sde!r}: want seconds since the epoch")
    opts = BuildOptions(
        context=os.path.abspath(context), dockerfile=os.path.abspath(file) if file else None,
        tags=list(tag), build_args=_kv(build_arg, "--build-arg"), target=target,
        labels=_kv(label, "--label"), no_cache=no_cache, platform=platform, outputs=list(output),
        compression=compression, runtime=runtime, secrets=_secrets(secret), network=network,
        source_date_epoch=int(sde) if sde else None, add_limits=limits,
        explain_cache=explain_cache)
    pr = _progress.make("quiet" if quiet else progress)
    store = _store()
    try:
        Builder(store, opts, pr).build()
    finally:
        pr.close()
        store.close()


@app.command()
def images():
    """List the images in the store."""
    store = _store()
    for name, desc in store.list_images():
        typer.echo(f"{name}\t{desc['digest']}\t{desc.get('size', 0)}")


@app.command()
def rmi(names: List[str] = typer.Argument(..., help="image name[:tag]")):
    """Remove image references (blobs stay until garbage collection)."""
    store = _store()
    for n in names:
        store.delete(n)
        typer.echo(f"untagged {n}")


@app.command()
def unpack(image: str = typer.Argument(...), bundle: str = typer.Argument(...)):
    """Unpack an image into a runtime bundle (rootfs + config.json)."""
    from .image.unpack import unpack as _unpack
    store = _store()
    try:
        _unpack(store, image, bundle)
    except OSError as e:
        raise OCIError(f"unpack {image} into {bundle}: {e.strerror}: {e.filename or bundle}",
                       errno=e.errno) from None
    finally:
        store.close()


@app.command()
def prune():
    """Remove what killed or crashed pybuild processes left in the store: their RUN
    containers, overlay mounts, scratch dirs and temp files. Live builds are not touched."""
    from .build.session import prune as _prune
    for what in _prune(_store().root):
        typer.echo(f"removed {what}")


def main(argv=None) -> int:
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int) and rv:  # typer returns Exit codes (130 on Ctrl-C) here
            if rv == 130:
                print("interrupted", file=sys.stderr)
            return rv
    except OCIError as e:
        print(str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pybuild: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except Exception as e:  # usage errors of typer's (vendored) click
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            return e.exit_code or 1
        if type(e).__name__ == "Abort":
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
