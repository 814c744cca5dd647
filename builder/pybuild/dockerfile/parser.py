"""Dockerfile text -> parse tree (`ast`), following BuildKit's frontend/dockerfile/parser.

Two steps, as BuildKit does them: the line reader turns physical lines into logical
instructions (directives, comments, continuations, heredoc bodies), then each logical
line is split into keyword, flags and arguments and checked per instruction kind.
Nothing is expanded here; nothing touches the filesystem.
"""

from __future__ import annotations

import bisect
import difflib
import json
import re

from ocispec.errors import OCIError

from . import ast
from .expand import delimiter_words
from .mounts import MountError, parse_mount

_DIRECTIVE_RE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_RE = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_WS = " \t\v\f\r"
_LEADING_TABS_RE = re.compile(r"^\t+", re.M)

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
HEREDOC_KINDS = ("RUN", "COPY", "ADD")  # instructions that read heredoc bodies
NETWORK_MODES = ("none", "host", "default")
SECURITY_MODES = ("insecure", "sandbox")


def _q(s: str) -> str:
    """s in double quotes, for messages."""
    return json.dumps(s, ensure_ascii=False)


def decode_text(data: bytes, filename: str) -> str:
    """The text of a Dockerfile (or .dockerignore) read as bytes; OCIError naming the line,
    column and byte offset of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise OCIError(f"{filename}:{line}:{col}: not UTF-8 text: byte 0x{data[e.start]:02x} at "
                       f"offset {e.start}", hint="save the file as UTF-8") from None


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


def _continuation_re(esc: str) -> re.Pattern[str]:
    # The escape char ends a line as a continuation unless it is itself escaped.
    e = re.escape(esc)
    return re.compile(rf"(?:^|(?<=[^{e}])){e}[ \t]*$")


class _Positions:
    """Maps offsets in a logical line (continuations joined) back to line and column."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.where: list[tuple[int, int]] = []  # (line, column of the segment's first char)

    def add(self, offset: int, line: int, col: int) -> None:
        self.starts.append(offset)
        self.where.append((line, col))

    def at(self, offset: int) -> tuple[int, int]:
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        line, col = self.where[i]
        return line, col + offset - self.starts[i]


class Node:
    """One instruction as the line reader sees it, BuildKit's parser.Node: the keyword as
    written, the leading `--flag` words and the argument text, each with its offset in the
    logical line (continuations joined) so errors can point at it. read_heredocs fills in
    the heredoc bodies that follow the instruction."""

    __slots__ = ("text", "pos", "end_line", "keyword", "line", "column", "flags", "args_off",
                 "rest", "original", "heredocs", "body_lines")

    def __init__(self, text: str, pos: _Positions, end_line: int, base: int = 0):
        self.text = text
        self.pos = pos
        self.end_line = end_line
        j = base
        while j < len(text) and text[j] not in _WS:
            j += 1
        self.keyword = text[base:j]
        self.line, self.column = pos.at(base)
        rest_off = j
        while rest_off < len(text) and text[rest_off] in _WS:
            rest_off += 1
        self.flags, self.args_off = extract_flags(text, rest_off)
        self.rest = text[self.args_off:].rstrip(_WS)
        self.original = text[base:].strip(_WS)
        self.heredocs: list[ast.Heredoc] = []
        self.body_lines = 0  # lines after end_line that heredoc bodies took

    def sub(self, base: int) -> Node:
        """The instruction that starts at offset base of this line (ONBUILD's trigger)."""
        return Node(self.text, self.pos, self.end_line, base)

    def takes_heredocs(self) -> bool:
        """RUN, COPY and ADD read heredoc bodies, also as an ONBUILD trigger (BuildKit's
        heredocDirectives and heredocCompoundDirectives)."""
        kind = self.keyword.upper()
        if kind == "ONBUILD":
            kind = self.sub(self.args_off).keyword.upper()
        return kind in HEREDOC_KINDS and "<<" in self.text


