"""Dockerfile text -> Nodes, BuildKit's frontend/dockerfile/parser.

The line reader turns physical lines into one Node per instruction: parser directives,
comments, continuations (with the escape token), heredoc bodies, and each logical line
split into keyword, `--flag` words and argument text, every part with its line and
column. The word splitters (BuildKit's line_parsers: whitespace, quote-aware words, JSON
arrays) are here too. What a Node means is decided in `instructions`. Nothing is
expanded here; nothing touches the filesystem.
"""

from __future__ import annotations

import bisect
import json
import re

from ocispec.errors import OCIError

from . import ast
from .expand import delimiter_words

_DIRECTIVE_RE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
_DIRECTIVES = ("syntax", "escape", "check")
HEREDOC_RE = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")
WS = " \t\v\f\r"
_LEADING_TABS_RE = re.compile(r"^\t+", re.M)
HEREDOC_KINDS = ("RUN", "COPY", "ADD")  # instructions that read heredoc bodies


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
        while j < len(text) and text[j] not in WS:
            j += 1
        self.keyword = text[base:j]
        self.line, self.column = pos.at(base)
        rest_off = j
        while rest_off < len(text) and text[rest_off] in WS:
            rest_off += 1
        self.flags, self.args_off = extract_flags(text, rest_off)
        self.rest = text[self.args_off:].rstrip(WS)
        self.original = text[base:].strip(WS)
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
        indent = len(raw) - len(raw.lstrip(WS))
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
            stripped = raw.lstrip(WS)
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
                s = raw.lstrip(WS)
                if s.startswith("#"):
                    continue  # comment lines inside a continuation are dropped
                if not s.strip(WS):
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
            m = HEREDOC_RE.match(word)
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
