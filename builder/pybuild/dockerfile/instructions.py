"""Nodes -> typed instructions and stages, BuildKit's frontend/dockerfile/instructions.

Each Node from the line reader becomes its `ast` instruction: the keyword must be known,
its flags are checked against the instruction's table (BuildKit's BFlags), its arguments
are parsed per kind (parseRun, parseCopy, ...) and validated, then the instructions are
grouped into stages. `parse` runs both steps one instruction at a time, so errors come
in file order: an instruction's own errors before its unterminated heredoc, and before
anything wrong on a later line.
"""

from __future__ import annotations

import difflib
import re

from ocispec.errors import OCIError

from . import ast
from .mounts import MountError, parse_mount
from .parser import (HEREDOC_RE, WS, LineReader, Node, _q, maybe_json, parse_words,
                     split_ws)

STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9\-_.]*$")

# Flags each instruction accepts: name -> "str" (one value), "list" (repeatable), "bool".
FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": "str"},
    "RUN": {"mount": "list", "network": "str", "security": "str"},
    "COPY": {"from": "str", "chown": "str", "chmod": "str", "link": "bool",
             "exclude": "list", "parents": "bool"},
    "ADD": {"chown": "str", "chmod": "str", "link": "bool", "exclude": "list",
            "checksum": "str", "keep-git-dir": "bool", "unpack": "bool"},
    "HEALTHCHECK": {"interval": "str", "timeout": "str", "start-period": "str",
                    "start-interval": "str", "retries": "str"},
}
INSTRUCTIONS = ("FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
                "SHELL", "MAINTAINER")
NETWORK_MODES = ("none", "host", "default")
SECURITY_MODES = ("insecure", "sandbox")


_ID_LIMIT = 1 << 32


def chown_error(value: str) -> str | None:
    """Why a --chown value cannot be used (numeric IDs out of range), or None."""
    for part in value.split(":", 1):
        if re.fullmatch(r"-?[0-9]+", part) and not 0 <= int(part) < _ID_LIMIT - 1:
            return f"ID {part} is out of range: IDs go from 0 to {_ID_LIMIT - 2}"
    return None


def chmod_error(value: str) -> str | None:
    """Why a --chmod value cannot be used (BuildKit's message), or None."""
    from .chmod import parse_chmod
    try:
        parse_chmod(value)
    except ValueError as e:
        return str(e)
    return None


def parse(text: str, *, filename: str = "Dockerfile") -> ast.Dockerfile:
    """Parse Dockerfile text. Raises OCIError `FILENAME:LINE:COL: reason` on bad input."""
    reader = LineReader(text, filename)
    df = ast.Dockerfile(filename=filename)
    insts: list[ast.Instruction] = []
    for node in reader:
        inst = build(reader, node)
        docs = reader.read_heredocs(node)
        if docs:
            target = inst.trigger if isinstance(inst, ast.Onbuild) else inst
            target.heredocs = inst.heredocs = docs
            if isinstance(inst, ast.Onbuild):  # BuildKit's parseOnBuild keeps the bodies
                inst.expression += "".join("\n" + h.content + h.name for h in docs)
                inst.args = [inst.expression]
            inst.end_line = target.end_line = node.end_line
            _attach_heredoc_sources(target)
        insts.append(inst)
    df.directives = reader.directives
    df.escape = reader.escape
    df.warnings = reader.warnings
    _stages(reader, df, insts)
    return df


def _stages(reader: LineReader, df: ast.Dockerfile, insts: list[ast.Instruction]) -> None:
    """Instructions grouped into stages, ARGs before the first FROM as global args."""
    if not insts:
        raise reader.err(1, 1, "file with no instructions: expected at least a FROM")
    names: dict[str, int] = {}
    stage: ast.Stage | None = None
    for inst in insts:
        if isinstance(inst, ast.From):
            if inst.name is not None and inst.name in names:
                raise reader.err(inst.line, inst.column,
                                 f"duplicate stage name {_q(inst.name)}: already used by "
                                 f"stage {names[inst.name]}")
            stage = ast.Stage(index=len(df.stages), name=inst.name, base=inst.image,
                              platform=inst.platform, line=inst.line, from_=inst)
            if inst.name is not None:
                names[inst.name] = stage.index
            df.stages.append(stage)
        elif stage is None:
            if isinstance(inst, ast.Arg):
                df.global_args.append(inst)
            else:
                raise reader.err(inst.line, inst.column,
                                 f"{inst.kind} before the first FROM: only ARG may come "
                                 "before FROM")
        else:
            stage.instructions.append(inst)
    if not df.stages:
        last = insts[-1]
        raise reader.err(last.line, last.column, "no FROM instruction: expected a build stage")


