""".dockerignore: which files of a build context the build may see.

Semantics of moby/patternmatcher (what docker and BuildKit use):
- one pattern a line; lines starting with `#` are comments; surrounding space trimmed;
  patterns are cleaned like Go's filepath.Clean and a leading `/` is dropped, so `/a`,
  `./a` and `a/` all mean `a`;
- Go filepath.Match syntax (`*` and `?` never cross `/`, `[a-z]`, `\\` escapes) plus `**`,
  which matches any number of directories, including none;
- a pattern matches a path when it matches the path or any of its parent directories,
  so excluding a directory excludes everything in it;
- `!pattern` re-includes; patterns apply in order and the last one that matches wins.

`Matcher.excluded(relpath)` answers for one path; `walk(root, matcher)` yields what is
included, without descending into excluded directories unless an exception could
re-include something inside them.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import stat as statmod
from collections.abc import Iterable, Iterator
from ..recordclass import record

from ocispec.errors import OCIError

from .globmatch import Pattern as _Automaton

IGNORE_FILE = ".dockerignore"


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def read_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore text, normalized as moby's ignorefile.ReadAll does."""
    out = []
    for n, line in enumerate(text.split("\n")):
        if n == 0 and line.startswith("\ufeff"):
            line = line[1:]
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line[0] == "!"
        if invert:
            line = line[1:].strip()
        if line:
            line = _clean(line)
            if len(line) > 1 and line[0] == "/":
                line = line[1:]
        out.append("!" + line if invert else line)
    return out


def _clean(p: str) -> str:
    """Go's filepath.Clean for slash paths."""
    if not p:
        return "."
    rooted = p.startswith("/")
    c = posixpath.normpath(p)
    if c.startswith("//"):
        c = "/" + c.lstrip("/")
    if rooted and c.startswith("/.."):
        # Go drops `..` at the root: /../a -> /a
        parts = [x for x in c.split("/") if x and x != ".."]
        c = "/" + "/".join(parts)
    return c


_EXACT, _PREFIX, _SUFFIX, _REGEX = range(4)


class Pattern:
    """One compiled pattern (moby's Pattern with its four match strategies)."""

    __slots__ = ("text", "exclusion", "dirs", "kind", "regex")

    def __init__(self, text: str, exclusion: bool):
        self.text = text
        self.exclusion = exclusion
        self.dirs = text.split("/")
        self.kind, self.regex = _compile(text)

    def match(self, path: str) -> bool:
        if self.kind == _EXACT:
            return path == self.text
        if self.kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == _SUFFIX:
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        return self.regex.fullmatch(path)

    def may_match_below(self, dirs: list[str]) -> bool:
        """Could this pattern match some path strictly inside the directory `dirs`?"""
        star = next((k for k, c in enumerate(self.dirs) if "**" in c), None)
        if star is None and len(self.dirs) <= len(dirs):
            return False
        # Components before a `**` must match the directory's own components.
        for pat, name in zip(self.dirs[:star], dirs):
            kind, rx = _compile(pat)
            if kind == _EXACT:
                if pat != name:
                    return False
            elif rx is not None and not rx.fullmatch(name):
                return False
        return True

    def __repr__(self) -> str:
        return ("!" if self.exclusion else "") + self.text


