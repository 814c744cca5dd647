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
        source_date_epoch=int(sde) if sde else None, add_limits=limits)
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


# -- containers: unpack, from, run, copy, config, commit, containers, mount, umount, rm ---------
# (pybuild.containers; the run-time options are shared by unpack and run)

def _run_options(*, env, tty, workdir, user, hostname, volume, read_only, memory, cpus,
                 pids_limit, network, publish):
    from .containers import network as _network
    from .containers import options as _options
    opts = _options.RunOptions(
        env=_options.parse_env(env), tty=tty, workdir=workdir, user=user, hostname=hostname,
        volumes=[_options.parse_volume(v) for v in volume], read_only=read_only,
        memory=_size(memory, "--memory") if memory else None, cpus=_options.parse_cpus(cpus),
        pids_limit=pids_limit, network=network, ports=[_network.parse_port(p) for p in publish])
    _options.check(opts)
    return opts


def _opt(default, *names, help):
    return typer.Option(default, *names, help=help)


_O_ENV = lambda: _opt([], "-e", "--env", help="K=V in the process environment (repeatable)")
_O_TTY = lambda: _opt(False, "-t", "--tty", help="give the process a terminal")
_O_WORKDIR = lambda: _opt(None, "-w", "--workdir", help="working directory in the container")
_O_USER = lambda: _opt(None, "-u", "--user", help="user[:group] (names from the image's /etc/passwd)")
_O_HOST = lambda: _opt(None, "--hostname", help="the container's hostname")
_O_VOL = lambda: _opt([], "-v", "--volume", help="SRC:DEST[:ro] bind mount (repeatable)")
_O_RO = lambda: _opt(False, "--read-only", help="mount the container's / read-only")
_O_MEM = lambda: _opt(None, "-m", "--memory", help="memory limit, e.g. 256M")
_O_CPUS = lambda: _opt(None, "--cpus", help="CPU limit, e.g. 0.5")
_O_PIDS = lambda: _opt(None, "--pids-limit", help="most processes (-1: no limit)")
_O_PORT = lambda: _opt([], "-p", "--publish",
                       help="[IP:]HOSTPORT:CTRPORT[/tcp|udp] (needs --network bridge; repeatable)")


def _container(store, ref):
    from .containers import records
    return records.find(store.root, ref)


@app.command()
def unpack(image: str = typer.Argument(...), bundle: str = typer.Argument(...),
           cmd: Optional[List[str]] = typer.Argument(None, help="command (replaces the image's Cmd)"),
           copy: bool = typer.Option(False, "--copy", help="a full copy of the image's files "
                                     "instead of an overlay of the store's layers"),
           name: Optional[str] = typer.Option(None, "--name", help="container name (overlay bundles "
                                              "are listed by `pybuild containers`)"),
           args: Optional[str] = typer.Option(None, "--args", help="command as one string (shell words)"),
           env: List[str] = _O_ENV(), tty: bool = _O_TTY(), workdir: Optional[str] = _O_WORKDIR(),
           user: Optional[str] = _O_USER(), hostname: Optional[str] = _O_HOST(),
           volume: List[str] = _O_VOL(), read_only: bool = _O_RO(), memory: Optional[str] = _O_MEM(),
           cpus: Optional[str] = _O_CPUS(), pids_limit: Optional[int] = _O_PIDS(),
           network: str = typer.Option("none", "--network", help="none (own namespace with lo) | "
                                       "host | bridge (CNI; -p publishes ports)"),
           publish: List[str] = _O_PORT()):
    """Unpack an image into a runtime bundle (rootfs + config.json): an overlay of the
    store's layers with a private upper dir, or a full copy with --copy."""
    import shlex
    from .image.unpack import unpack as _unpack
    opts = _run_options(env=env, tty=tty, workdir=workdir, user=user, hostname=hostname,
                        volume=volume, read_only=read_only, memory=memory, cpus=cpus,
                        pids_limit=pids_limit, network=network, publish=publish)
    if args is not None and cmd:
        raise OCIError("unpack: give the command with --args or after the bundle, not both")
    command = shlex.split(args) if args is not None else (list(cmd) if cmd else None)
    store = _store()
    try:
        _unpack(store, image, bundle, overlay=not copy, args=command, terminal=tty, opts=opts,
                record=not copy, name=name)
    except OSError as e:
        raise OCIError(f"unpack {image} into {bundle}: {e.strerror}: {e.filename or bundle}",
                       errno=e.errno) from None
    finally:
        store.close()


@app.command("from")
def from_(image: str = typer.Argument(..., help="image in the store"),
          name: Optional[str] = typer.Option(None, "--name", help="container name")):
    """Make a working container of an image; prints its name."""
    from .containers import working
    store = _store()
    try:
        typer.echo(working.create(store, image, name=name)["name"])
    finally:
        store.close()


@app.command("run")
def run_(container: str = typer.Argument(...),
         cmd: List[str] = typer.Argument(None, help="-- CMD ARGS..."),
         env: List[str] = _O_ENV(), tty: bool = _O_TTY(), workdir: Optional[str] = _O_WORKDIR(),
         user: Optional[str] = _O_USER(), hostname: Optional[str] = _O_HOST(),
         volume: List[str] = _O_VOL(), read_only: bool = _O_RO(), memory: Optional[str] = _O_MEM(),
         cpus: Optional[str] = _O_CPUS(), pids_limit: Optional[int] = _O_PIDS(),
         network: str = typer.Option("host", "--network", help="host (default, as buildah) | none | bridge"),
         publish: List[str] = _O_PORT(),
         runtime: str = typer.Option("pyrunc", "--runtime", help="OCI runtime (path or name)")):
    """Run a command in a working container; exits with its status."""
    from .containers import working
    opts = _run_options(env=env, tty=tty, workdir=workdir, user=user, hostname=hostname,
                        volume=volume, read_only=read_only, memory=memory, cpus=cpus,
                        pids_limit=pids_limit, network=network, publish=publish)
    store = _store()
    try:
        return working.run(store, _container(store, container), list(cmd or []), opts,
                           runtime=runtime)
    finally:
        store.close()


