"""The Dockerfile parse tree.

Plain records (pybuild.recordclass), no behaviour: the parser builds them, the planner and the executor
read them. Every value here is raw source text, *not yet expanded*: ARG/ENV substitution
depends on build args, the base image's ENV and the stage, so it happens later through
`pybuild.dockerfile.expand` (or a `Scope`). Lines and columns are 1-based.

Every instruction is an `Instruction` (generic fields: kind, line, column, end_line,
original, flags, args, json_form, heredocs); each kind has a subclass that adds typed
fields (`Copy.sources`, `Env.pairs`, `Run.mounts`, ...). Code that only needs the generic
view may ignore the subclass.
"""

from __future__ import annotations

from ..recordclass import record, field


@record
class Heredoc:
    """A here-document attached to RUN, COPY or ADD.

    name: the delimiter word with quotes removed (`EOF` for `<<'EOF'`).
    content: the body, every line ending in "\\n"; for `<<-` leading tabs are already
        stripped from each line.
    chomp: the `<<-` form was used.
    expand: the delimiter was unquoted, so variables in content are to be expanded
        (by the shell for RUN, by the builder for COPY/ADD).
    path: for COPY/ADD, the source name under which this heredoc appears as a file
        (the delimiter); None for RUN.
    fd: the file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    """

    name: str
    content: str
    chomp: bool = False
    expand: bool = True
    path: str | None = None
    fd: int = 0


@record
class KeyValue:
    """One `key=value` pair of ENV or LABEL.

    value is raw source text: quotes and `$VAR` still in it; `expand(value, env)`
    gives the final string. legacy: written as `ENV key value` (one pair, value is
    the rest of the line).
    """

    key: str
    value: str
    legacy: bool = False


@record
class ArgDecl:
    """One name of an ARG instruction: `ARG name` (default None) or `ARG name=default`."""

    name: str
    default: str | None = None


@record
class Mount:
    """One `RUN --mount=...`, with BuildKit's defaults filled in.

    type: bind (default), cache, tmpfs, secret or ssh.
    target: mount point in the container (for secret: default /run/secrets/<id>).
    source: path in `from` (bind/cache) or the secret's source; None when absent.
    from_: stage name/index or image the source comes from (bind, cache); None = context
        for bind, a fresh cache dir for cache.
    readonly: bind defaults to True (rw/readwrite makes it writable); cache to False.
    id: cache id (defaults to target) or secret/ssh id (defaults to basename of target).
    sharing: cache sharing mode: shared (default), private or locked.
    mode, uid, gid: for cache/secret/ssh (mode as an int, parsed from octal).
    size: tmpfs size in bytes, None for unlimited.
    required: secret/ssh must exist.
    env: for secret, the environment variable to expose it as.
    options: every key=value exactly as written, for error messages and cache keys.
    """

    type: str = "bind"
    target: str = ""
    source: str | None = None
    from_: str | None = None
    readonly: bool = False
    id: str | None = None
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    required: bool = False
    env: str | None = None
    options: dict[str, str] = field(default_factory=dict)


@record
class Instruction:
    """One Dockerfile instruction, as written.

    kind: upper-case keyword ("RUN", "COPY", ...).
    line, column: where the keyword starts; end_line: last physical line (including
        continuation lines and heredoc bodies).
    original: the logical line as written, continuations joined (without heredoc bodies).
    flags: parsed `--name=value` flags (name without dashes), each a list so repeated
        flags keep their order; a bare boolean flag `--link` is stored as ["true"].
    args: for JSON form the decoded list; for shell form a one-element list holding the
        text after the keyword and flags; for whitespace-split kinds (FROM, EXPOSE,
        COPY/ADD/VOLUME shell form) the split words; for ENV/LABEL the raw `key=value`
        words (legacy form: [key, value]); for ARG the raw words.
    json_form: args came from a JSON array.
    heredocs: here-documents attached to this instruction, in order.
    flag_pos: (line, column) of each flag occurrence, parallel to flags (for errors).
    """

    kind: str
    line: int = 0
    column: int = 1
    end_line: int = 0
    original: str = ""
    flags: dict[str, list[str]] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    json_form: bool = False
    heredocs: list[Heredoc] = field(default_factory=list)
    flag_pos: dict[str, list[tuple[int, int]]] = field(default_factory=dict, repr=False,
                                                       compare=False)

    def flag(self, name: str, default: str | None = None) -> str | None:
        """The last value of a flag, or default when it was not given."""
        values = self.flags.get(name)
        return values[-1] if values else default


@record
class From(Instruction):
    """FROM [--platform=P] image [AS name]. image and platform raw (unexpanded);
    image_pos: (line, column) of the image word."""

    image: str = ""
    platform: str | None = None
    name: str | None = None
    image_pos: tuple[int, int] = (0, 0)


