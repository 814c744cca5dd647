"""COPY and ADD: select sources, then write the layer directly (no container).

Two phases, so the cache can decide in between: `select()` expands sources and digests
their content (the cache key's inputs); `write()` resolves the destination inside the
image rootfs (symlinks there never lead out of it) and writes the layer.
"""
import os
import posixpath
import stat
import uuid
from ..recordclass import record, field

from ocispec import digest as _digest
from ocispec.errors import OCIError

from .context import Source, has_magic
from ..image.layer import LayerWriter
from ..rootfs import resolve_in_root
from ..image.users import resolve_chown

_ARCHIVE_MIME = {
    "application/x-tar": None, "application/gzip": "gzip", "application/x-gzip": "gzip",
    "application/x-xz": "xz", "application/x-bzip2": "bzip2", "application/zstd": "zstd",
    "application/x-zstd": "zstd",
}


@record(frozen=True)
class AddLimits:
    """Bounds on what one ADD may bring in (pybuild build --add-timeout, --add-idle-timeout,
    --add-max-size). 0 means no limit."""
    timeout: float = 3600.0  # seconds a whole URL download may take
    idle_timeout: float = 60.0  # seconds without a byte from the server
    max_size: int = 0  # bytes of a download, or unpacked from one archive


DEFAULT_LIMITS = AddLimits()
_SMALL_MEMBER = 64 << 10  # archive members up to this size are kept in memory...
_MEMORY_BUDGET = 32 << 20  # ...while their total stays below this; the rest go to disk
_MAX_TAR_META = 1 << 20  # a pax header or GNU long name larger than this is refused


def _size_text(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.4g} {unit}"
    return f"{n} bytes"


@record
class Item:
    """One selected source: a tree from `source`, a fetched URL or a heredoc."""
    kind: str  # "tree" | "file" (a temp file: URL download) | "bytes" (heredoc)
    rel: str = ""
    entries: list = field(default_factory=list)  # [(rel, host, lstat)] for "tree"
    host: str = ""
    name: str = ""
    data: bytes = b""
    mtime: int | None = None
    mode: int = 0o644
    is_dir: bool = False


@record
class Selection:
    items: list
    digest: str
    temp_files: list
    written: int = 1  # sources as the instruction names them, before wildcard expansion

    def cleanup(self):
        for p in self.temp_files:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _exclude_matcher(patterns, what: str):
    """--exclude patterns: moby/patternmatcher's rules (the .dockerignore matcher)."""
    if not patterns:
        return None
    from ..dockerfile.dockerignore import Matcher
    try:
        return Matcher(patterns)
    except OCIError as e:
        raise OCIError(f"{what}: invalid --exclude pattern: {str(e).split(': ', 1)[-1]}") from None


def _exclude_fn(matcher, base: str):
    """fsutil's copier matches --exclude against the path below each source it copies
    (a file source itself is never excluded)."""
    if matcher is None:
        return None

    def excluded(rel: str) -> bool:
        below = rel[len(base):].lstrip("/") if base else rel
        return bool(below) and matcher.excluded(below)
    return excluded


