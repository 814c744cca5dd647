"""ARG/ENV scoping and the expansion of instructions, as BuildKit's dockerfile2llb does it.

- Global scope (FROM lines only): the predefined platform ARGs, then the ARGs before the
  first FROM in order, each taking its --build-arg value or its default expanded with the
  globals so far. A global ARG without a value is not set.
- Stage scope: starts empty (or with the parent stage's ARGs and ENV when FROM names a
  stage, and with the base image's ENV). `ARG X` takes the --build-arg value, else the
  default expanded in the stage, else the global value of X. ARG values join the build
  environment like ENV does and the later assignment wins (BuildKit's AddEnv), so an ENV
  after an ARG of the same name shadows it, as the Dockerfile reference says. Proxy build
  args (HTTP_PROXY, ...) reach RUN without being declared but are not visible to expansion.
- Which parts an instruction expands follows the Dockerfile reference and BuildKit: ADD
  and COPY (sources, dest, --chown, --chmod, ADD --checksum, heredoc bodies with an
  unquoted delimiter; not --exclude, and --from never), ENV and LABEL (keys and values),
  EXPOSE (split into words), STOPSIGNAL, USER, VOLUME, WORKDIR, ARG defaults, and RUN's
  --mount options. RUN/CMD/ENTRYPOINT commands, SHELL, HEALTHCHECK and
  ONBUILD triggers are left to the shell / the child build.
"""

from __future__ import annotations

import copy
from .. import recordclass
import platform as _platform
from collections.abc import Mapping

from ocispec.errors import OCIError

from . import ast
from .expand import expand, expand_heredoc, expand_words
from .instructions import chmod_error, chown_error
from .mounts import MountError, parse_mount
from .parser import _q

PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
PLATFORM_ARGS = ("BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT", "TARGETPLATFORM",
                 "TARGETOS", "TARGETARCH", "TARGETVARIANT", "TARGETSTAGE")
# Build args the builder itself understands; never reported as unused.
BUILTIN_ARGS = frozenset(PROXY_ARGS + PLATFORM_ARGS + ("SOURCE_DATE_EPOCH",))

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "amd64": "amd64", "aarch64": "arm64",
                 "arm64": "arm64", "armhf": "arm", "armel": "arm", "arm": "arm",
                 "armv7l": "arm", "armv7": "arm", "armv6l": "arm", "armv6": "arm",
                 "armv5tel": "arm", "i386": "386", "i486": "386", "i586": "386",
                 "i686": "386", "386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
                 "riscv64": "riscv64", "mips64le": "mips64le", "loong64": "loong64",
                 "loongarch64": "loong64"}
_ARM_VARIANT = {"armv7l": "v7", "armv7": "v7", "armhf": "v7", "armv6l": "v6", "armv6": "v6",
                "armel": "v6", "armv5tel": "v5"}


@recordclass.record(frozen=True)
class Platform:
    """os/arch[/variant], normalized the way containerd's platforms.Normalize does."""

    os: str
    arch: str
    variant: str = ""

    def __str__(self) -> str:
        return f"{self.os}/{self.arch}/{self.variant}" if self.variant else f"{self.os}/{self.arch}"


def parse_platform(spec: str) -> Platform:
    """"linux/arm64", "linux/arm/v7", "amd64" (os defaults to linux); OCIError if bad."""
    parts = spec.strip().lower().split("/")
    if not spec.strip() or len(parts) > 3 or any(not p for p in parts):
        raise OCIError(f"invalid platform {_q(spec)}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")
    if len(parts) == 1:
        if parts[0] in _ARCH_ALIASES:
            parts = ["linux", parts[0]]
        else:
            parts = [parts[0], _host_arch()[0]]
    os_, arch = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else ""
    norm = _ARCH_ALIASES.get(arch)
    if norm is None:
        raise OCIError(f"invalid platform {_q(spec)}: unknown architecture {_q(arch)}")
    if norm == "arm" and not variant:
        variant = _ARM_VARIANT.get(arch, "v7")
    if norm == "arm64" and variant in ("8", "v8"):
        variant = ""
    if variant and variant[0].isdigit():
        variant = "v" + variant
    return Platform(os_, norm, variant)


def _host_arch() -> tuple[str, str]:
    m = _platform.machine().lower()
    arch = _ARCH_ALIASES.get(m, m)
    variant = _ARM_VARIANT.get(m, "v7") if arch == "arm" else ""
    return arch, variant


def host_platform() -> Platform:
    arch, variant = _host_arch()
    return Platform("linux", arch, variant)