def build(reader: LineReader, node: Node) -> ast.Instruction:
    """The typed instruction for one node, its flags and arguments checked."""
    kind = node.keyword.upper()
    if kind not in INSTRUCTIONS:
        close = difflib.get_close_matches(kind, INSTRUCTIONS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else None
        raise reader.err(node.line, node.column, f"unknown instruction {_q(node.keyword)}",
                         hint=hint)
    ctx = _Ctx(reader, node, kind)
    flags = ctx.parse_flags(node.flags)
    inst = _CLASSES[kind](kind=kind, line=node.line, column=node.column,
                          end_line=node.end_line, original=node.original, flags=flags,
                          flag_pos=ctx.flag_pos)
    _BUILDERS[kind](ctx, inst, node.rest)
    return inst


class _Ctx:
    """What an instruction builder needs to parse and to report errors."""

    def __init__(self, reader: LineReader, node: Node, kind: str):
        self.reader = reader
        self.node = node
        self.kind = kind
        self.line = node.line
        self.col = node.column
        self.args_off = node.args_off

    def err(self, msg: str, offset: int | None = None, hint: str | None = None) -> OCIError:
        if offset is None:
            line, col = self.line, self.col
        else:
            line, col = self.node.pos.at(offset)
        return self.reader.err(line, col, msg, hint)

    def parse_flags(self, words: list[tuple[str, int]]) -> dict[str, list[str]]:
        table = FLAGS.get(self.kind, {})
        out: dict[str, list[str]] = {}
        for word, off in words:
            name, eq, value = word[2:].partition("=")
            kind = table.get(name)
            if kind is None:
                close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.6)
                hint = f"did you mean --{close[0]}?" if close else (
                    f"{self.kind} takes no flags" if not table else
                    "expected one of " + ", ".join("--" + f for f in table))
                raise self.err(f"{self.kind}: unknown flag --{name}", off, hint)
            if name in out and kind != "list":
                raise self.err(f"{self.kind}: duplicate flag --{name}", off)
            if kind == "bool":
                if eq and not value:
                    raise self.err(f"{self.kind}: missing a value on flag --{name}", off)
                low = value.lower()
                if low not in ("", "true", "false"):
                    raise self.err(f"{self.kind}: --{name} expects true or false, not {_q(value)}", off)
                out[name] = [low or "true"]
            else:
                if not eq:
                    raise self.err(f"{self.kind}: missing a value on flag --{name}: "
                                   f"expected --{name}=VALUE", off)
                out.setdefault(name, []).append(value)
        self.flag_offsets = {w[2:].partition("=")[0]: off for w, off in words}
        self.flag_pos: dict[str, list[tuple[int, int]]] = {}
        for w, off in words:
            self.flag_pos.setdefault(w[2:].partition("=")[0], []).append(self.node.pos.at(off))
        return out

    def flag_err(self, name: str, msg: str) -> OCIError:
        return self.err(f"{self.kind}: --{name}: {msg}", self.flag_offsets.get(name))


def _json_form(ctx: _Ctx, rest: str) -> tuple[list[str] | None, str]:
    """(list, rest) for a JSON array of strings, else (None, rest); a JSON array of
    non-strings is an error."""
    value = maybe_json(rest)
    if value is not None and not all(isinstance(v, str) for v in value):
        raise ctx.err(f"{ctx.kind}: a JSON array must hold only strings", ctx.args_off)
    return value, rest


def _need_args(ctx: _Ctx, rest: str) -> None:
    if not rest.strip():
        raise ctx.err(f"{ctx.kind} requires at least one argument")


# -- builders, one per kind -----------------------------------------------------------