def fetch_url(url: str, tmp_dir: str, checksum: str | None, what: str,
              limits: AddLimits = DEFAULT_LIMITS) -> Item:
    """Download url to a temp file in tmp_dir, hashing as it streams (memory stays flat).

    Bounded: no byte for limits.idle_timeout s, the whole transfer past limits.timeout s
    (a watchdog shuts the socket, so a server dripping a byte now and then cannot hold a
    build), or more than limits.max_size bytes, each fail with an error naming the limit."""
    import http.client
    import socket
    import threading
    import time
    import urllib.parse
    import urllib.request  # imported here: ~10 ms a build without ADD URL need not pay
    from email.utils import parsedate_to_datetime
    parsed = urllib.parse.urlparse(url)
    name = posixpath.basename(parsed.path.rstrip("/")) or "index.html"
    path = os.path.join(tmp_dir, f"add-{uuid.uuid4().hex}")
    h = _digest.Hasher(_digest.parse(checksum)[0] if checksum else "sha256")
    socks: list = []
    expired = threading.Event()

    def shut(sock) -> None:
        try:  # the fd's own shutdown(2), under an SSLSocket too: wakes a blocked read
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def expire() -> None:
        expired.set()
        for sk in list(socks):
            shut(sk)

    class _Tracked:  # a connection whose socket the watchdog can reach
        def connect(self):
            super().connect()
            socks.append(self.sock)
            if expired.is_set():
                shut(self.sock)

    class _Conn(_Tracked, http.client.HTTPConnection):
        pass

    class _SConn(_Tracked, http.client.HTTPSConnection):
        pass

    class _Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(_Conn, req)

    class _Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(_SConn, req, context=self._context)

    def too_slow() -> OCIError:
        return OCIError(f"{what}: download of {url} did not finish within {limits.timeout:g} s",
                        hint="raise the limit with --add-timeout (or PYBUILD_ADD_TIMEOUT)")

    def too_big() -> OCIError:
        return OCIError(f"{what}: {url} is larger than {_size_text(limits.max_size)}",
                        hint="raise the limit with --add-max-size (or PYBUILD_ADD_MAX_SIZE)")

    timer = threading.Timer(limits.timeout, expire) if limits.timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    opener = urllib.request.build_opener(_Http, _Https)
    started = time.monotonic()
    try:
        with opener.open(url, timeout=limits.idle_timeout or None) as resp, \
                open(path, "xb") as out:
            if limits.max_size and resp.length is not None and resp.length > limits.max_size:
                raise too_big()
            while True:
                chunk = resp.read1(1 << 20)
                if not chunk:
                    break
                if limits.max_size and h.size + len(chunk) > limits.max_size:
                    raise too_big()
                h.update(chunk)
                out.write(chunk)
            if expired.is_set():
                raise too_slow()
            if resp.length:  # Content-Length said more than came
                raise OCIError(f"{what}: {url}: the connection closed after {h.size} bytes, "
                               f"{resp.length} short of the Content-Length")
            lm = resp.headers.get("Last-Modified")
    except BaseException as e:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        if isinstance(e, OCIError):
            raise
        if not isinstance(e, (OSError, http.client.HTTPException, ValueError)):
            raise
        if expired.is_set():
            raise too_slow() from None
        if isinstance(getattr(e, "reason", e), TimeoutError):
            raise OCIError(f"{what}: {url}: no data for {limits.idle_timeout:g} s "
                           f"({time.monotonic() - started:.0f} s into the download)",
                           hint="raise the limit with --add-idle-timeout "
                                "(or PYBUILD_ADD_IDLE_TIMEOUT)") from None
        raise OCIError(f"{what}: cannot fetch {url}: {e}") from None
    finally:
        if timer is not None:
            timer.cancel()
    if checksum and h.digest != checksum:
        os.unlink(path)
        raise OCIError(f"{what}: checksum of {url} is {h.digest}, want {checksum}")
    mtime = None
    if lm:
        try:
            mtime = int(parsedate_to_datetime(lm).timestamp())
        except (TypeError, ValueError):
            mtime = None
    return Item("file", host=path, name=name, mtime=mtime, mode=0o600, data=h.digest.encode())


def select(ins, srcs: list[str], source: Source, *, is_add: bool, tmp_dir: str, checksum,
           excludes, heredocs, what: str, limits: AddLimits = DEFAULT_LIMITS) -> Selection:
    """Expand the sources of a COPY/ADD and digest everything they select."""
    import hashlib
    items, temps = [], []
    h = hashlib.sha256()
    exclude = _exclude_matcher(excludes, what)
    try:
        for src in srcs:
            if is_add and src.lower().startswith(("http://", "https://")):
                it = fetch_url(src, tmp_dir, checksum, what, limits)
                temps.append(it.host)
                items.append(it)
                h.update(b"url\0" + src.encode() + b"\0" + it.data + b"\n")
                continue
            if is_add and (src.startswith("git@") or (src.endswith(".git") and "://" in src)):
                raise OCIError(f"{what}: ADD of a git repository is not supported")
            parents = getattr(ins, "parents", False)
            if parents and has_magic(src):
                rels = source.expand_included(src.replace("/./", "/"))
            else:
                rels = source.expand(src, what)
            for rel in rels:
                ex = _exclude_fn(exclude, rel)
                entries = list(source.walk(rel, ex))
                top = entries[0][2]
                is_dir = stat.S_ISDIR(top.st_mode)
                if parents:
                    rel_keep = _parents_rel(src, rel)
                else:
                    rel_keep = ""
                items.append(Item("tree", rel=rel, entries=entries, is_dir=is_dir, name=rel_keep))
                h.update(f"tree\0{rel}\0{rel_keep}\0".encode())
                h.update(source.digest_entries(entries[1:] if is_dir else entries).encode())
        for hd in heredocs:
            data = hd.content.encode()
            items.append(Item("bytes", name=hd.path or hd.name, data=data))
            h.update(b"heredoc\0" + (hd.path or hd.name).encode() + b"\0" + data + b"\n")
    except BaseException:
        for p in temps:
            os.unlink(p)
        raise
    return Selection(items, "sha256:" + h.hexdigest(), temps, written=len(srcs) + len(heredocs))