def _compile(pattern: str, doublestar: bool = True) -> tuple[int, _Automaton | None]:
    """moby's Pattern.compile: the match strategy, and for the regexp one the pattern as
    automaton tokens (what moby's Go regexp means: `*` = `[^/]*`, `?` = `[^/]`, a trailing
    `**` = `.*`, another `**` = `(.*/)?`, `[...]` a class). Matched by globmatch, which
    never backtracks: `*a*a*a...b` costs time linear in the path. doublestar=False: Go's
    filepath.Match, where `**` is two `*`s (COPY source wildcards)."""
    toks: list[tuple] = []
    kind = _EXACT
    i, n = 0, len(pattern)
    pos = 0
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if doublestar and i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                if i >= n:
                    if kind == _EXACT:
                        kind = _PREFIX
                    else:
                        toks.append(("star", "\n"))  # Go's `.` stops at a newline
                        kind = _REGEX
                else:
                    toks.append(("dirs",))
                    kind = _REGEX
                if pos == 0:
                    kind = _SUFFIX
            else:
                toks.append(("star", "/"))
                kind = _REGEX
        elif ch == "?":
            toks.append(("any", "/"))
            kind = _REGEX
        elif ch == "\\":
            if i < n:
                toks.append(("lit", pattern[i]))
                i += 1
                kind = _REGEX
            else:
                toks.append(("lit", "\\"))
        elif ch == "[":
            i = _class(pattern, i, toks)
            kind = _REGEX
        else:
            toks.append(("lit", ch))  # `]` and `^` alone are literals
        pos += 1
    if kind != _REGEX:
        return kind, None
    return kind, _Automaton(toks)


@functools.lru_cache(maxsize=256)
def _filepath_pattern(pattern: str) -> tuple[int, _Automaton | None] | None:
    try:
        _check_syntax(pattern)
    except OCIError:
        return None
    return _compile(pattern, doublestar=False)


def filepath_match(pattern: str, name: str) -> bool:
    """Go's filepath.Match: what COPY/ADD source wildcards use (fsutil's
    ResolveWildcards). `*` and `?` never cross `/` (so `**` is just `*`), `[^a]` negates,
    `\\x` is a literal x; a malformed pattern matches nothing (fsutil ignores the error)."""
    compiled = _filepath_pattern(pattern)
    if compiled is None:
        return False
    kind, rx = compiled
    return name == pattern if kind == _EXACT else rx.fullmatch(name)


def _class(p: str, i: int, toks: list) -> int:
    """Read the class after the `[` at p[i-1] (syntax checked by _check_syntax) into a
    ("class", negated, ranges) token; return the index after its `]`."""
    n = len(p)
    neg = i < n and p[i] == "^"
    if neg:
        i += 1
    ranges = []

    def char(i: int) -> tuple[str, int]:
        if p[i] == "\\":
            i += 1
        return p[i], i + 1

    while i < n and not (p[i] == "]" and ranges):
        lo, i = char(i)
        hi = lo
        if i < n and p[i] == "-":
            hi, i = char(i + 1)
        ranges.append((lo, hi))
    toks.append(("class", neg, tuple(ranges)))
    return i + 1


class Matcher:
    """Decides exclusion for context-relative paths. Patterns as read_patterns returns."""

    def __init__(self, patterns: Iterable[str] = ()):
        self.patterns: list[Pattern] = []
        for p in patterns:
            p = p.strip()
            if not p:
                continue
            p = _clean(p)
            exclusion = p[0] == "!"
            if exclusion:
                if len(p) == 1:
                    raise OCIError(f'{IGNORE_FILE}: illegal exclusion pattern: "!"')
                p = p[1:]
            _check_syntax(p)
            self.patterns.append(Pattern(p, exclusion))
        self.exclusions = [p for p in self.patterns if p.exclusion]

    @classmethod
    def from_text(cls, text: str) -> Matcher:
        return cls(read_patterns(text))

    @classmethod
    def for_context(cls, context_dir: str, dockerfile: str | None = None) -> Matcher:
        """The matcher of a context: `<Dockerfile>.dockerignore` next to the Dockerfile
        wins over the context's .dockerignore (as in BuildKit); none means match nothing."""
        candidates = []
        if dockerfile:
            candidates.append(dockerfile + ".dockerignore")
        candidates.append(os.path.join(context_dir, IGNORE_FILE))
        for path in candidates:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            from .parser import decode_text
            return cls.from_text(decode_text(data, os.path.basename(path)))
        return cls(())

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, relpath: str, is_dir: bool = False) -> bool:
        """True when relpath (slash-separated, relative to the context) is excluded.

        is_dir is accepted for callers that know it; as in docker, a pattern matches
        files and directories alike. Raises OCIError for a path outside the context.
        """
        path = clean_relpath(relpath)
        if path == ".":
            return False
        return self._match(path, path.split("/"))

    def _match(self, path: str, parts: list[str]) -> bool:
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        matched = False
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue  # only an exception can change an exclusion and vice versa
            hit = pat.match(path) or any(pat.match(p) for p in parents)
            if hit:
                matched = not pat.exclusion
        return matched

    def may_include_below(self, reldir: str) -> bool:
        """Whether an exception could re-include something inside an excluded reldir."""
        dirs = clean_relpath(reldir).split("/")
        return any(p.may_match_below(dirs) for p in self.exclusions)