def _b_from(ctx: _Ctx, inst: ast.From, rest: str) -> None:
    _need_args(ctx, rest)
    words = split_ws(rest, ctx.args_off)
    inst.args = [w for w, _ in words]
    if len(words) not in (1, 3) or (len(words) == 3 and words[1][0].lower() != "as"):
        raise ctx.err("FROM requires either one or three arguments: FROM [--platform=P] "
                      "IMAGE [AS NAME]")
    inst.image = words[0][0]
    inst.image_pos = ctx.node.pos.at(words[0][1])
    inst.platform = inst.flag("platform")
    if len(words) == 3:
        name = words[2][0].lower()
        if not STAGE_NAME_RE.match(name):
            raise ctx.err(f"invalid stage name {_q(words[2][0])}: it must start with a letter "
                          "and hold only letters, digits, '-', '_' and '.'", words[2][1])
        inst.name = name


def _b_command(ctx: _Ctx, inst, rest: str) -> None:
    _need_args(ctx, rest)
    lst, rest = _json_form(ctx, rest)
    if lst is not None:
        inst.args, inst.json_form, inst.command = lst, True, lst
    else:
        inst.args, inst.command = [rest], rest


def _b_run(ctx: _Ctx, inst: ast.Run, rest: str) -> None:
    _b_command(ctx, inst, rest)
    net = inst.flag("network")
    if net is not None and net not in NETWORK_MODES:
        raise ctx.flag_err("network", f"unsupported network mode {_q(net)}: expected one of "
                           + ", ".join(NETWORK_MODES))
    sec = inst.flag("security")
    if sec is not None and sec not in SECURITY_MODES:
        raise ctx.flag_err("security", f"unsupported security mode {_q(sec)}: expected one of "
                           + ", ".join(SECURITY_MODES))
    inst.network, inst.security = net, sec
    positions = ctx.flag_pos.get("mount", [])
    for k, value in enumerate(inst.flags.get("mount", [])):
        try:
            inst.mounts.append(parse_mount(value))
        except MountError as e:
            line, col = positions[k]
            raise ctx.reader.err(line, col, f"RUN: --mount: {e}") from None


def _b_shell(ctx: _Ctx, inst: ast.Shell, rest: str) -> None:
    _need_args(ctx, rest)
    lst, _ = _json_form(ctx, rest)
    if lst is None:
        raise ctx.err('SHELL requires the arguments in JSON form, e.g. SHELL ["/bin/sh", "-c"]',
                      ctx.args_off)
    if not lst:
        raise ctx.err("SHELL requires at least one argument", ctx.args_off)
    inst.args, inst.json_form, inst.shell = lst, True, lst


def _key_values(ctx: _Ctx, rest: str) -> list[ast.KeyValue]:
    _need_args(ctx, rest)
    words = parse_words(rest, ctx.reader.escape)
    if "=" not in words[0][0]:
        parts = re.split(r"[\t\v\f\r ]+", rest.strip(WS), maxsplit=1)
        if len(parts) < 2:
            raise ctx.err(f"{ctx.kind} must have two arguments: {ctx.kind} KEY VALUE "
                          f"or {ctx.kind} KEY=VALUE ...", ctx.args_off)
        return [ast.KeyValue(parts[0], parts[1], legacy=True)]
    out = []
    for word, off in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise ctx.err(f"{ctx.kind}: can't find = in {_q(word)}: expected KEY=VALUE",
                          ctx.args_off + off)
        if not key:
            raise ctx.err(f"{ctx.kind}: name can't be blank in {_q(word)}", ctx.args_off + off)
        out.append(ast.KeyValue(key, value))
    return out


def _b_env(ctx: _Ctx, inst, rest: str) -> None:
    inst.pairs = _key_values(ctx, rest)
    if inst.pairs[0].legacy:
        inst.args = [inst.pairs[0].key, inst.pairs[0].value]
    else:
        inst.args = [f"{p.key}={p.value}" for p in inst.pairs]


def _b_arg(ctx: _Ctx, inst: ast.Arg, rest: str) -> None:
    _need_args(ctx, rest)
    for word, off in parse_words(rest, ctx.reader.escape):
        name, eq, value = word.partition("=")
        if not name:
            raise ctx.err(f"ARG: name can't be blank in {_q(word)}", ctx.args_off + off)
        inst.decls.append(ast.ArgDecl(name, value if eq else None))
    inst.args = [w for w, _ in parse_words(rest, ctx.reader.escape)]


