"""COPY/ADD --chmod values, as BuildKit reads them (dockerfile2llb/convert_copy.go).

An octal number up to 07777 sets the mode outright; anything else is a symbolic mode in
chmod(1)'s syntax (BSD setmode, as tonistiigi/dchapes-mode parses it with a zero umask),
applied to each copied file's own mode: `go-w`, `u=rw,g=r,o=r`, `a+X`.
"""
import stat

_NON_OCTAL = "invalid chmod parameter: '{}'. it should be octal string and between 0 and 07777"
_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007}


class Chmod:
    """A parsed --chmod: `octal` (int) or `clauses` (symbolic); apply() gives the mode."""

    def __init__(self, text: str, octal: int | None, clauses: list):
        self.text, self.octal, self.clauses = text, octal, clauses

    def apply(self, mode: int) -> int:
        """The permission bits for a file whose current st_mode is `mode`."""
        if self.octal is not None:
            return self.octal
        is_dir = stat.S_ISDIR(mode)
        m = stat.S_IMODE(mode)
        for who, op, perms, copy_from in self.clauses:
            if copy_from:  # `g=u`: the bits of one class, for the others
                src = {"u": (m >> 6) & 7, "g": (m >> 3) & 7, "o": m & 7}[copy_from]
                bits = (src << 6 | src << 3 | src) & who & 0o777
            else:
                bits = 0
                for p in perms:
                    if p == "r":
                        bits |= 0o444
                    elif p == "w":
                        bits |= 0o222
                    elif p == "x" or (p == "X" and (is_dir or m & 0o111)):
                        bits |= 0o111
                    elif p == "s":
                        bits |= 0o6000
                    elif p == "t":
                        bits |= 0o1000
                bits &= who
            if op == "+":
                m |= bits
            elif op == "-":
                m &= ~bits
            else:  # "=": clear the classes named, then set
                m = (m & ~who) | bits
        return m & 0o7777

    def dir_mode(self) -> int:
        """Mode of a directory COPY creates on the way to the destination: the octal mode's
        permission bits (fsutil's MkdirAll gets os.FileMode(mode)), else 0755."""
        return self.octal & 0o777 if self.octal is not None else 0o755


def parse_chmod(text: str) -> Chmod:
    """Parse a --chmod value; ValueError with BuildKit's message when it is not one."""
    if text and all(c in "01234567" for c in text):
        v = int(text, 8)
        if v > 0o7777:
            raise ValueError(_NON_OCTAL.format(text))
        return Chmod(text, v, [])
    if not text or text[0].isdigit():
        raise ValueError(_NON_OCTAL.format(text))
    clauses = []
    for clause in text.split(","):
        i, who = 0, 0
        while i < len(clause) and clause[i] in "ugoa":
            who |= 0o7777 if clause[i] == "a" else _WHO[clause[i]]
            i += 1
        if not who:
            who = 0o7777  # no class named: all of them (umask 0)
        if i >= len(clause):
            raise ValueError(f"invalid mode: {text}")
        while i < len(clause):
            op = clause[i]
            if op not in "+-=":
                raise ValueError(f"invalid mode: {text}")
            i += 1
            j = i
            while j < len(clause) and clause[j] not in "+-=":
                j += 1
            perms = clause[i:j]
            if perms in ("u", "g", "o"):
                clauses.append((who, op, "", perms))
            elif all(p in "rwxXst" for p in perms):
                clauses.append((who, op, perms, ""))
            else:
                raise ValueError(f"invalid mode: {text}")
            i = j
    return Chmod(text, None, clauses)