def predefined_args(*, platform: str | None = None, build_platform: str | None = None,
                    target: str | None = None) -> dict[str, str]:
    """BUILD*/TARGET* values: target defaults to the build platform (the host)."""
    bp = parse_platform(build_platform) if build_platform else host_platform()
    tp = parse_platform(platform) if platform else bp
    return {"BUILDPLATFORM": str(bp), "BUILDOS": bp.os, "BUILDARCH": bp.arch,
            "BUILDVARIANT": bp.variant, "TARGETPLATFORM": str(tp), "TARGETOS": tp.os,
            "TARGETARCH": tp.arch, "TARGETVARIANT": tp.variant,
            "TARGETSTAGE": target or "default"}


def where(df_or_filename, inst: ast.Instruction | None) -> str:
    name = getattr(df_or_filename, "filename", df_or_filename)
    if inst is None:
        return f"{name}: "
    return f"{name}:{inst.line}:{inst.column}: "


def global_args(df: ast.Dockerfile, build_args: Mapping[str, str],
                predefined: Mapping[str, str]) -> dict[str, str]:
    """The values FROM lines see: predefined args (overridable), then global ARGs."""
    values = {k: build_args.get(k, v) for k, v in predefined.items()}
    for inst in df.global_args:
        for decl in inst.decls:
            if decl.name in build_args:
                values[decl.name] = build_args[decl.name]
            elif decl.default is not None:
                try:
                    values[decl.name] = expand(decl.default, values, escape=df.escape)
                except OCIError as e:
                    raise OCIError(where(df, inst) + e.message) from None
    return values


class Scope:
    """Variables in effect at one point of a stage; `apply` walks the stage forward.

    args: declared ARG values of this stage (insertion order kept);
    env: the ENV of the image being built (base image ENV + ENV instructions);
    state: what `$NAME` and RUN see: ENV and ARG values, the later assignment winning.
    """

    def __init__(self, *, filename: str = "Dockerfile", escape: str = "\\",
                 build_args: Mapping[str, str] | None = None,
                 globals_: Mapping[str, str] | None = None,
                 env: Mapping[str, str] | None = None,
                 args: Mapping[str, str] | None = None,
                 state: Mapping[str, str] | None = None):
        self.filename = filename
        self.escape = escape
        self.build_args = dict(build_args or {})
        self.globals = dict(globals_ or {})
        self.env: dict[str, str] = dict(env or {})
        self.args: dict[str, str] = dict(args or {})
        self.declared: set[str] = set(self.args)
        self.state: dict[str, str] = dict(state) if state is not None else {**self.args, **self.env}

    @classmethod
    def for_stage(cls, df: ast.Dockerfile, *, build_args: Mapping[str, str],
                  globals_: Mapping[str, str], parent: Scope | None = None,
                  base_env: Mapping[str, str] | None = None) -> Scope:
        """A fresh stage scope. parent: the scope at the end of the stage FROM names
        (its ARGs and ENV carry over, as in BuildKit); base_env: an image's config ENV."""
        env = dict(parent.env) if parent else {}
        env.update(base_env or {})
        state = dict(parent.state) if parent else {}
        state.update(base_env or {})
        return cls(filename=df.filename, escape=df.escape, build_args=build_args,
                   globals_=globals_, env=env, args=dict(parent.args) if parent else None,
                   state=state)

    def copy(self) -> Scope:
        return copy.deepcopy(self)

    @property
    def vars(self) -> dict[str, str]:
        """What `$NAME` sees."""
        return self.state

    def run_env(self) -> dict[str, str]:
        """Environment for a RUN: the build state plus proxy build args."""
        # BuildKit's proxyEnvFromBuildArgs: either spelling sets both (the lower case wins
        # when both are given), as exec.go's proxyEnvList puts them in the environment
        out = {}
        for k in sorted(self.build_args):
            if k in PROXY_ARGS:
                out[k.upper()] = out[k.lower()] = self.build_args[k]
        out.update(self.state)
        return out

    # -- expansion ----------------------------------------------------------------
    def expand(self, word: str, inst: ast.Instruction | None = None) -> str:
        try:
            return expand(word, self.vars, escape=self.escape)
        except OCIError as e:
            raise OCIError(where(self.filename, inst) + e.message) from None

    def expand_words(self, text: str, inst: ast.Instruction | None = None) -> list[str]:
        try:
            return expand_words(text, self.vars, escape=self.escape)
        except OCIError as e:
            raise OCIError(where(self.filename, inst) + e.message) from None

    def declare(self, decl: ast.ArgDecl, inst: ast.Instruction | None = None) -> str | None:
        """ARG name[=default]: the value it gets here, or None when it stays unset."""
        name = decl.name
        self.declared.add(name)
        if name in self.build_args:
            value: str | None = self.build_args[name]
        elif decl.default is not None:
            value = self.expand(decl.default, inst)
        else:
            value = self.globals.get(name)
        if value is not None:
            self.args[name] = value
            self.state[name] = value
        return value

    def apply(self, inst: ast.Instruction) -> ast.Instruction:
        """A copy of inst with its expandable parts expanded; ARG and ENV also update
        this scope. The original instruction is never modified."""
        fn = _APPLY.get(inst.kind)
        if fn is None:
            return inst
        return fn(self, inst)