def _parents_rel(pattern: str, rel: str) -> str:
    """--parents keeps the source's path, from the `/./` pivot when there is one."""
    p = pattern
    while p.startswith(("./", "/")):
        p = p[1:] if p.startswith("/") else p[2:]
    if "/./" in p:
        depth = len([x for x in p.split("/./", 1)[0].split("/") if x])
        return "/".join(rel.split("/")[depth:])
    return rel


def _detect_archive(path: str):
    """Compression name of a tar archive at path (by content), or False if not one."""
    import magic
    with open(path, "rb") as f:
        head = f.read(8192)
    mime = magic.from_buffer(head, mime=True)
    if mime not in _ARCHIVE_MIME:
        return False
    return _ARCHIVE_MIME[mime] or "none"


def _open_decompressed(f, comp: str):
    import bz2
    import lzma
    if comp == "gzip":
        from isal import igzip
        return igzip.IGzipFile(fileobj=f, mode="rb")
    if comp == "xz":
        return lzma.LZMAFile(f)
    if comp == "bzip2":
        return bz2.BZ2File(f)
    if comp == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(f)
    return f


def _tar_info_class():
    import tarfile

    class _BoundedTarInfo(tarfile.TarInfo):
        """tarfile reads a pax header or GNU long name whole into memory: cap them."""

        def _proc_pax(self, tf):
            if self.size > _MAX_TAR_META:
                raise tarfile.HeaderError(f"pax header of {self.size} bytes")
            return super()._proc_pax(tf)

        def _proc_gnulong(self, tf):
            if self.size > _MAX_TAR_META:
                raise tarfile.HeaderError(f"GNU long name of {self.size} bytes")
            return super()._proc_gnulong(tf)

    return _BoundedTarInfo


def _open_tar(f, comp: str):
    import tarfile
    return tarfile.open(fileobj=_open_decompressed(f, comp), mode="r|",
                        tarinfo=_tar_info_class())


def _is_tar(path: str, comp: str) -> bool:
    with open(path, "rb") as f:
        try:
            with _open_tar(f, comp) as tf:
                return tf.next() is not None
        except Exception:  # tarfile, lzma, bz2 and zstandard each raise their own errors
            return False


def _corrupt_errors() -> tuple:
    """What a decompressor or tarfile raises for bytes that are not a whole archive."""
    import lzma
    from ..image.extract import _stream_errors
    return _stream_errors() + (lzma.LZMAError,)