def _b_copy(ctx: _Ctx, inst: ast.Copy, rest: str) -> None:
    _need_args(ctx, rest)
    lst, _ = _json_form(ctx, rest)
    if lst is not None:
        inst.args, inst.json_form = lst, True
        offs = [ctx.args_off] * len(lst)
    else:
        words = split_ws(rest, ctx.args_off)
        inst.args = [w for w, _ in words]
        offs = [o for _, o in words]
    if len(inst.args) < 2:
        raise ctx.err(f"{ctx.kind} requires at least two arguments: {ctx.kind} SRC... DEST")
    inst.sources, inst.dest = inst.args[:-1], inst.args[-1]
    if not inst.json_form and HEREDOC_RE.match(inst.dest) and inst.dest[inst.dest.index("<<") + 2:].lstrip("-"):
        raise ctx.err(f"{ctx.kind} cannot take a heredoc as the destination", offs[-1])
    inst.chown = inst.flag("chown")
    inst.chmod = inst.flag("chmod")
    # checked here when written literally, after expansion otherwise (scope)
    for name, value, check in (("chown", inst.chown, chown_error), ("chmod", inst.chmod, chmod_error)):
        why = value and "$" not in value and check(value)
        if why:
            raise ctx.flag_err(name, why)
    inst.link = inst.flag("link") == "true"
    inst.exclude = list(inst.flags.get("exclude", []))
    if isinstance(inst, ast.Add):
        inst.checksum = inst.flag("checksum")
        inst.keep_git_dir = inst.flag("keep-git-dir") == "true"
        unpack = inst.flag("unpack")
        inst.unpack = None if unpack is None else unpack == "true"
    else:
        inst.from_ = inst.flag("from")
        inst.parents = inst.flag("parents") == "true"
        if inst.from_ == "":
            raise ctx.flag_err("from", "expected a stage name, index or image")


def _attach_heredoc_sources(inst: ast.Instruction) -> None:
    """COPY/ADD: heredoc words among the sources become files named by the delimiter."""
    if not isinstance(inst, ast.Copy) or inst.json_form:
        return
    docs = iter(inst.heredocs)
    kept = []
    for src in inst.sources:
        m = HEREDOC_RE.match(src)
        if m and m.group(3):
            doc = next(docs, None)
            if doc is not None:
                doc.path = doc.name
                continue
        kept.append(src)
    inst.sources = kept


def _b_expose(ctx: _Ctx, inst: ast.Expose, rest: str) -> None:
    _need_args(ctx, rest)
    inst.args = inst.ports = [w for w, _ in split_ws(rest, 0)]


def _b_volume(ctx: _Ctx, inst: ast.Volume, rest: str) -> None:
    _need_args(ctx, rest)
    lst, _ = _json_form(ctx, rest)
    if lst is not None:
        inst.json_form = True
        inst.args = lst
    else:
        inst.args = [w for w, _ in split_ws(rest, 0)]
    if not inst.args or any(not p.strip() for p in inst.args):
        raise ctx.err("VOLUME specified can not be an empty string", ctx.args_off)
    inst.paths = list(inst.args)


def _b_string(attr: str):
    def build(ctx: _Ctx, inst, rest: str) -> None:
        _need_args(ctx, rest)
        inst.args = [rest]
        setattr(inst, attr, rest)
    return build


def _b_user(ctx: _Ctx, inst: ast.User, rest: str) -> None:
    _need_args(ctx, rest)
    inst.args = [rest]
    user, colon, group = rest.partition(":")
    inst.user, inst.group = user, (group if colon else None)