@record
class Run(Instruction):
    """RUN. command: JSON list (exec form) or the shell text (args[0]).

    mounts: parsed --mount flags; network: none|host|default or None; security:
    insecure|sandbox or None.
    """

    command: list[str] | str = ""
    mounts: list[Mount] = field(default_factory=list)
    network: str | None = None
    security: str | None = None


@record
class Cmd(Instruction):
    """CMD. command: list (exec form) or shell text."""

    command: list[str] | str = ""


@record
class Entrypoint(Instruction):
    """ENTRYPOINT. command: list (exec form) or shell text."""

    command: list[str] | str = ""


@record
class Shell(Instruction):
    """SHELL ["exe", "arg", ...]; only the JSON form is valid."""

    shell: list[str] = field(default_factory=list)


@record
class Env(Instruction):
    """ENV key=value ... (or legacy ENV key value)."""

    pairs: list[KeyValue] = field(default_factory=list)


@record
class Label(Instruction):
    """LABEL key=value ..."""

    pairs: list[KeyValue] = field(default_factory=list)


@record
class Arg(Instruction):
    """ARG name[=default] ..."""

    decls: list[ArgDecl] = field(default_factory=list)


@record
class Copy(Instruction):
    """COPY or ADD (see Add). sources: raw source words (heredoc sources excluded: they
    are in heredocs, with .path set); dest raw. Flags in typed form:
    from_ (COPY only), chown, chmod, link, exclude (list), parents.
    """

    sources: list[str] = field(default_factory=list)
    dest: str = ""
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    exclude: list[str] = field(default_factory=list)
    parents: bool = False


@record
class Add(Copy):
    """ADD: COPY's fields (from_ always None) plus checksum, keep_git_dir, unpack
    (None = default: extract local archives)."""

    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None


@record
class Expose(Instruction):
    """EXPOSE port[/proto] ... ports raw, one word each."""

    ports: list[str] = field(default_factory=list)


@record
class Volume(Instruction):
    """VOLUME ["/a", "/b"] or VOLUME /a /b. paths raw."""

    paths: list[str] = field(default_factory=list)


@record
class User(Instruction):
    """USER user[:group], raw. user/group split at the first ':' of the raw text."""

    user: str = ""
    group: str | None = None


@record
class Workdir(Instruction):
    """WORKDIR path, raw."""

    path: str = ""


@record
class StopSignal(Instruction):
    """STOPSIGNAL signal, raw (name or number, possibly $VAR)."""

    signal: str = ""


@record
class Maintainer(Instruction):
    """MAINTAINER name (deprecated; becomes the config's author)."""

    name: str = ""


@record
class Healthcheck(Instruction):
    """HEALTHCHECK [opts] CMD command | HEALTHCHECK NONE.

    none: HEALTHCHECK NONE (disable the base image's check).
    test: the image-config Test list: ["NONE"], ["CMD", args...] for exec form, or
        ["CMD-SHELL", text] for shell form.
    interval, timeout, start_period, start_interval: nanoseconds, None when not given.
    retries: None when not given.
    """

    none: bool = False
    test: list[str] = field(default_factory=list)
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


@record
class Onbuild(Instruction):
    """ONBUILD <instruction>. trigger: the parsed inner instruction; expression: its
    source text (what goes into the image config's OnBuild list)."""

    trigger: Instruction | None = None
    expression: str = ""


@record
class Stage:
    """One build stage: a FROM and the instructions up to the next FROM.

    index: 0-based position; name: the `AS` name lower-cased, or None;
    base: raw image string (may hold $ARGs; a stage name, "scratch" or an image ref);
    platform: raw --platform value or None; line: the FROM's line; from_: the FROM itself.
    """

    index: int
    name: str | None
    base: str
    platform: str | None
    instructions: list[Instruction] = field(default_factory=list)
    line: int = 0
    from_: From | None = None


@record
class Dockerfile:
    """A parsed Dockerfile.

    directives: parser directives found at the top, lower-case names (syntax, escape,
        check) to raw values.
    escape: the escape character in effect ("\\\\" or "`").
    global_args: the ARG instructions before the first FROM.
    stages: the build stages in order.
    filename: the name used in error messages.
    warnings: non-fatal findings (e.g. empty continuation lines), "FILE:LINE: text".
    """

    directives: dict[str, str] = field(default_factory=dict)
    escape: str = "\\"
    global_args: list[Arg] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    filename: str = "Dockerfile"
    warnings: list[str] = field(default_factory=list)

    def stage(self, ref: str) -> Stage | None:
        """The stage named ref (case-insensitive) or with index ref, else None."""
        low = ref.lower()
        for st in self.stages:
            if st.name == low:
                return st
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None