class LineReader:
    """Dockerfile text -> Nodes, one per instruction: directives, comments, continuations
    and heredoc bodies, BuildKit's parser.Parse. Iterate it for the nodes; call
    read_heredocs(node) before taking the next one when the node may have bodies."""

    def __init__(self, text: str, filename: str):
        self.filename = filename
        if text.startswith("\ufeff"):
            text = text[1:]
        self.lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
        self.escape = "\\"
        self.directives: dict[str, str] = {}
        self.warnings: list[str] = []
        self._cont_re = _continuation_re("\\")

    # -- errors -------------------------------------------------------------------
    def err(self, line: int, col: int, msg: str, hint: str | None = None) -> OCIError:
        return OCIError(f"{self.filename}:{line}:{col}: {msg}", hint=hint)

    # -- line reader ----------------------------------------------------------------
    def _directive(self, raw: str, lineno: int) -> bool:
        indent = len(raw) - len(raw.lstrip(_WS))
        raw = raw[indent:]  # BuildKit strips leading space before looking
        m = _DIRECTIVE_RE.match(raw)
        if not m or m.group(1).lower() not in _DIRECTIVES:
            return False
        name, value = m.group(1).lower(), m.group(2)
        if name in self.directives:
            raise self.err(lineno, 1, f"only one {name} parser directive can be used")
        if name == "escape":
            if value not in ("\\", "`"):
                raise self.err(lineno, indent + raw.index(value) + 1,
                               f"invalid escape token {_q(value)}: expected \\ or `")
            self.escape = value
            self._cont_re = _continuation_re(value)
        self.directives[name] = value
        return True

    def _trim_cont(self, s: str) -> tuple[str, bool]:
        m = self._cont_re.search(s)
        if m:
            return s[:m.start()], False
        return s, True

    def __iter__(self):
        """Each instruction's Node in order, lazily: an error on a later line is not
        raised before the caller is done with the nodes before it."""
        lines = self.lines
        n = len(lines)
        i = 0
        in_directives = True
        while i < n:
            raw = lines[i]
            lineno = i + 1
            i += 1
            if in_directives:
                if self._directive(raw, lineno):
                    continue
                in_directives = False
            stripped = raw.lstrip(_WS)
            if not stripped or stripped.startswith("#"):
                continue
            col0 = len(raw) - len(stripped) + 1
            pos = _Positions()
            pos.add(0, lineno, col0)
            text, done = self._trim_cont(stripped)
            parts = [text]
            length = len(text)
            end = lineno
            empty_line = 0
            while not done and i < n:
                raw = lines[i]
                i += 1
                s = raw.lstrip(_WS)
                if s.startswith("#"):
                    continue  # comment lines inside a continuation are dropped
                if not s.strip(_WS):
                    empty_line = empty_line or i
                    continue
                t, done = self._trim_cont(raw)
                pos.add(length, i, 1)
                parts.append(t)
                length += len(t)
                end = i
            node = Node("".join(parts), pos, end)
            if empty_line:
                # BuildKit warns once per instruction; such lines will become errors there
                self.warnings.append(f"{self.filename}:{empty_line}: empty continuation line "
                                     f"in {_q(node.text)}")
            yield node
            i += node.body_lines

    # -- heredocs -------------------------------------------------------------------
    def _markers(self, node: Node) -> list[tuple[ast.Heredoc, int]]:
        """Heredoc markers on the line with their offsets, BuildKit's heredocsFromLine."""
        found = []
        words = parse_words(node.text, self.escape)
        for k, (word, off) in enumerate(words):
            if "<<" not in word:
                continue
            if re.fullmatch(r"\d*<<", word) and k + 1 < len(words):
                word = word + " " + words[k + 1][0]  # `<< EOF`: BuildKit keeps it one word
            m = _HEREDOC_RE.match(word)
            if not m or not m.group(3):
                continue
            rest = m.group(3)
            try:
                lexed = delimiter_words(rest, raw_quotes=False)
                raw = delimiter_words(rest, raw_quotes=True)
            except OCIError:
                continue
            if len(lexed) != 1 or len(raw) != 1:
                continue
            plain = lexed[0]
            # Quotes that lexing removed mean part of the delimiter was quoted: then the
            # body is not expanded (BuildKit compares the quote counts the same way).
            expand = _quotes(plain) == _quotes(raw[0])
            found.append((ast.Heredoc(name=plain, content="", chomp=m.group(2) == "-",
                                      expand=expand, fd=int(m.group(1) or 0)), off))
        return found

    def read_heredocs(self, node: Node) -> list[ast.Heredoc]:
        """The heredoc bodies on the lines after the node's last line, also set on the node
        (with end_line moved past them): called once the instruction itself is known good,
        so its own errors come before an unterminated body's."""
        docs = self._markers(node) if node.takes_heredocs() else []
        if not docs:
            return []
        start = i = node.end_line  # bodies start on the line after the instruction's last
        for doc, off in docs:
            body: list[str] = []
            while True:
                if i >= len(self.lines):
                    line, col = node.pos.at(off)
                    raise self.err(line, col, f"unterminated heredoc {_q(doc.name)}: "
                                   f"expected a line {_q(doc.name)} before the end of the file")
                raw = self.lines[i]
                i += 1
                cand = raw.lstrip("\t") if doc.chomp else raw
                if cand == doc.name:
                    break
                body.append(raw + "\n")
            content = "".join(body)
            if doc.chomp:
                content = _LEADING_TABS_RE.sub("", content)
            doc.content = content
        node.body_lines = i - start
        node.end_line += node.body_lines
        node.heredocs = [h for h, _ in docs]
        return node.heredocs


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
        self.p = reader
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
        return self.p.err(line, col, msg, hint)

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