# `\d*(?:\.\d*)?`, not `\d*\.?\d*`: the two `\d*` of the latter make a long run of
# digits without a unit cost quadratic time.
_DURATION_RE = re.compile(r"(\d*(?:\.\d*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
             "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(s: str) -> int:
    """A Go duration ("1m30s", "1.5h", "0") in nanoseconds; ValueError if malformed."""
    text = s
    sign = 1
    if text[:1] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise ValueError(s)
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _DURATION_RE.match(text, pos)
        if not m or m.group(1) in ("", "."):
            raise ValueError(s)
        total += float(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    return sign * int(round(total))


def _b_healthcheck(ctx: _Ctx, inst: ast.Healthcheck, rest: str) -> None:
    _need_args(ctx, rest)
    m = re.match(r"(\S+)\s*", rest)
    typ = m.group(1).upper()
    cmd = rest[m.end():]
    if typ == "NONE":
        if cmd.strip():
            raise ctx.err("HEALTHCHECK NONE takes no arguments", ctx.args_off + m.end())
        if inst.flags:
            raise ctx.err("HEALTHCHECK NONE takes no options", ctx.args_off)
        inst.none, inst.test, inst.args = True, ["NONE"], ["NONE"]
        return
    if typ != "CMD":
        raise ctx.err(f"unknown type {_q(m.group(1))} in HEALTHCHECK: expected CMD or NONE",
                      ctx.args_off)
    if not cmd.strip():
        raise ctx.err("HEALTHCHECK CMD requires a command", ctx.args_off)
    lst, _ = _json_form(ctx, cmd)
    if lst is not None:
        inst.json_form = True
        inst.args = ["CMD", *lst]
        inst.test = ["CMD", *lst]
    else:
        inst.args = ["CMD", cmd]
        inst.test = ["CMD-SHELL", cmd]
    for name in ("interval", "timeout", "start-period", "start-interval"):
        v = inst.flag(name)
        if v is None:
            continue
        try:
            ns = parse_duration(v)
        except ValueError:
            raise ctx.flag_err(name, f"invalid duration {_q(v)}: expected e.g. 30s, 1m30s") from None
        if ns < 0:
            raise ctx.flag_err(name, f"{_q(v)} cannot be negative")
        if 0 < ns < 1_000_000:
            raise ctx.flag_err(name, f"{_q(v)} cannot be less than 1ms")
        setattr(inst, name.replace("-", "_"), ns)
    r = inst.flag("retries")
    if r is not None:
        try:
            inst.retries = int(r, 10)
        except ValueError:
            raise ctx.flag_err("retries", f"expected a number, not {_q(r)}") from None
        if inst.retries < 0:
            raise ctx.flag_err("retries", f"cannot be negative ({r})")


def _b_onbuild(ctx: _Ctx, inst: ast.Onbuild, rest: str) -> None:
    _need_args(ctx, rest)
    j = ctx.args_off
    text = ctx.node.text
    k = j
    while k < len(text) and text[k] not in WS:
        k += 1
    inner_kind = text[j:k].upper()
    if inner_kind == "ONBUILD":
        raise ctx.err("chaining ONBUILD via ONBUILD ONBUILD isn't allowed", j)
    if inner_kind in ("FROM", "MAINTAINER"):
        raise ctx.err(f"{inner_kind} isn't allowed as an ONBUILD trigger", j)
    inst.trigger = build(ctx.reader, ctx.node.sub(j))
    inst.expression = rest.strip(WS)
    inst.args = [inst.expression]


_CLASSES: dict[str, type[ast.Instruction]] = {
    "FROM": ast.From, "RUN": ast.Run, "CMD": ast.Cmd, "LABEL": ast.Label,
    "EXPOSE": ast.Expose, "ENV": ast.Env, "ADD": ast.Add, "COPY": ast.Copy,
    "ENTRYPOINT": ast.Entrypoint, "VOLUME": ast.Volume, "USER": ast.User,
    "WORKDIR": ast.Workdir, "ARG": ast.Arg, "ONBUILD": ast.Onbuild,
    "STOPSIGNAL": ast.StopSignal, "HEALTHCHECK": ast.Healthcheck, "SHELL": ast.Shell,
    "MAINTAINER": ast.Maintainer,
}
_BUILDERS = {
    "FROM": _b_from, "RUN": _b_run, "CMD": _b_command, "ENTRYPOINT": _b_command,
    "SHELL": _b_shell, "ENV": _b_env, "LABEL": _b_env, "ARG": _b_arg, "COPY": _b_copy,
    "ADD": _b_copy, "EXPOSE": _b_expose, "VOLUME": _b_volume, "USER": _b_user,
    "WORKDIR": _b_string("path"), "STOPSIGNAL": _b_string("signal"),
    "MAINTAINER": _b_string("name"), "HEALTHCHECK": _b_healthcheck, "ONBUILD": _b_onbuild,
}
