"""pybuild's typer app: every command but the usual `build` command line, which
pybuild.cli runs without importing typer (pybuild.buildcmd)."""
import contextlib
import errno
import json
import os
import sys
from typing import List, Optional

import typer

from ocispec.errors import OCIError

from . import buildcmd
from .buildcmd import _kv, _pull_policy, _registry_options, _seconds, _secrets, _size  # noqa: F401

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


def _build_command():
    """`build` from buildcmd.FLAGS: the same flags the fast path in pybuild.cli parses."""
    import inspect
    kinds = {"str": str, "opt": Optional[str], "list": List[str], "bool": bool, "float": float}
    P = inspect.Parameter
    params = [P("context", P.POSITIONAL_OR_KEYWORD, annotation=str,
                default=typer.Argument(..., help=buildcmd.CONTEXT_HELP))]
    for f in buildcmd.FLAGS:
        extra = {k: v for k, v in (("envvar", f.envvar), ("metavar", f.metavar)) if v}
        params.append(P(f.name, P.POSITIONAL_OR_KEYWORD, annotation=kinds[f.kind],
                        default=typer.Option(f.default, *f.decls, help=f.help, **extra)))

    def build(**kw):
        buildcmd.run(_state["root"], **kw)
    build.__doc__ = buildcmd.HELP
    build.__signature__ = inspect.Signature(params)
    build.__annotations__ = {p.name: p.annotation for p in params}
    app.command("build")(build)


_build_command()


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


# -- the store: images, tag, rmi, inspect, history, import, save, load, prune, gc, fsck -----
# Each command opens the store, does one thing through pybuild.image.{images,gc,fsck,layout}
# and closes it (a closed store no longer holds the use lock a gc waits for).

@contextlib.contextmanager
def _opened(what: str):
    """The store, closed afterwards; an OSError becomes a one-line error naming `what`."""
    store = _store()
    try:
        yield store
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno == errno.ENOSPC:
            reason += " (free space on the store's filesystem, or run `pybuild prune`)"
        raise OCIError(f"{what}: {reason}" + (f": {e.filename}" if e.filename else ""),
                       errno=e.errno) from None
    finally:
        store.close()


