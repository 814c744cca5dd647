"""globmatch: the automaton agrees with a backtracking regex on small cases, and stays
fast where the regex explodes."""
import random
import re
import time

from pybuild.dockerfile.globmatch import Pattern


def _tokens(p: str) -> list:
    return [("star", "\n") if c == "*" else ("any", "\n") if c == "?" else ("lit", c) for c in p]


def _regex(p: str, greedy: bool = True) -> re.Pattern:
    star = ".*" if greedy else ".*?"
    return re.compile("".join(star if c == "*" else "." if c == "?" else re.escape(c) for c in p))


def test_agrees_with_regex():
    rnd = random.Random(7)
    for _ in range(5000):
        p = "".join(rnd.choice("ab*?") for _ in range(rnd.randint(0, 5)))
        v = "".join(rnd.choice("ab\n") for _ in range(rnd.randint(0, 8)))
        pat = Pattern(_tokens(p))
        assert pat.fullmatch(v) == bool(_regex(p).fullmatch(v)), (p, v)
        m = _regex(p, greedy=False).match(v)
        assert pat.match_ends(v, shortest=True) == (m.end() if m else None), (p, v)
        m = _regex(p).match(v)
        assert pat.match_ends(v, shortest=False) == (m.end() if m else None), (p, v)
        m = _regex(p).search(v)
        assert pat.search(v) == (m.span() if m else None), (p, v)


def test_classes_and_dirs():
    cls = Pattern([("lit", "x"), ("class", False, (("a", "c"),)), ("class", True, (("/", "/"),))])
    assert cls.fullmatch("xbz") and cls.fullmatch("xa\n") and not cls.fullmatch("xd1")
    assert not cls.fullmatch("xa/")
    dirs = Pattern([("dirs",), ("lit", "f")])
    assert dirs.fullmatch("f") and dirs.fullmatch("a/b/f") and not dirs.fullmatch("af")


def test_linear_where_regex_backtracks():
    pat = Pattern(_tokens("*a" * 30 + "*b"))
    t = time.monotonic()
    assert not pat.fullmatch("a" * 5000)
    assert pat.match_ends("a" * 5000, shortest=False) is None
    assert pat.search("a" * 2000) is None
    assert time.monotonic() - t < 5
