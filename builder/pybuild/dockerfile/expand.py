"""Variable substitution: the word grammar of BuildKit's shell lexer.

Not a shell: no globbing, no command substitution, no arithmetic. What it does, as
BuildKit's frontend/dockerfile/shell does:

- `$NAME`, `${NAME}`; `$1` style digits and the special parameters `$@ $* $# $? $- $$ $!
  $0` expand to their env value (normally empty); a lone `$` stays `$`.
- `${N:-w}` `${N-w}` `${N:+w}` `${N+w}` `${N:?msg}` `${N?msg}` (the `:` forms treat an
  empty value as unset), `${N#pat}` `${N##pat}` `${N%pat}` `${N%%pat}`,
  `${N/pat/repl}` `${N//pat/repl}`; patterns know `*`, `?` and `\\` escapes; the word
  after a modifier is itself expanded (nested `${...}` and quotes work).
- Single quotes are literal; double quotes keep spaces and expand `$`; the escape char
  (`\\` or the `# escape=` one) escapes the next char outside quotes and `"`, `$` and itself
  inside double quotes; an escape at the very end is dropped.

`expand` returns one string (spaces kept); `expand_words` also splits into words on
unquoted whitespace (including whitespace that came out of a variable).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from ocispec.errors import OCIError

from .globmatch import Pattern

_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_MAX_DEPTH = 100
_EOF = ""


class _Words:
    """Word splitting that runs alongside expansion (BuildKit's wordsStruct)."""

    __slots__ = ("words", "buf", "in_word")

    def __init__(self) -> None:
        self.words: list[str] = []
        self.buf: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word:
                self.words.append("".join(self.buf))
                self.buf = []
                self.in_word = False
        else:
            self.buf.append(ch)
            self.in_word = True

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        self.buf.append(s)
        self.in_word = True

    def result(self) -> list[str]:
        if self.in_word:
            self.words.append("".join(self.buf))
            self.buf = []
            self.in_word = False
        return self.words


class _Lexer:
    __slots__ = ("s", "pos", "env", "escape", "raw_quotes", "raw_escapes", "skip_unset",
                 "skip_quotes", "depth")

    def __init__(self, s: str, env: Mapping[str, str], escape: str, *,
                 raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_unset: bool = False, skip_quotes: bool = False):
        self.s = s
        self.skip_quotes = skip_quotes
        self.pos = 0
        self.env = env
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.depth = 0

    def peek(self) -> str:
        return self.s[self.pos] if self.pos < len(self.s) else _EOF

    def next(self) -> str:
        if self.pos < len(self.s):
            ch = self.s[self.pos]
            self.pos += 1
            return ch
        return _EOF

    def process(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Read up to `stop` (consumed) or the end (stop == ""). raw_escapes holds for
        everything read meanwhile, double quotes included, as in BuildKit."""
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._process(stop, raw_escapes)
        finally:
            self.raw_escapes = saved

    def _process(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        out: list[str] = []
        words = _Words()
        s, esc = self.s, self.escape
        n = len(s)
        while self.pos < n:
            ch = s[self.pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(out), words.result()
            if ch == "'" and not self.skip_quotes:
                tmp = self._single_quote()
                out.append(tmp)
                words.add_raw_string(tmp)
            elif ch == '"' and not self.skip_quotes:
                tmp = self._double_quote()
                out.append(tmp)
                words.add_raw_string(tmp)
            elif ch == "$":
                tmp = self._dollar()
                out.append(tmp)
                words.add_string(tmp)
            elif ch == "<" and s.startswith("<<", self.pos):
                # `<< EOF` stays one word, so heredoc markers survive word splitting
                j = self.pos + 2
                while j < n and s[j] in " \t":
                    j += 1
                tmp = s[self.pos:j]
                self.pos = j
                out.append(tmp)
                words.add_raw_string(tmp)
            else:
                self.pos += 1
                if ch == esc:
                    if raw_escapes:
                        words.add_raw_char(ch)
                        out.append(ch)
                    ch = self.next()
                    if ch == _EOF:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                out.append(ch)
        if stop:
            raise _LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.result()

    def _single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        start = self.pos + 1
        end = self.s.find("'", start)
        if end < 0:
            raise _LexError("unexpected end of statement while looking for matching single-quote")
        self.pos = end + 1
        body = self.s[start:end]
        return f"'{body}'" if self.raw_quotes else body

    def _double_quote(self) -> str:
        out: list[str] = []
        self.next()
        if self.raw_quotes:
            out.append('"')
        esc = self.escape
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    out.append('"')
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            ch = self.next()
            if ch == esc:
                nxt = self.peek()
                if self.raw_escapes:
                    out.append(ch)
                    if nxt in ('"', "$", esc):
                        out.append(self.next())
                    continue
                if nxt == _EOF:
                    continue  # an escape at the end of the word is dropped
                if nxt in ('"', "$", esc):
                    ch = self.next()
            out.append(ch)

    def _name(self) -> str:
        s, i, n = self.s, self.pos, len(self.s)
        if i < n and s[i].isdigit():
            j = i
            while j < n and s[j].isdigit():
                j += 1
            self.pos = j
            return s[i:j]
        if i < n and s[i] in _SPECIAL_PARAMS:
            self.pos = i + 1
            return s[i]
        j = i
        while j < n and (s[j].isalnum() or s[j] == "_"):
            j += 1
        self.pos = j
        return s[i:j]

    def _get(self, name: str) -> tuple[str, bool]:
        v = self.env.get(name)
        return ("", False) if v is None else (v, True)

    def _dollar(self) -> str:
        # Each nested ${...} recurses: bound the depth rather than hit Python's stack limit.
        if self.depth >= _MAX_DEPTH:
            raise _LexError(f"variable substitutions nested more than {_MAX_DEPTH} deep")
        self.depth += 1
        try:
            return self._dollar_body()
        finally:
            self.depth -= 1

    def _dollar_body(self) -> str:
        self.next()  # the $
        if self.peek() != "{":
            name = self._name()
            if not name:
                return "$"
            value, found = self._get(name)
            if not found and self.skip_unset:
                return "$" + name
            return value
        self.next()  # the {
        ch = self.peek()
        if ch == _EOF:
            raise _LexError("syntax error: missing '}'")
        if ch in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self._name()
        ch = self.next()
        mod = ch
        if ch == "}":
            value, found = self._get(name)
            if not found and self.skip_unset:
                return "${" + name + "}"
            return value
        if ch == _EOF:
            raise _LexError("syntax error: missing '}'")
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            mod += ch
        if ch in "+-?#%" and ch:
            keep_escapes = ch in "#%"
            if null_is_unset and keep_escapes:
                raise _LexError(f"unsupported modifier ({mod}) in substitution")
            word = self._word_until("}", keep_escapes)
            value, found = self._get(name)
            if self.skip_unset and not found:
                return "${" + name + mod + word + "}"
            if ch == "-":
                return word if (not found or (null_is_unset and value == "")) else value
            if ch == "+":
                return "" if (not found or (null_is_unset and value == "")) else word
            if ch == "?":
                if not found:
                    raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and value == "":
                    raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            greedy = bool(word) and word[0] == ch
            if greedy:
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        if ch == "/" and not null_is_unset:
            replace_all = self.peek() == "/"
            if replace_all:
                self.next()
            try:
                pattern, _ = self.process("/", True)
            except _LexError:
                if self.peek() == _EOF:
                    raise _LexError("syntax error: missing '/' in ${}") from None
                raise
            subst = self._word_until("}", True)
            value, found = self._get(name)
            if self.skip_unset and not found:
                return "${" + name + "/" + pattern + "/" + subst + "}"
            return _replace(pattern, value, subst, replace_all)
        # consume the rest so the message can show it, then refuse
        raise _LexError(f"unsupported modifier ({mod}) in substitution")

    def _word_until(self, stop: str, raw_escapes: bool) -> str:
        try:
            word, _ = self.process(stop, raw_escapes)
        except _LexError:
            if self.peek() == _EOF:
                raise _LexError("syntax error: missing '}'") from None
            raise
        return word


class _LexError(Exception):
    pass


@functools.lru_cache(maxsize=256)
def _compile_pattern(pattern: str) -> Pattern:
    """A shell pattern (`*`, `?`, `\\x`), as BuildKit's convertShellPatternToRegex reads
    it: other chars are literal and, as Go's `.`, wildcards do not match a newline. Matched
    by automaton (globmatch): no pattern can make it backtrack."""
    toks: list[tuple] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            toks.append(("star", "\n"))
        elif ch == "?":
            toks.append(("any", "\n"))
        elif ch == "\\":
            if i < n and pattern[i] in "}/":
                continue  # `\}` and `\/` inside ${...}: the escape is not part of the pattern
            nxt = pattern[i] if i < n else ""
            i += 1
            if nxt not in ("*", "?", "\\"):
                raise _LexError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{nxt}'")
            toks.append(("lit", nxt))
        else:
            toks.append(("lit", ch))
    return Pattern(toks)


def _reverse_pattern(pattern: str) -> str:
    # Reverse the pattern but keep each `\x` escape pair in order.
    toks: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            toks.append(pattern[i:i + 2])
            i += 2
        else:
            toks.append(pattern[i])
            i += 1
    return "".join(reversed(toks))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    end = _compile_pattern(pattern).match_ends(value, 0, shortest=not greedy)
    return value if end is None else value[end:]


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # Shortest/longest rightmost match = shortest/longest prefix match of the reversals.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _replace(pattern: str, value: str, subst: str, replace_all: bool) -> str:
    """`${v/pat/s}` and `${v//pat/s}`: Go's Regexp.ReplaceAllString (leftmost match, greedy
    stars; an empty match right after a match is not replaced; always advance)."""
    pat = _compile_pattern(pattern)
    if not replace_all:
        m = pat.search(value, 0)
        return value if m is None else value[:m[0]] + subst + value[m[1]:]
    out: list[str] = []
    last = pos = 0
    n = len(value)
    while pos <= n:
        m = pat.search(value, pos)
        if m is None:
            break
        out.append(value[last:m[0]])
        if m[1] > last or m[0] == 0:
            out.append(subst)
        last = m[1]
        pos = pos + 1 if pos + 1 > m[1] else m[1]
    out.append(value[last:])
    return "".join(out)


def _run(word: str, env: Mapping[str, str], escape: str, **opts) -> tuple[str, list[str]]:
    try:
        return _Lexer(word, env, escape, **opts).process("", opts.get("raw_escapes", False))
    except _LexError as e:
        shown = word if len(word) <= 200 else word[:100] + "..." + word[-20:]
        raise OCIError(f"failed to process {_go_quote(shown)}: {e}") from None


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """Expand variables in word and remove quotes; whitespace is kept.

    Raises OCIError (`failed to process "...": reason`) on a syntax error or a `${N?msg}`.
    """
    if "$" not in word and "'" not in word and '"' not in word and escape not in word:
        return word
    return _run(word, env, escape)[0]


def expand_words(text: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """Expand text and split it into words on unquoted whitespace."""
    return _run(text, env, escape)[1]


def raw_words(text: str, *, escape: str = "\\") -> list[str]:
    """Split text into words keeping quotes and variables as written (no expansion)."""
    return _run(text, {}, escape, raw_quotes=True, raw_escapes=True, skip_unset=True)[1]


def expand_heredoc(content: str, env: Mapping[str, str]) -> str:
    """Expand a COPY/ADD heredoc body as BuildKit does: `$` and `\\` are processed,
    quotes are ordinary characters."""
    if "$" not in content and "\\" not in content:
        return content
    return _run(content, env, "\\", skip_quotes=True)[0]


def delimiter_words(text: str, *, raw_quotes: bool) -> list[str]:
    """Words of a heredoc delimiter, variables left as written (for the parser)."""
    return _run(text, {}, "\\", raw_quotes=raw_quotes, skip_unset=True)[1]


def unquote(word: str, *, escape: str = "\\") -> str:
    """word with quotes removed and no variable expanded."""
    return _run(word, {}, escape, skip_unset=True)[0]
