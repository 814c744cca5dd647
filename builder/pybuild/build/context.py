"""The build context: safe lookups, .dockerignore, and content digests with a stat cache.

Content digests feed the layer cache key, so a file whose mtime changed but whose content
did not still hits. The stat cache (size, mtime_ns, inode, ctime_ns -> digest) under the
store root means an unchanged context is not re-read on every build.
"""
import hashlib
import json
import os
import stat
import threading
import time
import uuid

from ocispec import digest as _digest
from ocispec.errors import OCIError


_RACY_NS = 2_000_000_000


class StatCache:
    """Persistent map from a file's identity and stat to its content digest."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._dirty = False
        try:
            with open(path) as f:
                self._data = json.load(f)
        except (OSError, ValueError):
            self._data = {}

    def digest(self, abspath: str, st: os.stat_result) -> str:
        key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        with self._lock:
            hit = self._data.get(abspath)
        if hit and tuple(hit[:4]) == key:
            return hit[4]
        dg = _digest.hash_file(abspath, size_hint=st.st_size)[0]
        # A file changed within the clock's granularity of now could change again without
        # its stat changing (git's "racy clean" problem): remember only older ones.
        if st.st_ctime_ns < time.time_ns() - _RACY_NS and st.st_mtime_ns < time.time_ns() - _RACY_NS:
            with self._lock:
                self._data[abspath] = [*key, dg]
                self._dirty = True
        return dg

    def save(self) -> None:
        if not self._dirty:
            return
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with self._lock:
            data = json.dumps(self._data, separators=(",", ":"))
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, self.path)


def has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


class Source:
    """A filesystem tree COPY reads from: the context, or a stage's/image's rootfs.

    In a rootfs, symlinks resolve inside it; in the context, a source path that leads out
    of the context is an error.
    """

    def __init__(self, root: str, *, is_context: bool, ignore=None, stat_cache=None):
        self.root = os.path.realpath(root)
        self.is_context = is_context
        self.ignore = ignore
        self.stat_cache = stat_cache

    def ignored(self, rel: str) -> bool:
        if not self.ignore or not rel:
            return False
        return self.ignore.excluded(rel)

    def host(self, rel: str) -> str:
        """Host path of `rel`, symlinks in its parents resolved inside the source root."""
        from ..rootfs import resolve_in_root
        inner = resolve_in_root(self.root, rel, follow_last=True)
        return os.path.join(self.root, inner.lstrip("/")) if inner != "/" else self.root

    def expand(self, pattern: str, what: str) -> list[str]:
        """Relative paths a COPY source names. Wildcards are Go's filepath.Match, as
        fsutil's ResolveWildcards applies them: `*` stays within a component (`**` too), so
        matching component by component is the same. A wildcard that matches nothing gives
        no paths, not an error (BuildKit's AllowEmptyWildcard)."""
        clean = os.path.normpath("/" + pattern).lstrip("/")
        if self.is_context and pattern.replace("\\", "/").split("/").count("..") and \
                os.path.normpath(pattern).startswith(".."):
            raise OCIError(f"{what}: source {pattern!r} is outside the build context")
        if not has_magic(clean):
            if clean and self.ignored(clean):
                raise OCIError(f"{what}: source {pattern!r} is excluded by .dockerignore")
            if not os.path.lexists(self.host(clean) if clean else self.root):
                raise OCIError(f"{what}: source {pattern!r} does not exist"
                               + (" in the build context" if self.is_context else ""))
            return [clean]
        from ..dockerfile.dockerignore import filepath_match
        parts = clean.split("/")
        found = [""]
        for comp in parts:
            nxt = []
            for base in found:
                d = self.host(base) if base else self.root
                if not os.path.isdir(d):
                    continue
                for name in sorted(os.listdir(d)):
                    if filepath_match(comp, name):
                        rel = f"{base}/{name}" if base else name
                        if not self.ignored(rel):
                            nxt.append(rel)
            found = nxt
        return found

    def expand_included(self, pattern: str) -> list[str]:
        """COPY --parents with a wildcard: BuildKit copies with the pattern as an include
        pattern (moby/patternmatcher: `**` crosses directories). The top-most paths that
        match, below the pattern's literal prefix; none is not an error."""
        from ..dockerfile.dockerignore import Matcher
        clean = os.path.normpath("/" + pattern).lstrip("/")
        parts = clean.split("/")
        n = next(i for i, p in enumerate(parts) if has_magic(p))
        prefix = "/".join(parts[:n])
        if not os.path.isdir(self.host(prefix) if prefix else self.root):
            return []
        m = Matcher([clean])
        found = []

        def hit(sub: str) -> bool:  # matched: taken whole, not walked into
            if m.excluded(sub):
                found.append(sub)
                return True
            return False
        for _ in self.walk(prefix, hit):
            pass
        return sorted(found)

    def walk(self, rel: str, exclude=None):
        """Yield (relpath, hostpath, lstat) for rel and everything below it (dirs first),
        skipping ignored and excluded paths; symlinks are not followed below rel."""
        top = self.host(rel) if rel else self.root
        st = os.lstat(top)
        yield rel, top, st
        if not stat.S_ISDIR(st.st_mode):
            return
        stack = [(rel, top)]
        while stack:
            r, h = stack.pop()
            with os.scandir(h) as it:
                items = sorted(it, key=lambda e: e.name)
            for e in items:
                sub = f"{r}/{e.name}" if r else e.name
                if self.ignored(sub) and not self._may_reinclude(sub, e):
                    continue
                if exclude is not None and exclude(sub):
                    continue
                est = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(est.st_mode):
                    stack.append((sub, e.path))
                    if self.ignored(sub):
                        continue  # walked only for re-included children
                yield sub, e.path, est

    def _may_reinclude(self, rel: str, entry) -> bool:
        """A directory excluded by .dockerignore may still hold `!`-re-included paths."""
        if not entry.is_dir(follow_symlinks=False) or not self.ignore:
            return False
        return self.ignore.may_include_below(rel)

    def digest_entries(self, entries) -> str:
        """Digest of a selection: paths, types, modes, link targets, content digests.

        Owners count only outside the context (COPY from the context chowns to 0:0)."""
        h = hashlib.sha256()
        for rel, hostp, st in entries:
            fmt = stat.S_IFMT(st.st_mode)
            h.update(f"{rel}\0{fmt}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
            if not self.is_context:
                h.update(f"{st.st_uid}:{st.st_gid}\0".encode())
            if fmt == stat.S_IFREG:
                if self.stat_cache is not None and self.is_context:
                    h.update(self.stat_cache.digest(hostp, st).encode())
                else:
                    h.update(bytes.fromhex(_digest.hash_file(hostp, size_hint=st.st_size)[0][7:]))
            elif fmt == stat.S_IFLNK:
                h.update(os.readlink(hostp).encode())
            h.update(b"\n")
        return "sha256:" + h.hexdigest()


def context_source(root: str, stat_cache, dockerfile: str | None = None) -> Source:
    """The context, with the .dockerignore BuildKit would use (`<Dockerfile>.dockerignore`
    next to the Dockerfile wins over the context's own)."""
    from ..dockerfile.dockerignore import Matcher
    if not os.path.isdir(root):
        raise OCIError(f"build context {root} is not a directory")
    return Source(root, is_context=True, ignore=Matcher.for_context(root, dockerfile),
                  stat_cache=stat_cache)