def _check_syntax(p: str) -> None:
    """Reject what Go's filepath.Match rejects: a trailing `\\`, an unclosed `[`, and
    `-` or `]` where a class needs a character (`[]a]`, `[x-]`, `[a-b-c]`)."""
    def bad(why: str) -> OCIError:
        return OCIError(f"{IGNORE_FILE}: bad pattern {_q(p)}: {why}")

    def char(i: int) -> int:
        if i >= n or p[i] in "-]":
            raise bad("malformed character class")
        if p[i] == "\\":
            i += 1
            if i >= n:
                raise bad("trailing backslash")
        return i + 1

    n = len(p)
    i = 0
    while i < n:
        c = p[i]
        if c == "\\":
            if i + 1 >= n:
                raise bad("trailing backslash")
            i += 2
        elif c == "[":
            i += 1
            if i < n and p[i] == "^":
                i += 1
            ranges = 0
            while not (i < n and p[i] == "]" and ranges):
                if i >= n:
                    raise bad("unclosed [")
                i = char(i)
                if i < n and p[i] == "-":
                    i = char(i + 1)
                ranges += 1
            i += 1
        else:
            i += 1


def clean_relpath(relpath: str) -> str:
    """relpath cleaned to context-relative form ("." for the root); OCIError when it
    is absolute or climbs out of the context."""
    p = relpath.replace(os.sep, "/") if os.sep != "/" else relpath
    if p.startswith("/"):
        raise OCIError(f"path {_q(relpath)} is outside the build context: expected a path "
                       "relative to the context")
    c = posixpath.normpath(p) if p else "."
    if c == ".." or c.startswith("../"):
        raise OCIError(f"path {_q(relpath)} is outside the build context")
    return c


@record
class ContextEntry:
    """One included entry: relpath (slash-separated), path (on disk), its lstat."""

    relpath: str
    path: str
    stat: os.stat_result

    @property
    def is_dir(self) -> bool:
        return statmod.S_ISDIR(self.stat.st_mode)

    @property
    def is_symlink(self) -> bool:
        return statmod.S_ISLNK(self.stat.st_mode)


def walk(root: str, matcher: Matcher | None = None) -> Iterator[ContextEntry]:
    """The included entries under root in sorted, depth-first order; symlinks are
    yielded, never followed. An excluded directory is not yielded; it is entered only
    when an exception may re-include something inside it (its included contents are
    then yielded without the directory itself)."""
    matcher = matcher or Matcher(())
    if not os.path.isdir(root):
        raise OCIError(f"build context {_q(root)} is not a directory")
    yield from _walk(root, "", [], matcher)


def _walk(root: str, rel: str, parts: list[str], m: Matcher) -> Iterator[ContextEntry]:
    path = os.path.join(root, rel) if rel else root
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as e:
        raise OCIError(f"cannot read context directory {_q(rel or '.')}: {e.strerror}",
                       errno=e.errno) from None
    for e in entries:
        sub = f"{rel}/{e.name}" if rel else e.name
        subparts = parts + [e.name]
        st = e.stat(follow_symlinks=False)
        excluded = bool(m.patterns) and m._match(sub, subparts)
        isdir = statmod.S_ISDIR(st.st_mode)
        if not excluded:
            yield ContextEntry(sub, e.path, st)
        if isdir and (not excluded or m.may_include_below(sub)):
            yield from _walk(root, sub, subparts, m)
