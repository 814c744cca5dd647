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
    pull: str = typer.Option("missing", "--pull", metavar="POLICY",
                             help="pull FROM images: missing (when not in the store), always, never"),
    tls_verify: str = typer.Option("true", "--tls-verify", metavar="BOOL",
                                   help="verify registries' TLS certificates (default true)"),
    cert_dir: Optional[str] = typer.Option(None, "--cert-dir", help="directory of CA *.crt files for registries"),
    authfile: Optional[str] = typer.Option(None, "--authfile", help="registry credentials file"),
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
        **_build_pull_options(pull, tls_verify, cert_dir, authfile, "quiet" if quiet else progress))
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


# -- registries: pull, push, login, logout (pybuild.registry, imported only here) -----------

def _pull_policy(value: str) -> str:
    v = {"true": "always", "false": "missing"}.get(value.lower(), value.lower())
    if v not in ("missing", "always", "never"):
        raise OCIError(f"--pull {value!r}: want missing, always or never")
    return v


def _registry_options(tls_verify: str, cert_dir, authfile, creds=None, platform=None):
    from .registry.client import Options, parse_bool
    if cert_dir and not os.path.isdir(cert_dir):
        raise OCIError(f"--cert-dir {cert_dir}: not a directory")
    cred = None
    if creds is not None:
        from .registry.auth import Credentials
        user, sep, pw = creds.partition(":")
        if not user:
            raise OCIError("--creds: want USER[:PASSWORD]")
        if not sep:
            import getpass
            pw = getpass.getpass("Password: ")
        cred = Credentials(user, pw, "--creds")
    plat = None
    if platform:
        from ocispec import image as _image
        plat = _image.parse_platform(platform)
    return Options(tls_verify=parse_bool(tls_verify, "--tls-verify"), cert_dir=cert_dir,
                   authfile=authfile, creds=cred, platform=plat)


def _build_pull_options(pull, tls_verify, cert_dir, authfile, progress_mode) -> dict:
    from .image.images import PullContext
    mode = {"tty": "plain", "auto": "plain"}.get(progress_mode, progress_mode)
    return {"pull": _pull_policy(pull),
            "registry": PullContext(_registry_options(tls_verify, cert_dir, authfile), mode)}


def _transfer(progress: str, quiet: bool, verb: str, run) -> None:
    """run(store, progress) -> (name, digest), with the progress shown and the store closed."""
    if progress not in ("auto", "plain", "tty", "quiet", "json"):
        raise OCIError(f"--progress {progress!r}: want auto, plain, tty, quiet or json")
    from .registry import progress as _progress
    pr = _progress.make("quiet" if quiet else progress, verb)
    store = _store()
    try:
        pr.result(*run(store, pr))
    finally:
        pr.close()
        store.close()


_TLS_HELP = "verify TLS certificates (true|false; false also allows plain HTTP)"


@app.command()
def pull(
    image: str = typer.Argument(..., help="NAME[:TAG|@DIGEST], e.g. busybox or host:5000/app:1"),
    platform: Optional[str] = typer.Option(None, "--platform", help="os/arch or os/arch/variant (default: this host's)"),
    tls_verify: str = typer.Option("true", "--tls-verify", metavar="BOOL", help=_TLS_HELP),
    cert_dir: Optional[str] = typer.Option(None, "--cert-dir", help="directory of CA *.crt files"),
    authfile: Optional[str] = typer.Option(None, "--authfile", help="credentials file (auth.json)"),
    creds: Optional[str] = typer.Option(None, "--creds", help="USER[:PASSWORD] for the registry"),
    progress: str = typer.Option("auto", "--progress", help="auto|plain|tty|quiet|json"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="print only the manifest digest"),
):
    """Pull an image from a registry into the store (under its fully qualified name)."""
    from .registry import transfer
    opts = _registry_options(tls_verify, cert_dir, authfile, creds, platform)

    def run(store, pr):
        name, desc = transfer.pull(store, image, opts, pr)
        return name, desc["digest"]
    _transfer(progress, quiet, "pulling", run)