def _ago(created) -> str:
    """RFC 3339 -> "3 hours ago", as docker's table shows it."""
    import datetime
    if not created:
        return "N/A"
    try:
        t = datetime.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except ValueError:
        return str(created)
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    secs = (datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()
    if secs < 0:
        return "in the future"
    for unit, n in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400),
                    ("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= n * (2 if unit != "minute" else 1):
            k = int(secs // n)
            return f"{k} {unit}{'s' if k != 1 else ''} ago"
    return "Less than a minute ago" if secs >= 1 else "Less than a second ago"


def _human(n: int) -> str:
    """Bytes as docker shows them (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{n}B"
        n /= 1000
    return f"{n}B"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise OCIError(f"--format {fmt!r}: want table or json")


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


@app.command()
def images(
    fmt: str = typer.Option("table", "--format", help="table|json"),
    digests: bool = typer.Option(False, "--digests", help="show the manifest digests"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="only image IDs"),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="full image IDs"),
):
    """List the images in the store (IMAGE ID is the config digest, as docker's)."""
    from .image.images import list_rows
    _check_format(fmt)
    with _opened("images") as store:
        rows = list_rows(store)
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if quiet:
        for i in dict.fromkeys(r["Id"] if no_trunc else _short(r["Id"]) for r in rows):
            typer.echo(i)
        return
    head = ["REPOSITORY", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "CREATED", "SIZE"]
    out = [head]
    for r in rows:
        out.append([r["Repository"], r["Tag"], *([r["Digest"]] if digests else []),
                    r["Id"] if no_trunc else _short(r["Id"]), _ago(r["Created"]), _human(r["Size"])])
    _table(out)


@app.command()
def tag(source: str = typer.Argument(..., help="image name, ID or digest"),
        target: List[str] = typer.Argument(..., help="new name[:tag] (one or more)")):
    """Give an image another name."""
    from .image.images import lookup
    with _opened("tag") as store:
        desc, _ = lookup(store, source)
        for t in target:
            store.tag(t, desc)


@app.command()
def rmi(names: List[str] = typer.Argument(..., help="image name[:tag], ID or digest"),
        force: bool = typer.Option(False, "-f", "--force",
                                   help="untag an image a container uses, or every tag of an ID")):
    """Remove images and the data only they used.

    Untags, then deletes the blobs, extracted layers and cache entries only that image used. An image a container uses is refused (--force untags it; its data
    stays while the container does)."""
    from .image.gc import remove_image
    failed = 0
    with _opened("rmi") as store:
        for n in names:
            try:
                r = remove_image(store, n, force=force)
            except OCIError as e:
                print(f"rmi {n}: {e}", file=sys.stderr)
                failed += 1
                continue
            for t in r.untagged:
                typer.echo(f"Untagged: {t}")
            if r.freed is not None:
                for dg, _ in r.freed.blobs:
                    typer.echo(f"Deleted: {dg}")
                for did, _ in r.freed.layers:
                    typer.echo(f"Deleted extracted layer: {did}")
                typer.echo(f"Freed {_human(r.freed.bytes)}")
            elif r.busy:
                typer.echo("its data is freed by `pybuild gc` once the other pybuild processes "
                           "using the store are done")
    if failed:
        raise typer.Exit(1)


def _dump(doc) -> None:
    typer.echo(json.dumps(doc, indent=2))


@app.command()
def inspect(names: List[str] = typer.Argument(..., help="image name, ID or digest")):
    """Show images as JSON: IDs, tags, manifest, config and history (docker's shape: a list)."""
    from .image.images import inspect as _inspect
    with _opened("inspect") as store:
        out = [_inspect(store, n) for n in names]
    _dump(out)


@app.command()
def history(name: str = typer.Argument(..., help="image name, ID or digest"),
            fmt: str = typer.Option("table", "--format", help="table|json"),
            no_trunc: bool = typer.Option(False, "--no-trunc", help="do not shorten CREATED BY"),
            quiet: bool = typer.Option(False, "-q", "--quiet", help="only the IDs")):
    """Show the steps that made an image, newest first (SIZE: the layer's stored size)."""
    from .image.images import history_rows
    _check_format(fmt)
    with _opened("history") as store:
        rows = history_rows(store, name)
    if fmt == "json":
        _dump(rows)
        return
    if quiet:
        for r in rows:
            typer.echo(_short(r["Id"]) if r.get("Id") else "<missing>")
        return
    out = [["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
    for r in rows:
        by = r["CreatedBy"].replace("\n", " ")
        if not no_trunc and len(by) > 45:
            by = by[:44] + "…"
        out.append([_short(r["Id"]) if r.get("Id") else "<missing>", _ago(r["Created"]), by,
                    _human(r["Size"]), r["Comment"]])
    _table(out)


@app.command("import")
def import_(source: str = typer.Argument(..., help="root filesystem tarball (tar, tar.gz, "
                                                     "tar.zst, tar.xz, tar.bz2) or - for stdin"),
            name: str = typer.Argument(..., help="name[:tag] for the image"),
            message: Optional[str] = typer.Option(None, "-m", "--message",
                                                  help="comment for the history entry")):
    """Make a one-layer image from a root filesystem tarball (as `docker import`)."""
    from .image.layout import import_rootfs
    from .image.store import normalize_ref
    normalize_ref(name)
    with _opened(f"import {source}") as store:
        if source == "-":
            desc = import_rootfs(store, sys.stdin.buffer, name, message=message, source_name="stdin")
        else:
            try:
                f = open(source, "rb")
            except OSError as e:
                raise OCIError(f"import {source}: {e.strerror}") from None
            with f:
                desc = import_rootfs(store, f, name, message=message, source_name=source)
        from .image.unpack import extract_image
        extract_image(store, desc)
        typer.echo(desc["digest"])


_SAVE_FORMATS = ("docker-archive", "oci-archive")


@app.command()
def save(image: str = typer.Argument(..., help="image name, ID or digest"),
         output: Optional[str] = typer.Option(None, "-o", "--output", help="file (default stdout)"),
         fmt: str = typer.Option("docker-archive", "--format", help="docker-archive|oci-archive")):
    """Write an image to a docker-archive or oci-archive tarball.

    `docker load`, `podman load`, skopeo and `pybuild load` read it."""
    from .image.images import lookup
    from .image.layout import write_docker_archive, write_oci_archive
    if fmt not in _SAVE_FORMATS:
        raise OCIError(f"--format {fmt!r}: want docker-archive or oci-archive")
    if output in (None, "-") and sys.stdout.isatty():
        raise OCIError("save: refusing to write an archive to a terminal", hint="use -o FILE or a pipe")
    with _opened(f"save {image}") as store:
        desc, tags = lookup(store, image)
        name = tags[0] if image not in tags and tags else (image if tags else None)
        if name:
            from .image.store import normalize_ref
            name = normalize_ref(name)
        dest, tmp = output, None
        if output in (None, "-"):
            f, tmp = store.temp_file(".tar")
            f.close()
            dest = tmp
        try:
            if fmt == "oci-archive":
                write_oci_archive(store, desc, dest, name=name)
            else:
                write_docker_archive(store, desc, dest, name)
            if tmp is not None:
                with open(tmp, "rb") as src:
                    out = sys.stdout.buffer
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        out.write(chunk)
                    out.flush()
        finally:
            if tmp is not None:
                store.discard_temp(tmp)


@app.command()
def load(input_: Optional[str] = typer.Option(None, "-i", "--input", help="archive (default stdin)"),
         tag_: Optional[str] = typer.Option(None, "-t", "--tag",
                                            help="name for an archive's only image (needed when "
                                                 "it has none)")):
    """Load the images of a docker-archive or oci-archive tarball.

    Reads `docker save`, `podman save` and skopeo output; every image gets the names the
    archive gives it."""
    from .image.layout import load_archive
    if input_ in (None, "-") and sys.stdin.isatty():
        raise OCIError("load: no archive", hint="use -i FILE or pipe one in")
    with _opened(f"load {input_ or 'stdin'}") as store:
        tmp = None
        path = input_
        try:
            if input_ in (None, "-"):
                f, tmp = store.temp_file(".tar")
                with f:
                    for chunk in iter(lambda: sys.stdin.buffer.read(1 << 20), b""):
                        f.write(chunk)
                path = tmp
            elif not os.path.isfile(input_):
                raise OCIError(f"load: {input_} is not a file")
            loaded = load_archive(store, path, tag=tag_)
            from .image.unpack import extract_image
            for _, desc in loaded:
                extract_image(store, desc)
        finally:
            if tmp is not None:
                store.discard_temp(tmp)
    for names, desc in loaded:
        for n in names:
            typer.echo(f"Loaded image: {n}")
        if not names:
            typer.echo(f"Loaded image ID: {desc['digest']}")


def _waiting():
    print("waiting for the other pybuild processes using the store to finish...", file=sys.stderr)


def _report_freed(freed) -> None:
    for did in freed.kept_in_use:
        typer.echo(f"kept extracted layer {did}: a mounted overlay uses it")
    typer.echo(f"removed {len(freed.blobs)} blobs, {len(freed.layers)} extracted layers, "
               f"{freed.cache_entries} cache entries: freed {_human(freed.bytes)}")


@app.command()
def gc(wait: bool = typer.Option(True, "--wait/--no-wait",
                                 help="wait for builds and pulls running on the store")):
    """Remove the data no image or container needs, and say what it freed.

    Blobs, extracted layers and layer cache entries. Runs alone on the store: it waits for running builds and pulls."""
    from .image.gc import collect
    with _opened("gc") as store:
        freed = collect(store, wait=wait, on_wait=_waiting)
    _report_freed(freed)


@app.command()
def prune(wait: bool = typer.Option(False, "--wait/--no-wait",
                                    help="wait for running builds to sweep unreferenced data")):
    """Clean up after dead builds, then remove unreferenced data.

    First what killed or crashed pybuild processes left in the store (their RUN
    containers, overlay mounts, scratch dirs and temp files; live builds are not touched),
    then what no image needs (as `gc`; skipped while other pybuild processes use the
    store, unless --wait)."""
    from .build.session import prune as _prune
    from .image.gc import collect
    from .image.store import StoreBusy
    with _opened("prune") as store:
        for what in _prune(store.root):
            typer.echo(f"removed {what}")
        try:
            freed = collect(store, wait=wait, on_wait=_waiting)
        except StoreBusy:
            typer.echo("unreferenced data: not swept, other pybuild processes are using the "
                       "store (`pybuild gc` waits for them)")
            return
    _report_freed(freed)


@app.command()
def fsck(repair: bool = typer.Option(False, "--repair", help="drop what is broken")):
    """Check the store's blobs, references and extracted layers.

    Every blob re-hashed, every reference resolved, every extracted layer compared with its
    layer blob. Exit status 1 when something is wrong (and, with
    --repair, was not put right)."""
    from .image.fsck import fsck as _fsck
    with _opened("fsck") as store:
        rep = _fsck(store, repair=repair, on_wait=_waiting)
    for p in rep.problems:
        typer.echo(p)
    for r in rep.repaired:
        typer.echo(f"repaired: {r}")
    typer.echo(f"checked {rep.blobs} blobs, {rep.images} images, {rep.layers} extracted layers: "
               f"{len(rep.problems) or 'no'} problem{'s' if len(rep.problems) != 1 else ''}")
    if rep.problems and not repair:
        raise typer.Exit(1)


# -- registries: pull, push, login, logout (pybuild.registry, imported only here) -----------

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
_POLICY_HELP = ("containers-policy.json to enforce (default ~/.config/containers/policy.json, "
                "else /etc/containers/policy.json)")
_REGISTRIES_D_HELP = ("directory of registries.d YAML files naming lookaside signature "
                      "locations (default ~/.config/containers/registries.d, else "
                      "/etc/containers/registries.d)")


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
    signature_policy: Optional[str] = typer.Option(None, "--signature-policy", help=_POLICY_HELP),
    registries_d: Optional[str] = typer.Option(None, "--registries.d", help=_REGISTRIES_D_HELP),
    decryption_key: List[str] = typer.Option([], "--decryption-key",
                                             help="PEM private key for encrypted layers (repeatable)"),
):
    """Pull an image from a registry into the store (under its fully qualified name); the
    signature policy must accept it first."""
    from .registry import transfer
    from .trust import hooks
    opts = _registry_options(tls_verify, cert_dir, authfile, creds, platform)
    check = hooks.checker(hooks.load_policy(signature_policy), registries_d)
    keys = _decryption_keys(decryption_key)

    def run(store, pr):
        name, desc = transfer.pull(store, image, opts, pr, check=check, decryption_keys=keys)
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
    sign_by: Optional[str] = typer.Option(None, "--sign-by", metavar="KEYFILE",
                                          help="sign (simple signing) with this OpenPGP secret key file"),
    sign_by_sigstore: Optional[str] = typer.Option(None, "--sign-by-sigstore-private-key", metavar="PATH",
                                                   help="attach a sigstore signature made with this PEM private key"),
    sign_passphrase_file: Optional[str] = typer.Option(None, "--sign-passphrase-file", metavar="PATH",
                                                       help="passphrase of the signing key"),
    sign_identity: Optional[str] = typer.Option(None, "--sign-identity", metavar="NAME:TAG",
                                                help="identity to sign (default: the destination)"),
    registries_d: Optional[str] = typer.Option(None, "--registries.d", help=_REGISTRIES_D_HELP),
    encryption_key: List[str] = typer.Option([], "--encryption-key", metavar="jwe:PUBKEY.pem",
                                             help="encrypt layers for this public key (repeatable)"),
    encrypt_layer: List[int] = typer.Option([], "--encrypt-layer", metavar="N",
                                            help="encrypt only layer N (0-based, negative from the end; repeatable)"),
):
    """Push an image from the store to a registry; its manifest digest stays the same unless
    layers are encrypted. Optionally sign what was pushed."""
    from .registry import transfer
    from .trust import hooks
    opts = _registry_options(tls_verify, cert_dir, authfile, creds)
    encrypt = None
    if encryption_key:
        from .trust import ocicrypt
        encrypt = ([ocicrypt.load_public_key(k) for k in encryption_key], encrypt_layer or None)
    elif encrypt_layer:
        raise OCIError("--encrypt-layer needs --encryption-key")

    def run(store, pr):
        after = hooks.signer(sign_by, sign_by_sigstore, sign_passphrase_file, registries_d,
                             sign_identity, pr)
        return transfer.push(store, image, dest, opts, pr, encrypt=encrypt, after=after)
    _transfer(progress, quiet, "pushing", run)


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


# -- trust: verify, generate-key (pybuild.trust, imported only here) -------------------------

def _decryption_keys(paths) -> list:
    if not paths:
        return []
    from .trust import ocicrypt
    return [ocicrypt.load_private_key(p) for p in paths]


@app.command()
def verify(
    image: str = typer.Argument(..., help="NAME[:TAG|@DIGEST] in a registry"),
    signature_policy: Optional[str] = typer.Option(None, "--signature-policy", help=_POLICY_HELP),
    registries_d: Optional[str] = typer.Option(None, "--registries.d", help=_REGISTRIES_D_HELP),
    tls_verify: str = typer.Option("true", "--tls-verify", metavar="BOOL", help=_TLS_HELP),
    cert_dir: Optional[str] = typer.Option(None, "--cert-dir", help="directory of CA *.crt files"),
    authfile: Optional[str] = typer.Option(None, "--authfile", help="credentials file (auth.json)"),
    creds: Optional[str] = typer.Option(None, "--creds", help="USER[:PASSWORD] for the registry"),
):
    """Check an image in a registry against the signature policy, without pulling it."""
    from .registry import names, transfer
    from .trust import hooks
    opts = _registry_options(tls_verify, cert_dir, authfile, creds)
    pol = hooks.load_policy(signature_policy)
    if pol is None:
        raise OCIError("verify: no signature policy (give --signature-policy FILE)")
    ref = names.parse(image)
    results = []
    check = hooks.checker(pol, registries_d, results)
    client = transfer.client_for(ref, opts)
    try:
        data, _, dg = transfer.fetch_manifest(client, ref, ref.reference, f"verify {ref}")
        check(client, ref, data, dg)
    except OCIError as e:
        msg = e.message.replace("; nothing stored", "")
        raise OCIError(msg if msg.startswith("verify ") else f"verify {ref}: {msg}") from None
    finally:
        client.close()
    typer.echo(f"{ref} {dg}: accepted")
    for r in results[:-1]:
        typer.echo(f"  {r}")


@app.command("generate-key")
def generate_key(
    output: str = typer.Option(..., "-o", "--output", metavar="PREFIX",
                               help="writes PREFIX.key (mode 0600) and PREFIX.pub"),
    kind: str = typer.Option("pgp", "--type",
                             help="pgp (simple signing), sigstore (ECDSA P-256 PEM) or jwe "
                                  "(RSA-4096 PEM for --encryption-key)"),
    user_id: str = typer.Option("pybuild signing key", "--uid", help="OpenPGP user ID"),
):
    """Make a key pair for signing (--sign-by, --sign-by-sigstore-private-key) or for
    layer encryption (--encryption-key jwe:PREFIX.pub / --decryption-key PREFIX.key)."""
    from .trust import pgp
    priv_path, pub_path = output + ".key", output + ".pub"
    for p in (priv_path, pub_path):
        if os.path.lexists(p):
            raise OCIError(f"generate-key: {p} already exists; not overwritten")
    fpr = None
    if kind == "pgp":
        priv, pub, fpr = pgp.generate_key(user_id)
        priv, pub = priv.encode(), pub.encode()
    elif kind == "sigstore":
        from .trust import sigstore
        priv, pub = sigstore.generate_key()
    elif kind == "jwe":
        from .trust import ocicrypt
        priv, pub = ocicrypt.generate_key()
    else:
        raise OCIError(f"--type {kind!r}: want pgp, sigstore or jwe")
    try:
        pgp.write_private(priv_path, priv)
        with open(pub_path, "xb") as f:
            f.write(pub)
    except OSError as e:
        raise OCIError(f"generate-key: cannot write {e.filename}: {e.strerror}") from None
    typer.echo(f"{priv_path} (private, 0600)\n{pub_path} (public)"
               + (f"\nfingerprint {fpr}" if fpr else ""))


def main(argv=None) -> int:
    return buildcmd.guarded(_app_main, argv)


def _app_main(argv) -> int:
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int) and rv:  # typer returns Exit codes (130 on Ctrl-C) here
            if rv == 130:
                print("interrupted", file=sys.stderr)
            return rv
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