def _add_archive(lw: LayerWriter, path: str, comp: str, dest: str, what: str, *,
                 spool_dir: str, spooled: list, limits: AddLimits = DEFAULT_LIMITS,
                 name: str = "", owner: tuple | None = None) -> None:
    """Extract a tar into the layer under dest; members never escape dest.

    Memory stays bounded whatever the archive expands to: small members are kept in
    memory up to a budget, the others are streamed to temp files in spool_dir (listed in
    `spooled` for the caller to remove once the layer is written)."""
    import shutil
    in_memory = 0
    unpacked = 0
    links: set[str] = set()
    src = f"{what} {name or posixpath.basename(path)}"
    # --chown applies to every member (BuildKit's unpack passes archive.ChownOpts)
    own = (lambda m: owner) if owner else (lambda m: (m.uid, m.gid))
    try:
        with open(path, "rb") as f, _open_tar(f, comp) as tf:
            for m in tf:
                parts = [p for p in m.name.split("/") if p not in ("", ".")]
                if any(p == ".." for p in parts):
                    raise OCIError(f"{what}: archive member {m.name!r} leads outside the destination")
                if not parts:
                    continue
                rel = "/".join(parts)
                for i in range(1, len(parts)):
                    if "/".join(parts[:i]) in links:
                        raise OCIError(f"{what}: archive member {m.name!r} goes through a symlink")
                arc = posixpath.join(dest, rel)
                if m.isdir():
                    lw.add_dir(arc, m.mode, *own(m), mtime=m.mtime)
                elif m.isreg():
                    unpacked += m.size
                    if limits.max_size and unpacked > limits.max_size:
                        raise OCIError(
                            f"{what}: the archive unpacks to more than {_size_text(limits.max_size)}",
                            hint="raise the limit with --add-max-size (or PYBUILD_ADD_MAX_SIZE)")
                    data = tf.extractfile(m)
                    if m.size <= _SMALL_MEMBER and in_memory + m.size <= _MEMORY_BUDGET:
                        in_memory += m.size
                        lw.add_file_bytes(arc, data.read(), m.mode, *own(m), mtime=m.mtime)
                        continue
                    tmp = os.path.join(spool_dir, f"add-{uuid.uuid4().hex}.member")
                    spooled.append(tmp)
                    with open(tmp, "xb") as out:
                        shutil.copyfileobj(data, out, 1 << 20)
                    lw.add_file(arc, tmp, m.size, m.mode, *own(m), mtime=m.mtime)
                elif m.issym():
                    links.add(rel)
                    lw.add_symlink(arc, m.linkname, *own(m), mtime=m.mtime)
                elif m.islnk():
                    lparts = [p for p in m.linkname.split("/") if p not in ("", ".")]
                    if any(p == ".." for p in lparts):
                        raise OCIError(f"{what}: archive hard link {m.name!r} leads outside")
                    lw.add_hardlink(arc, posixpath.join(dest, "/".join(lparts)), mtime=m.mtime)
                # devices and fifos in an ADDed archive are skipped, as BuildKit does unprivileged
    except _corrupt_errors() as e:
        raise OCIError(f"{src}: the archive is truncated or corrupt ({e or type(e).__name__})",
                       hint="check the file, or ADD --unpack=false to copy it as it is") from None
    except OSError as e:
        if e.errno is not None:
            raise
        # bz2 reports bad data as an OSError without an errno
        raise OCIError(f"{src}: the archive is truncated or corrupt ({e})") from None


def mkdir_all(lw: LayerWriter, view: str | None, path: str, mode: int, owner: tuple,
              mtime: int) -> int:
    """Layer entries for the directories on the way to `path`, itself included (fsutil's
    MkdirAll); returns how many were missing. A missing one is created with mode and
    owner; an existing one is written with its own metadata, so extracting this layer on
    its own does not give it default metadata that would hide the image's (the overlay
    takes a directory's owner and mode from the topmost layer that has it)."""
    created = 0
    parts = [p for p in path.split("/") if p]
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if sub in lw._entries:
            continue
        if view:
            try:
                st = os.lstat(os.path.join(view, sub))
            except FileNotFoundError:
                st = None
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    lw.add_dir(sub, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                               mtime=st.st_mtime)
                continue
        lw.add_dir(sub, mode, owner[0], owner[1], mtime=mtime)
        created += 1
    return created


def mkdir_layer(store, view: str | None, path: str, user: str, *, compression, sde,
                what: str) -> dict | None:
    """WORKDIR's layer: `path` made with its parents, 0755, owned by `user` (looked up in
    the image), as BuildKit's Mkdir(WithParents, WithUser); None when it exists."""
    import time
    resolved = resolve_in_root(view, path) if view else path
    if view and os.path.isdir(os.path.join(view, resolved.lstrip("/"))):
        return None
    owner = resolve_chown(view, user, what) if user else (0, 0)
    lw = LayerWriter(store, compression, sde)
    mkdir_all(lw, view, resolved, 0o755, owner, sde if sde is not None else int(time.time()))
    return lw.close()


