"""`pybuild build` without typer: its flags as data, a parser for the usual command lines
and the command's body.

A no-change rebuild has to beat a warm daemon, so pybuild's start must reach the Dockerfile
quickly: typer and its click cost 50-130 ms to import, more than the rest of a cached build.
pybuild.cli parses `[--root DIR] build ...` here; anything this parser does not take (--help,
a typo, an unknown flag) goes to the typer app (pybuild.commands), whose `build` command is
generated from the same FLAGS table, so both read the same options the same way.
"""
import os

from ocispec.errors import OCIError


def guarded(fn, *args) -> int:
    """fn's exit status; an OCIError is its one-line message and status 1, Ctrl-C 130."""
    import sys
    try:
        return fn(*args)
    except OCIError as e:
        print(str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pybuild: interrupted", file=sys.stderr)
        return 130


class Flag:
    __slots__ = ("name", "decls", "kind", "default", "help", "envvar", "metavar")

    def __init__(self, name, decls, kind, default, help, envvar=None, metavar=None):
        self.name, self.decls, self.kind, self.default = name, decls, kind, default
        self.help, self.envvar, self.metavar = help, envvar, metavar


# kind: str (a value, default given), opt (a value or None), list (repeatable), bool, float
FLAGS = [
    Flag("file", ("-f", "--file"), "opt", None, "Dockerfile (default CONTEXT/Dockerfile)"),
    Flag("tag", ("-t", "--tag"), "list", [], "name:tag for the image (repeatable)"),
    Flag("build_arg", ("--build-arg",), "list", [], "K=V (repeatable)"),
    Flag("target", ("--target",), "opt", None, "stage to build"),
    Flag("label", ("--label",), "list", [], "K=V label on the image (repeatable)"),
    Flag("no_cache", ("--no-cache",), "bool", False, "do not use the layer cache"),
    Flag("platform", ("--platform",), "opt", None, "os/arch or os/arch/variant"),
    Flag("output", ("-o", "--output"), "list", [],
         "oci:DIR[:tag] | oci-archive:FILE[:tag] | docker-archive:FILE[:tag]"),
    Flag("progress", ("--progress",), "str", "auto", "auto|plain|tty|quiet|json"),
    Flag("compression", ("--compression",), "str", "gzip", "gzip|zstd"),
    Flag("runtime", ("--runtime",), "str", "pyrunc", "OCI runtime for RUN (path or name)"),
    Flag("secret", ("--secret",), "list", [], "id=ID,src=FILE for RUN --mount=type=secret"),
    Flag("network", ("--network",), "opt", None, "default network for RUN: none|host|default"),
    Flag("quiet", ("-q", "--quiet"), "bool", False, "same as --progress quiet"),
    Flag("explain_cache", ("--explain-cache",), "bool", False,
         "print why each step missed the cache"),
    Flag("add_timeout", ("--add-timeout",), "float", 3600,
         "longest an ADD <URL> download may take, in seconds (0: no limit)",
         "PYBUILD_ADD_TIMEOUT", "SECONDS"),
    Flag("add_idle_timeout", ("--add-idle-timeout",), "float", 60,
         "an ADD <URL> download fails when the server sends nothing for this long (0: no limit)",
         "PYBUILD_ADD_IDLE_TIMEOUT", "SECONDS"),
    Flag("add_max_size", ("--add-max-size",), "str", "0",
         "largest download, or unpacked archive content, one ADD may bring in, "
         "e.g. 500M or 2G (0: no limit)", "PYBUILD_ADD_MAX_SIZE", "SIZE"),
    Flag("pull", ("--pull",), "str", "missing",
         "pull FROM images: missing (when not in the store), always, never", metavar="POLICY"),
    Flag("tls_verify", ("--tls-verify",), "str", "true",
         "verify registries' TLS certificates (default true)", metavar="BOOL"),
    Flag("cert_dir", ("--cert-dir",), "opt", None, "directory of CA *.crt files for registries"),
    Flag("authfile", ("--authfile",), "opt", None, "registry credentials file"),
    Flag("signature_policy", ("--signature-policy",), "opt", None,
         "containers-policy.json that FROM pulls must satisfy (default "
         "~/.config/containers/policy.json, else /etc/containers/policy.json)"),
    Flag("registries_d", ("--registries.d",), "opt", None,
         "registries.d directory naming signature lookasides"),
]
CONTEXT_HELP = "build context directory"
HELP = "Build an image from a Dockerfile and a context directory."
_BY_DECL = {d: f for f in FLAGS for d in f.decls}


def parse(argv: list[str]) -> tuple[str | None, dict] | None:
    """(root, build keyword arguments) from `[--root DIR] build ...`, or None for anything
    else (the typer app then handles it, errors and --help included)."""
    root = os.environ.get("PYBUILD_ROOT") or None
    i = 0
    while i < len(argv) and argv[i] != "build":
        a = argv[i]
        if a == "--root" and i + 1 < len(argv):
            root, i = argv[i + 1], i + 2
        elif a.startswith("--root="):
            root, i = a[7:], i + 1
        else:
            return None
    if i >= len(argv):
        return None
    kw = {f.name: (list(f.default) if f.kind == "list" else f.default) for f in FLAGS}
    given, context = set(), None
    rest = argv[i + 1:]
    j = 0
    while j < len(rest):
        a = rest[j]
        j += 1
        if a == "--":
            if context is not None or len(rest) - j != 1:
                return None
            context = rest[j]
            break
        if not a.startswith("-") or a == "-":
            if context is not None:
                return None
            context = a
            continue
        name, eq, val = a.partition("=") if a.startswith("--") else (a[:2], bool(a[2:]), a[2:])
        f = _BY_DECL.get(name)
        if f is None:
            return None
        if f.kind == "bool":
            if eq:
                return None
            kw[f.name] = True
            continue
        if not eq:
            if j >= len(rest):
                return None
            val = rest[j]
            j += 1
        if f.kind == "float":
            try:
                val = float(val)
            except ValueError:
                return None
        if f.kind == "list":
            kw[f.name].append(val)
        else:
            kw[f.name] = val
        given.add(f.name)
    if context is None:
        return None
    for f in FLAGS:  # click's envvar: used when the flag is not given
        if f.envvar and f.name not in given and os.environ.get(f.envvar):
            val = os.environ[f.envvar]
            if f.kind == "float":
                try:
                    val = float(val)
                except ValueError:
                    return None
            kw[f.name] = val
    kw["context"] = context
    return root, kw


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


def _build_pull_options(pull, tls_verify, cert_dir, authfile, progress_mode,
                        signature_policy=None, registries_d=None) -> dict:
    from .image.images import PullContext
    mode = {"tty": "plain", "auto": "plain"}.get(progress_mode, progress_mode)
    # the defaults need no registry client yet (its import pulls in http.client and email):
    # PullContext makes default options at the first pull
    plain = tls_verify.strip().lower() == "true" and not cert_dir and not authfile
    return {"pull": _pull_policy(pull), "registry": PullContext(
        None if plain else _registry_options(tls_verify, cert_dir, authfile), mode,
        signature_policy=signature_policy, registries_d=registries_d)}


def run(root: str | None, *, context, file, tag, build_arg, target, label, no_cache, platform,
        output, progress, compression, runtime, secret, network, quiet, add_timeout,
        add_idle_timeout, add_max_size, pull, tls_verify, cert_dir, authfile, explain_cache=False,
        signature_policy=None, registries_d=None) -> None:
    """The build command (typer's or the fast path's)."""
    if progress not in ("auto", "plain", "tty", "quiet", "json"):
        raise OCIError(f"--progress {progress!r}: want auto, plain, quiet or json")
    if compression not in ("gzip", "zstd"):
        raise OCIError(f"--compression {compression!r}: want gzip or zstd")
    add_timeout = _seconds(add_timeout, "--add-timeout")
    add_idle_timeout = _seconds(add_idle_timeout, "--add-idle-timeout")
    add_max_size = _size(add_max_size, "--add-max-size")
    if output:
        from .image.export import parse_output
        for o in output:
            parse_output(o)
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    if sde is not None and not sde.isdigit():
        raise OCIError(f"SOURCE_DATE_EPOCH={sde!r}: want seconds since the epoch")
    context = os.path.abspath(context)
    dockerfile = os.path.abspath(file) if file else None
    build_args, labels, secrets = _kv(build_arg, "--build-arg"), _kv(label, "--label"), \
        _secrets(secret)
    mode = "quiet" if quiet else progress
    pull = _pull_policy(pull)
    import time
    t0 = time.monotonic()
    from . import progress as _progress
    from .image.store import DEFAULT_ROOT, Store
    store = Store(root or DEFAULT_ROOT)
    pr = _progress.make(mode)
    try:
        memo, fp = None, None
        if not no_cache and not output and pull != "always" and os.path.isdir(context):
            from . import __version__
            from .build.cache import BuildMemo
            memo = BuildMemo(store, [__version__, context, dockerfile, build_args, target,
                                     labels, platform, compression, network, sorted(secrets),
                                     sde], context,
                             dockerfile or os.path.join(context, "Dockerfile"))
            hit = memo.lookup()
            if hit is not None:
                _replay(pr, hit["memo"]["steps"])
                for t in tag:
                    store.tag(t, hit["manifest"])
                pr.result(hit["manifest"]["digest"], time.monotonic() - t0)
                return
            fp = memo.fingerprint()
        from .build.copy import AddLimits
        from .build.executor import BuildOptions, Builder
        opts = BuildOptions(
            context=context, dockerfile=dockerfile, tags=list(tag), build_args=build_args,
            target=target, labels=labels, no_cache=no_cache, platform=platform,
            outputs=list(output), compression=compression, runtime=runtime, secrets=secrets,
            network=network, source_date_epoch=int(sde) if sde else None,
            add_limits=AddLimits(timeout=add_timeout, idle_timeout=add_idle_timeout,
                                 max_size=add_max_size),
            explain_cache=explain_cache,
            **_build_pull_options(pull, tls_verify, cert_dir, authfile, mode, signature_policy,
                                  registries_d))
        rec = _Recorder(pr)
        builder = Builder(store, opts, rec)
        desc = builder.build()
        if fp is not None:
            memo.record(fp, desc, builder, rec.steps)
    finally:
        pr.close()
        store.close()


_LAYER_STEPS = ("COPY", "ADD", "RUN")


class _Recorder:
    """The build's progress, passed through, with its step lines kept for the memo."""

    def __init__(self, pr):
        self.pr = pr
        self.steps = []

    def step(self, *args):
        self.steps.append(list(args))
        return self.pr.step(*args)

    def __getattr__(self, name):
        return getattr(self.pr, name)


def _replay(pr, steps) -> None:
    """A memo hit shows the steps a no-change rebuild shows: layer steps cached."""
    for args in steps:
        h = pr.step(*args)
        text = str(args[-1]).lstrip()
        pr.done(h, cached=text[:4].rstrip().upper() in _LAYER_STEPS)