def extract_flags(text: str, start: int) -> tuple[list[tuple[str, int]], int]:
    """Leading `--flag[=value]` words (quotes and \\ handled as BuildKit does).

    Returns the flag words with their offsets and the offset where the arguments start.
    """
    words: list[tuple[str, int]] = []
    pos = start
    n = len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n or not text.startswith("--", pos):
            return words, pos
        wstart = pos
        word: list[str] = []
        quote = ""
        while pos < n:
            ch = text[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == "\\" and pos + 1 < n:
                    pos += 1
                    word.append(text[pos])
                else:
                    word.append(ch)
            elif ch.isspace():
                break
            elif ch in "'\"":
                quote = ch
            elif ch == "\\":
                if pos + 1 < n:
                    pos += 1
                    word.append(text[pos])
            else:
                word.append(ch)
            pos += 1
        w = "".join(word)
        if w == "--":
            while pos < n and text[pos].isspace():
                pos += 1
            return words, pos
        words.append((w, wstart))


def parse_words(rest: str, escape: str) -> list[tuple[str, int]]:
    """BuildKit's parseWords: split on whitespace outside quotes, keeping quotes and
    escapes in the words."""
    words: list[tuple[str, int]] = []
    n = len(rest)
    pos = 0
    while pos < n:
        while pos < n and rest[pos].isspace():
            pos += 1
        if pos >= n:
            break
        start = pos
        buf: list[str] = []
        quote = ""
        blank_ok = False
        while pos < n:
            ch = rest[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == escape and quote != "'":
                    if pos + 1 == n:
                        pos += 1
                        break
                    buf.append(ch)
                    pos += 1
                    ch = rest[pos]
                buf.append(ch)
                pos += 1
                continue
            if ch.isspace():
                break
            if ch in "'\"":
                quote = ch
                blank_ok = True
            elif ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
            pos += 1
        if buf or blank_ok:
            words.append(("".join(buf), start))
    return words


def _quotes(s: str) -> int:
    return s.count("'") + s.count('"')


def split_ws(rest: str, base: int) -> list[tuple[str, int]]:
    return [(m.group(), base + m.start()) for m in re.finditer(r"[^\t\v\f\r ]+", rest)]


def maybe_json(rest: str) -> list | None:
    """The list if rest is a JSON array, else None: invalid JSON is shell form, as in
    BuildKit's parseMaybeJSON."""
    s = rest.lstrip()
    if not s.startswith("["):
        return None
    try:
        value = json.loads(s)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


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
        if not _STAGE_NAME_RE.match(name):
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
            raise ctx.p.err(line, col, f"RUN: --mount: {e}") from None


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
    words = parse_words(rest, ctx.p.escape)
    if "=" not in words[0][0]:
        parts = re.split(r"[\t\v\f\r ]+", rest.strip(_WS), maxsplit=1)
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
    for word, off in parse_words(rest, ctx.p.escape):
        name, eq, value = word.partition("=")
        if not name:
            raise ctx.err(f"ARG: name can't be blank in {_q(word)}", ctx.args_off + off)
        inst.decls.append(ast.ArgDecl(name, value if eq else None))
    inst.args = [w for w, _ in parse_words(rest, ctx.p.escape)]


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
    if not inst.json_form and _HEREDOC_RE.match(inst.dest) and inst.dest[inst.dest.index("<<") + 2:].lstrip("-"):
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
        m = _HEREDOC_RE.match(src)
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
    while k < len(text) and text[k] not in _WS:
        k += 1
    inner_kind = text[j:k].upper()
    if inner_kind == "ONBUILD":
        raise ctx.err("chaining ONBUILD via ONBUILD ONBUILD isn't allowed", j)
    if inner_kind in ("FROM", "MAINTAINER"):
        raise ctx.err(f"{inner_kind} isn't allowed as an ONBUILD trigger", j)
    inst.trigger = build(ctx.p, ctx.node.sub(j))
    inst.expression = rest.strip(_WS)
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