@app.command()
def push(
    image: str = typer.Argument(..., help="image in the store"),
    dest: Optional[str] = typer.Argument(None, help="HOST[:PORT]/NAME[:TAG], docker:// optional (default: IMAGE)"),
    tls_verify: str = typer.Option("true", "--tls-verify", metavar="BOOL", help=_TLS_HELP),
    cert_dir: Optional[str] = typer.Option(None, "--cert-dir", help="directory of CA *.crt files"),
    authfile: Optional[str] = typer.Option(None, "--authfile", help="credentials file (auth.json)"),
    creds: Optional[str] = typer.Option(None, "--creds", help="USER[:PASSWORD] for the registry"),
    progress: str = typer.Option("auto", "--progress", help="auto|plain|tty|quiet|json"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="print only the manifest digest"),
):
    """Push an image from the store to a registry; its manifest digest stays the same."""
    from .registry import transfer
    opts = _registry_options(tls_verify, cert_dir, authfile, creds)
    _transfer(progress, quiet, "pushing", lambda store, pr: transfer.push(store, image, dest, opts, pr))


def _registry_key(server: str) -> str:
    """`https://host:5000/` or `host:5000` -> `host:5000`; `docker.io` and friends alike."""
    from .registry.auth import _norm_key
    key = _norm_key(server.strip())
    if not key or any(c.isspace() for c in key):
        raise OCIError(f"invalid registry {server!r}: want HOST[:PORT]")
    return key


@app.command()
def login(
    registry: str = typer.Argument(..., help="HOST[:PORT] of the registry"),
    username: Optional[str] = typer.Option(None, "-u", "--username"),
    password: Optional[str] = typer.Option(None, "-p", "--password",
                                           help="(visible in ps; prefer --password-stdin)"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin"),
    tls_verify: str = typer.Option("true", "--tls-verify", metavar="BOOL", help=_TLS_HELP),
    cert_dir: Optional[str] = typer.Option(None, "--cert-dir", help="directory of CA *.crt files"),
    authfile: Optional[str] = typer.Option(None, "--authfile",
                                           help="where to save (default $REGISTRY_AUTH_FILE, else "
                                                "$XDG_RUNTIME_DIR/containers/auth.json)"),
):
    """Check credentials with the registry and save them (as podman login does)."""
    from .registry import auth as _auth
    from .registry.client import Client
    from .registry.names import DOCKER_HUB, DOCKER_HUB_API
    key = _registry_key(registry)
    if password_stdin and password is not None:
        raise OCIError("--password and --password-stdin: give one")
    if not username:
        if not sys.stdin.isatty() or password_stdin:
            raise OCIError("login: want a user name (-u USER)")
        username = input("Username: ").strip()
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif password is None:
        import getpass
        password = getpass.getpass("Password: ")
    if not password:
        raise OCIError("login: empty password")
    cred = _auth.Credentials(username, password, "login")
    opts = _registry_options(tls_verify, cert_dir, authfile)
    opts.creds = cred
    host = key.split("/", 1)[0]
    client = Client(DOCKER_HUB_API if host == DOCKER_HUB else host, opts, display=host)
    try:
        client.login(key)
    finally:
        client.close()
    _auth.save(key, cred, authfile)
    typer.echo("Login Succeeded!")


@app.command()
def logout(
    registry: Optional[str] = typer.Argument(None, help="HOST[:PORT] of the registry"),
    all_: bool = typer.Option(False, "-a", "--all", help="forget every registry's credentials"),
    authfile: Optional[str] = typer.Option(None, "--authfile", help="credentials file"),
):
    """Forget the credentials `pybuild login` saved for a registry."""
    from .registry import auth as _auth
    if all_ == bool(registry):
        raise OCIError("logout: give a registry or --all")
    key = None if all_ else _registry_key(registry)
    if not _auth.remove(key, authfile):
        if all_:
            typer.echo("Not logged in anywhere")
            return
        raise OCIError(f"not logged into {key} (in {authfile or _auth.default_authfile()})")
    typer.echo("Removed login credentials" + (f" for {key}" if key else " for all registries"))


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
