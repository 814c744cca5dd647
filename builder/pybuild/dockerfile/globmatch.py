"""Wildcard patterns matched by automaton, never by backtracking.

Shell patterns in `${v#pat}` / `${v/pat/r}` and .dockerignore patterns used to become
Python regexes, and Python's `re` backtracks: `*a*a*a*...b` against a long run of `a`s
takes exponential time. BuildKit compiles them to Go regexps (RE2: linear time); here a
pattern is a small NFA, run as a lazily built DFA (each (state set, char) step computed
once) for anchored matches, and as a thread simulation tracking each thread's start for
leftmost-longest search. Time is O(len(text) * len(pattern)) at worst.

Tokens (built by the callers, who own their syntax):
    ("lit", c)               the character c
    ("any", excluded)        one character not in the string `excluded`
    ("star", excluded)       any run of characters not in `excluded`
    ("class", neg, ranges)   one character in (or, neg, not in) [(lo, hi), ...]
    ("dirs",)                empty, or any run (no newline) ending in "/" (`(.*/)?`)
"""

from __future__ import annotations

import threading

_MAX_DFA_STATES = 4096  # the lazily built DFA is dropped and rebuilt past this (memory bound)


def _accepts(pred: tuple, ch: str) -> bool:
    kind = pred[0]
    if kind == "lit":
        return ch == pred[1]
    if kind == "any":
        return ch not in pred[1]
    # class
    inside = any(lo <= ch <= hi for lo, hi in pred[2])
    return inside != pred[1]


class Pattern:
    """A compiled token list. `fullmatch`, `match_ends` (anchored at a start) and
    `search` (leftmost start, then longest end, as a Go regexp with greedy stars)."""

    __slots__ = ("edges", "closure", "accept", "_dfa", "_lock")

    def __init__(self, tokens: list[tuple]):
        edges: list[list[tuple[tuple, int]]] = []
        eps: list[list[int]] = []

        def new() -> int:
            edges.append([])
            eps.append([])
            return len(edges) - 1

        cur = new()
        for tok in tokens:
            kind = tok[0]
            if kind == "star":
                nxt = new()
                edges[cur].append((("any", tok[1]), cur))
                eps[cur].append(nxt)
            elif kind == "dirs":
                inner, nxt = new(), new()
                eps[cur].append(nxt)
                eps[cur].append(inner)
                edges[inner].append((("any", "\n"), inner))
                edges[inner].append((("lit", "/"), nxt))
            else:
                nxt = new()
                edges[cur].append((tok, nxt))
            cur = nxt
        self.edges = edges
        self.accept = cur
        self.closure = [self._close(eps, s) for s in range(len(edges))]
        self._lock = threading.Lock()
        self._dfa = _DFA(self)

    @staticmethod
    def _close(eps: list[list[int]], s: int) -> frozenset:
        seen = {s}
        todo = [s]
        while todo:
            for t in eps[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return frozenset(seen)

    # -- lazy DFA (anchored matching) -----------------------------------------------------

    def _fresh_dfa(self) -> _DFA:
        dfa = _DFA(self)
        self._dfa = dfa
        return dfa

    def fullmatch(self, text: str) -> bool:
        dfa = self._dfa
        d = dfa.start
        for ch in text:
            dfa, d = dfa.step(d, ch)
            if not dfa.sets[d]:
                return False
        return dfa.acc[d]

    def match_ends(self, text: str, start: int = 0, *, shortest: bool) -> int | None:
        """End of the shortest (or longest) match of the pattern at text[start:], or None."""
        dfa = self._dfa
        d = dfa.start
        last = start if dfa.acc[d] else None
        if last is not None and shortest:
            return last
        for i in range(start, len(text)):
            dfa, d = dfa.step(d, text[i])
            if not dfa.sets[d]:
                break
            if dfa.acc[d]:
                if shortest:
                    return i + 1
                last = i + 1
        return last

    # -- search: leftmost start, longest end ----------------------------------------------

    def search(self, text: str, pos: int = 0) -> tuple[int, int] | None:
        """(start, end) of the leftmost match at or after pos, the longest from there."""
        best: tuple[int, int] | None = None
        threads: dict[int, int] = {}  # NFA state -> earliest start reaching it
        start_set, edges, closure, accept = self.closure[0], self.edges, self.closure, self.accept
        n = len(text)
        i = pos
        while True:
            if best is None:
                for s in start_set:
                    if s not in threads:
                        threads[s] = i
            a = threads.get(accept)
            if a is not None and (best is None or a < best[0] or (a == best[0] and i > best[1])):
                best = (a, i)
            if best is not None:
                threads = {s: st for s, st in threads.items() if st <= best[0]}
            if i >= n or not threads:
                return best
            ch = text[i]
            nxt: dict[int, int] = {}
            for s, st in threads.items():
                for pred, t in edges[s]:
                    if _accepts(pred, ch):
                        for u in closure[t]:
                            old = nxt.get(u)
                            if old is None or st < old:
                                nxt[u] = st
            threads = nxt
            i += 1


class _DFA:
    """DFA states (NFA state sets) built as the text needs them. Threads may share one:
    a miss takes the pattern's lock; past _MAX_DFA_STATES a fresh one replaces it, and a
    match in progress moves over to it."""

    __slots__ = ("pat", "ids", "sets", "trans", "acc", "start")

    def __init__(self, pat: Pattern):
        self.pat = pat
        self.ids: dict[frozenset, int] = {}
        self.sets: list[frozenset] = []
        self.trans: list[dict[str, int]] = []
        self.acc: list[bool] = []
        self.start = self._state(pat.closure[0])

    def _state(self, states: frozenset) -> int:
        i = self.ids.get(states)
        if i is None:
            i = len(self.sets)
            self.sets.append(states)
            self.trans.append({})
            self.acc.append(self.pat.accept in states)
            self.ids[states] = i
        return i

    def step(self, d: int, ch: str) -> tuple[_DFA, int]:
        nxt = self.trans[d].get(ch)
        if nxt is not None:
            return self, nxt
        pat = self.pat
        with pat._lock:
            dfa = self
            if len(self.sets) >= _MAX_DFA_STATES:
                dfa = pat._fresh_dfa()
                d = dfa._state(self.sets[d])
            out: set[int] = set()
            for s in dfa.sets[d]:
                for pred, t in pat.edges[s]:
                    if _accepts(pred, ch):
                        out |= pat.closure[t]
            nxt = dfa._state(frozenset(out))
            dfa.trans[d][ch] = nxt
        return dfa, nxt
