"""COPY and ADD: select sources, then write the layer directly (no container).

Two phases, so the cache can decide in between: `select()` expands sources and digests
their content (the cache key's inputs); `write()` resolves the destination inside the
image rootfs (symlinks there never lead out of it) and writes the layer.
"""
import os
import posixpath
import stat
import uuid
from dataclasses import dataclass, field

from ocispec import digest as _digest
from ocispec.errors import OCIError

from .context import Source, match_path
from .layer import LayerWriter
from .rootfs import resolve_in_root
from .users import resolve_chown

_ARCHIVE_MIME = {
    "application/x-tar": None, "application/gzip": "gzip", "application/x-gzip": "gzip",
    "application/x-xz": "xz", "application/x-bzip2": "bzip2", "application/zstd": "zstd",
    "application/x-zstd": "zstd",
}


@dataclass
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


@dataclass
class Selection:
    items: list
    digest: str
    temp_files: list

    def cleanup(self):
        for p in self.temp_files:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _exclude_fn(patterns, base: str):
    if not patterns:
        return None

    def excluded(rel: str) -> bool:
        below = rel[len(base):].lstrip("/") if base and rel.startswith(base) else rel
        for p in patterns:
            p = p.strip("/")
            for cand in (rel, below):
                parts = cand.split("/")
                # a pattern excludes a path or anything below a matching directory
                for i in range(1, len(parts) + 1):
                    if match_path(p, "/".join(parts[:i])) or (
                            "/" not in p and match_path(p, parts[i - 1])):
                        return True
        return False
    return excluded


def fetch_url(url: str, tmp_dir: str, checksum: str | None, what: str) -> Item:
    import urllib.parse
    import urllib.request  # imported here: ~10 ms a build without ADD URL need not pay
    from email.utils import parsedate_to_datetime
    parsed = urllib.parse.urlparse(url)
    name = posixpath.basename(parsed.path.rstrip("/")) or "index.html"
    path = os.path.join(tmp_dir, f"add-{uuid.uuid4().hex}")
    h = _digest.Hasher(_digest.parse(checksum)[0] if checksum else "sha256")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(path, "xb") as out:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
            lm = resp.headers.get("Last-Modified")
    except OSError as e:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise OCIError(f"{what}: cannot fetch {url}: {e}") from None
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
           excludes, heredocs, what: str) -> Selection:
    """Expand the sources of a COPY/ADD and digest everything they select."""
    import hashlib
    items, temps = [], []
    h = hashlib.sha256()
    try:
        for src in srcs:
            if is_add and src.lower().startswith(("http://", "https://")):
                it = fetch_url(src, tmp_dir, checksum, what)
                temps.append(it.host)
                items.append(it)
                h.update(b"url\0" + src.encode() + b"\0" + it.data + b"\n")
                continue
            if is_add and (src.startswith("git@") or (src.endswith(".git") and "://" in src)):
                raise OCIError(f"{what}: ADD of a git repository is not supported")
            parents = getattr(ins, "parents", False)
            for rel in source.expand(src, what):
                ex = _exclude_fn(excludes, rel)
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
    return Selection(items, "sha256:" + h.hexdigest(), temps)


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


def _is_tar(path: str, comp: str) -> bool:
    import tarfile
    with open(path, "rb") as f:
        try:
            with tarfile.open(fileobj=_open_decompressed(f, comp), mode="r|") as tf:
                return tf.next() is not None
        except Exception:  # tarfile, lzma, bz2 and zstandard each raise their own errors
            return False


def _add_archive(lw: LayerWriter, path: str, comp: str, dest: str, what: str) -> None:
    """Extract a tar into the layer under dest; members never escape dest."""
    import tarfile
    links: set[str] = set()
    with open(path, "rb") as f, tarfile.open(fileobj=_open_decompressed(f, comp), mode="r|") as tf:
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
                lw.add_dir(arc, m.mode, m.uid, m.gid, mtime=m.mtime)
            elif m.isreg():
                data = tf.extractfile(m).read()
                lw.add_file_bytes(arc, data, m.mode, m.uid, m.gid, mtime=m.mtime)
            elif m.issym():
                links.add(rel)
                lw.add_symlink(arc, m.linkname, m.uid, m.gid, mtime=m.mtime)
            elif m.islnk():
                lparts = [p for p in m.linkname.split("/") if p not in ("", ".")]
                if any(p == ".." for p in lparts):
                    raise OCIError(f"{what}: archive hard link {m.name!r} leads outside")
                lw.add_hardlink(arc, posixpath.join(dest, "/".join(lparts)), mtime=m.mtime)
            # devices and fifos in an ADDed archive are skipped, as BuildKit does unprivileged