def _apply_arg(sc: Scope, inst: ast.Arg) -> ast.Arg:
    decls = []
    for d in inst.decls:
        decls.append(ast.ArgDecl(d.name, sc.declare(d, inst)))
    return recordclass.replace(inst, decls=decls)


def _apply_env(sc: Scope, inst) -> ast.Instruction:
    # Every pair of one ENV/LABEL sees the variables from before the instruction.
    pairs = [ast.KeyValue(sc.expand(p.key, inst), sc.expand(p.value, inst), p.legacy)
             for p in inst.pairs]
    if inst.kind == "ENV":
        for p in pairs:
            sc.env[p.key] = p.value
            sc.state[p.key] = p.value
    return recordclass.replace(inst, pairs=pairs)


def _apply_copy(sc: Scope, inst: ast.Copy) -> ast.Copy:
    def opt(s: str | None) -> str | None:
        return None if s is None else sc.expand(s, inst)

    # --exclude patterns stay as written (BuildKit does not expand them either)
    changes = dict(sources=[sc.expand(s, inst) for s in inst.sources],
                   dest=sc.expand(inst.dest, inst), chown=opt(inst.chown), chmod=opt(inst.chmod))
    for name, check in (("chown", chown_error), ("chmod", chmod_error)):
        why = changes[name] and check(changes[name])
        if why:
            raise OCIError(where(sc.filename, inst) + f"{inst.kind}: --{name}={changes[name]}: {why}")
    if isinstance(inst, ast.Add):
        changes["checksum"] = opt(inst.checksum)
    heredocs = []
    for h in inst.heredocs:
        content = h.content
        if h.expand and h.path is not None:
            try:
                content = expand_heredoc(h.content, sc.vars)
            except OCIError as e:
                raise OCIError(where(sc.filename, inst) + e.message) from None
        heredocs.append(recordclass.replace(h, content=content))
    changes["heredocs"] = heredocs
    return recordclass.replace(inst, **changes)


def _apply_run(sc: Scope, inst: ast.Run) -> ast.Run:
    # Only the mount options are expanded; the command is left to the shell.
    values = inst.flags.get("mount", [])
    if not values:
        return inst
    mounts = []
    for value in values:
        try:
            mounts.append(parse_mount(value, lambda w: sc.expand(w, inst)))
        except MountError as e:
            raise OCIError(where(sc.filename, inst) + f"RUN: --mount: {e}") from None
    return recordclass.replace(inst, mounts=mounts)


def _apply_expose(sc: Scope, inst: ast.Expose) -> ast.Expose:
    # A variable may hold several ports: EXPOSE splits into words (BuildKit's ProcessWords).
    ports = [w for raw in inst.ports for w in sc.expand_words(raw, inst)]
    return recordclass.replace(inst, ports=ports, args=ports)


def _apply_volume(sc: Scope, inst: ast.Volume) -> ast.Volume:
    # Each path is one word even if a variable holds spaces (BuildKit's ProcessWord).
    paths = [sc.expand(p, inst) for p in inst.paths]
    if any(not p for p in paths):
        raise OCIError(where(sc.filename, inst) + "VOLUME specified can not be an empty string")
    return recordclass.replace(inst, paths=paths, args=paths)


def _apply_string(attr: str):
    def fn(sc: Scope, inst):
        v = sc.expand(getattr(inst, attr), inst)
        return recordclass.replace(inst, **{attr: v, "args": [v]})
    return fn


def _apply_user(sc: Scope, inst: ast.User) -> ast.User:
    v = sc.expand(inst.args[0], inst)
    user, colon, group = v.partition(":")
    return recordclass.replace(inst, user=user, group=group if colon else None, args=[v])


_APPLY = {
    "ARG": _apply_arg, "ENV": _apply_env, "LABEL": _apply_env, "COPY": _apply_copy,
    "ADD": _apply_copy, "EXPOSE": _apply_expose, "VOLUME": _apply_volume,
    "WORKDIR": _apply_string("path"), "STOPSIGNAL": _apply_string("signal"),
    "USER": _apply_user, "RUN": _apply_run,
}