def write(store, sel: Selection, *, dest: str, workdir: str, view: str | None, chown, chmod,
          from_context: bool, is_add: bool, unpack, compression, sde, what: str,
          limits: AddLimits = DEFAULT_LIMITS) -> dict:
    """Write the layer for a selection; returns LayerWriter.result."""
    spooled: list[str] = []  # archive members streamed to disk, read when the layer is written
    try:
        return _write(store, sel, dest=dest, workdir=workdir, view=view, chown=chown,
                      chmod=chmod, from_context=from_context, is_add=is_add, unpack=unpack,
                      compression=compression, sde=sde, what=what, limits=limits,
                      spooled=spooled)
    finally:
        for p in spooled:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _write(store, sel: Selection, *, dest, workdir, view, chown, chmod, from_context, is_add,
           unpack, compression, sde, what, limits, spooled) -> dict:
    import time
    from ..dockerfile.chmod import parse_chmod
    if dest in ("", "."):
        dest = "./"  # BuildKit's pathRelativeToWorkingDir: the working directory itself
    dest_abs = posixpath.normpath(posixpath.join(workdir or "/", dest))
    dest_dir_wanted = dest.endswith("/") or dest == ".."
    # judged on the sources as written: one wildcard may match many files
    if sel.written > 1 and not dest_dir_wanted:
        raise OCIError(f"{what}: with more than one source the destination must end with /")
    # Resolve the destination in the image: symlinks lead at most to the rootfs' root.
    resolved = resolve_in_root(view, dest_abs) if view else dest_abs
    host_dest = os.path.join(view, resolved.lstrip("/")) if view else None
    dest_exists_dir = bool(view and os.path.isdir(host_dest))
    owner = resolve_chown(view, chown, what) if chown else None
    try:
        cm = parse_chmod(chmod) if chmod else None
    except ValueError as e:
        raise OCIError(f"{what}: --chmod={chmod}: {e}") from None
    lw = LayerWriter(store, compression, sde)
    created_mtime = sde if sde is not None else int(time.time())

    def mode_of(st) -> int | None:
        return None if cm is None else cm.apply(st.st_mode)

    def ensure_dirs(path: str, dir_mode: int | None = None) -> None:
        mkdir_all(lw, view, path, dir_mode if dir_mode is not None else
                  (cm.dir_mode() if cm else 0o755), owner or (0, 0), created_mtime)

    def add(host, target, u, g, st):
        if stat.S_ISSOCK(st.st_mode):
            # BuildKit sends a context socket as an empty regular file with its mode
            # (fsutil clears the socket bit), and fsutil's copy stubs one the same way
            m = mode_of(st)
            lw.add_file_bytes(target, b"", stat.S_IMODE(st.st_mode) if m is None else m, u, g,
                              mtime=st.st_mtime)
        else:
            lw.add_path(host, target, uid=u, gid=g, mode=mode_of(st), _st=st)

    def owner_of(st):
        if owner is not None:
            return owner
        return (0, 0) if from_context else (st.st_uid, st.st_gid)

    for it in sel.items:
        if it.kind == "tree" and it.is_dir:
            base = posixpath.join(resolved, it.name) if it.name else resolved
            ensure_dirs(base)
            top_len = len(it.rel) + 1 if it.rel else 0
            for rel, host, st in it.entries[1:]:
                u, g = owner_of(st)
                add(host, posixpath.join(base, rel[top_len:]), u, g, st)
            continue
        into_dir = dest_dir_wanted or dest_exists_dir
        if it.kind == "tree":
            host, st = it.entries[0][1], it.entries[0][2]
            if is_add and unpack is not False and stat.S_ISREG(st.st_mode):
                comp = _detect_archive(host)
                if comp and _is_tar(host, comp):
                    ensure_dirs(resolved, 0o755)  # unpack's MkdirAll: 0755, not --chmod
                    _add_archive(lw, host, comp, resolved, what, spool_dir=store.tmp_dir,
                                 spooled=spooled, limits=limits, name=it.rel, owner=owner)
                    continue
            name = it.name or posixpath.basename(it.rel)
            target = posixpath.join(resolved, name) if into_dir else resolved
            ensure_dirs(posixpath.dirname(target))
            u, g = owner_of(st)
            add(host, target, u, g, st)
        elif it.kind == "file":  # fetched URL: never unpacked (as docker)
            target = posixpath.join(resolved, it.name) if into_dir else resolved
            ensure_dirs(posixpath.dirname(target))
            u, g = owner or (0, 0)
            st = os.lstat(it.host)
            lw.add_file(target, it.host, st.st_size,
                        cm.apply(stat.S_IFREG | it.mode) if cm else it.mode, u, g,
                        mtime=it.mtime if it.mtime is not None else st.st_mtime)
        else:  # heredoc
            target = posixpath.join(resolved, it.name) if into_dir else resolved
            ensure_dirs(posixpath.dirname(target))
            u, g = owner or (0, 0)
            lw.add_file_bytes(target, it.data, cm.apply(stat.S_IFREG | 0o644) if cm else 0o644,
                              u, g, mtime=sde)
    return lw.close()