def write(store, sel: Selection, *, dest: str, workdir: str, view: str | None, chown, chmod,
          from_context: bool, is_add: bool, unpack, compression, sde, what: str) -> dict:
    """Write the layer for a selection; returns LayerWriter.result."""
    dest_abs = posixpath.normpath(posixpath.join(workdir or "/", dest))
    n_sources = len(sel.items)
    dest_dir_wanted = dest.endswith("/") or dest in (".", "..") or n_sources > 1
    if n_sources > 1 and not dest.endswith("/"):
        raise OCIError(f"{what}: with more than one source the destination must end with /")
    # Resolve the destination in the image: symlinks lead at most to the rootfs' root.
    resolved = resolve_in_root(view, dest_abs) if view else dest_abs
    host_dest = os.path.join(view, resolved.lstrip("/")) if view else None
    dest_exists_dir = bool(view and os.path.isdir(host_dest))
    owner = resolve_chown(view, chown, what) if chown else None
    mode = int(chmod, 8) if chmod else None
    lw = LayerWriter(store, compression, sde)

    def ensure_dirs(path: str, own: tuple | None) -> None:
        """Entries for directories that the image does not have yet (mkdir -p)."""
        parts = [p for p in path.split("/") if p]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if view and os.path.lexists(os.path.join(view, sub)):
                continue
            u, g = own if own else (0, 0)
            if sub not in lw._entries:
                lw.add_dir(sub, 0o755, u, g, mtime=sde)

    def owner_of(st):
        if owner is not None:
            return owner
        return (0, 0) if from_context else (st.st_uid, st.st_gid)

    for it in sel.items:
        if it.kind == "tree" and it.is_dir:
            base = posixpath.join(resolved, it.name) if it.name else resolved
            ensure_dirs(base, owner)
            top_len = len(it.rel) + 1 if it.rel else 0
            for rel, host, st in it.entries[1:]:
                u, g = owner_of(st)
                lw.add_path(host, posixpath.join(base, rel[top_len:]), uid=u, gid=g,
                            mode=mode, _st=st)
            continue
        into_dir = dest_dir_wanted or dest_exists_dir
        if it.kind == "tree":
            host, st = it.entries[0][1], it.entries[0][2]
            if is_add and unpack is not False and stat.S_ISREG(st.st_mode):
                comp = _detect_archive(host)
                if comp and _is_tar(host, comp):
                    ensure_dirs(resolved, owner)
                    _add_archive(lw, host, comp, resolved, what)
                    continue
            name = it.name or posixpath.basename(it.rel)
            target = posixpath.join(resolved, name) if into_dir else resolved
            ensure_dirs(posixpath.dirname(target), None if not into_dir else owner)
            u, g = owner_of(st)
            if stat.S_ISLNK(st.st_mode) or stat.S_ISREG(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                lw.add_path(host, target, uid=u, gid=g, mode=mode, _st=st)
        elif it.kind == "file":  # fetched URL: never unpacked (as docker)
            target = posixpath.join(resolved, it.name) if into_dir else resolved
            ensure_dirs(posixpath.dirname(target), owner if into_dir else None)
            u, g = owner or (0, 0)
            st = os.lstat(it.host)
            with open(it.host, "rb") as f:
                data = f.read()
            lw.add_file_bytes(target, data, mode if mode is not None else it.mode, u, g,
                              mtime=it.mtime if it.mtime is not None else st.st_mtime)
        else:  # heredoc
            target = posixpath.join(resolved, it.name) if into_dir else resolved
            ensure_dirs(posixpath.dirname(target), owner if into_dir else None)
            u, g = owner or (0, 0)
            lw.add_file_bytes(target, it.data, mode if mode is not None else 0o644, u, g, mtime=sde)
    return lw.close()