@app.command("copy")
def copy_(container: str = typer.Argument(...), src: str = typer.Argument(..., help="host path"),
          dest: str = typer.Argument(..., help="path in the container")):
    """Copy a host file or directory into a working container."""
    from .containers import working
    store = _store()
    try:
        working.copy_in(store, _container(store, container), src, dest)
    finally:
        store.close()


@app.command("config")
def config_(container: str = typer.Argument(...),
            env: List[str] = typer.Option([], "--env", "-e", help="K=V (repeatable)"),
            unset_env: List[str] = typer.Option([], "--unsetenv", help="remove K from Env"),
            cmd: Optional[str] = typer.Option(None, "--cmd", help='JSON array or a shell command ("" clears)'),
            entrypoint: Optional[str] = typer.Option(None, "--entrypoint", help='JSON array or a shell command ("" clears)'),
            workingdir: Optional[str] = typer.Option(None, "--workingdir", help="WorkingDir"),
            user: Optional[str] = typer.Option(None, "--user", help="User"),
            label: List[str] = typer.Option([], "--label", "-l", help="K=V (repeatable)"),
            unset_label: List[str] = typer.Option([], "--unsetlabel", help="remove a label"),
            port: List[str] = typer.Option([], "--port", "-p", help="PORT[/tcp|udp] to expose"),
            volume: List[str] = typer.Option([], "--volume", "-v", help="a VOLUME path"),
            stop_signal: Optional[str] = typer.Option(None, "--stop-signal", help="StopSignal"),
            author: Optional[str] = typer.Option(None, "--author", help="the image's author")):
    """Change the image config a working container's commit records."""
    from .containers import working
    store = _store()
    try:
        working.configure(store, _container(store, container), dict(
            env=env, unset_env=unset_env, cmd=cmd, entrypoint=entrypoint, workingdir=workingdir,
            user=user, label=label, unset_label=unset_label, port=port, volume=volume,
            stop_signal=stop_signal, author=author))
    finally:
        store.close()


@app.command("commit")
def commit_(container: str = typer.Argument(...), image: str = typer.Argument(..., help="NAME[:TAG]"),
            squash: bool = typer.Option(False, "--squash", help="one layer with the whole rootfs"),
            message: Optional[str] = typer.Option(None, "-m", "--message", help="history comment"),
            compression: str = typer.Option("gzip", "--compression", help="gzip|zstd"),
            rm: bool = typer.Option(False, "--rm", help="remove the container afterwards")):
    """Write a working container's changes as a new image (its image stays as it was)."""
    from .containers import commit as _commit
    from .containers import working
    if compression not in ("gzip", "zstd"):
        raise OCIError(f"--compression {compression!r}: want gzip or zstd")
    store = _store()
    try:
        rec = _container(store, container)
        desc = _commit.commit(store, rec, image, squash=squash, compression=compression,
                              message=message)
        if rm:
            working.remove(store, rec)
        typer.echo(desc["digest"])
    finally:
        store.close()


@app.command("containers")
def containers_(quiet: bool = typer.Option(False, "-q", "--quiet", help="names only"),
                json_: bool = typer.Option(False, "--json", help="the records as JSON")):
    """List working containers (and overlay bundles from `pybuild unpack`)."""
    import json
    from .containers import records, working
    recs = records.all_records(_store().root)
    if json_:
        typer.echo(json.dumps(recs, indent=1))
        return
    if not quiet:
        typer.echo("CONTAINER ID\tNAME\tIMAGE\tIMAGE DIGEST\tMOUNTED")
    for r in recs:
        if quiet:
            typer.echo(r["name"])
            continue
        m = working.rootfs(r) if working.is_mounted(r) else "-"
        typer.echo(f"{r['id'][:12]}\t{r['name']}\t{r['image']}\t{r['image_digest'][7:19]}\t{m}")


@app.command("mount")
def mount_(containers: List[str] = typer.Argument(None, help="containers (none: list the mounted)")):
    """Mount working containers' rootfs and print where."""
    from .containers import records, working
    store = _store()
    try:
        if not containers:
            for r in records.all_records(store.root):
                if working.is_mounted(r):
                    typer.echo(f"{r['name']}\t{working.rootfs(r)}")
            return
        for c in containers:
            typer.echo(working.mount(store, _container(store, c)))
    finally:
        store.close()


@app.command("umount")
def umount_(containers: List[str] = typer.Argument(..., help="containers")):
    """Unmount working containers' rootfs (the upper dir stays)."""
    from .containers import working
    store = _store()
    for c in containers:
        working.umount(_container(store, c))


@app.command("rm")
def rm_(containers: List[str] = typer.Argument(..., help="containers (names, ids or bundle dirs)")):
    """Remove working containers: unmount, drop their upper dir and record."""
    from .containers import working
    store = _store()
    try:
        for c in containers:
            rec = _container(store, c)
            working.remove(store, rec)
            typer.echo(rec["name"])
    finally:
        store.close()


@app.command("network-hook", hidden=True)
def network_hook(action: str = typer.Argument(...), netfile: str = typer.Argument(...)):
    """OCI hook (createRuntime: attach, poststop: detach) of a bundle with bridge networking."""
    from .containers import network
    network.hook_main(action, netfile)

# -- end of containers ---------------------------------------------------------------------------


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
