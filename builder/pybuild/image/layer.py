"""Writing image layers: tar, compression and both digests in one pass.

`LayerWriter` collects entries (metadata and where their content lives), then on close
writes them in sorted path order as one stream: tar bytes feed the diff_id hash and the
compressor, compressed bytes feed the blob digest and a temp file in the store, which is
committed under its digest. Nothing is read back to hash it. A layer that is one directory
tree (a RUN's upper dir, a commit) is walked at close, in that order, and written as walked.

Determinism: sorted entries, integer mtimes (clamped to SOURCE_DATE_EPOCH when set), no
user/group names, PAX headers only where needed, gzip headers without name or mtime.
"""
import os
import queue
import stat
import tarfile
import threading
import zlib

from ocispec import digest as _digest
from ocispec import mediatypes as mt
from ocispec.errors import OCIError

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
_BLOCK = 512
_FLUSH_AT = 1 << 20
# Written blob bytes are handed to the kernel's writeback every this many bytes, so the
# fsync before the blob is committed has only the tail left to wait for.
_WRITEBACK_AT = 8 << 20
# overlayfs keeps its own bookkeeping in these xattrs; they never belong in a layer.
_PRIVATE_XATTRS = ("trusted.overlay.", "user.overlay.")


def clean_arcname(name: str) -> str:
    """A layer-relative path: no leading '/', no '.' parts; '..' is refused."""
    parts = []
    for p in os.fspath(name).split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            raise OCIError(f"layer entry {name!r} must not contain '..': it escapes the root")
        parts.append(p)
    return "/".join(parts)


class _Entry:
    __slots__ = ("name", "type", "mode", "uid", "gid", "mtime", "size", "src", "data",
                 "linkname", "devmajor", "devminor", "xattrs", "ino")

    def __init__(self, name, type_, mode, uid, gid, mtime, *, size=0, src=None, data=None,
                 linkname="", devmajor=0, devminor=0, xattrs=None, ino=None):
        self.name, self.type, self.mode, self.uid, self.gid = name, type_, mode, uid, gid
        self.mtime, self.size, self.src, self.data, self.linkname = mtime, size, src, data, linkname
        self.devmajor, self.devminor, self.xattrs, self.ino = devmajor, devminor, xattrs, ino


def _read_xattrs(target, overlay: bool = False) -> dict | None:
    """The xattrs of a path (not followed) or an open fd, overlayfs' own left out.
    overlay=True (an upper dir) refuses redirected dirs and metacopy files: they keep their
    data in a lower layer, and a layer made from the upper dir alone would lose it."""
    try:
        names = os.listxattr(target) if isinstance(target, int) else \
            os.listxattr(target, follow_symlinks=False)
    except OSError:
        return None
    out = {}
    for n in names:
        if overlay and n.endswith(("overlay.redirect", "overlay.metacopy")):
            raise OCIError(f"{target}: overlayfs {n.rsplit('.', 1)[1]} entry in the upper dir",
                           hint="mount the overlay with redirect_dir=off,metacopy=off")
        if n.startswith(_PRIVATE_XATTRS):
            continue
        try:
            out[n] = os.getxattr(target, n) if isinstance(target, int) else \
                os.getxattr(target, n, follow_symlinks=False)
        except OSError:
            continue
    return out or None


# _Entry.xattrs of a host file added by path: read from the file when it is opened to be
# written (one flistxattr on the open fd, instead of a listxattr by path when it is added).
_SRC_XATTRS = object()


def compress_threads() -> int:
    """zstd's worker threads per layer: the machine's cores, at most 4 (past that the hash
    and tar stages, one thread each, are the limit)."""
    return max(2, min(4, os.cpu_count() or 1))


class _Pipeline:
    """tar chunks -> diff_id hash, compressor -> blob hash, write: the caller's thread makes
    the tar stream, worker threads do the rest, each stage where the cores are used best.

    gzip (isal compresses on the thread that calls it, and is the slow stage): one worker
    only compresses, so it has a core to itself; the caller hashes each chunk for the
    diff_id before handing it over, and hashes and writes a chunk's compressed bytes when
    its buffer comes back (at most the pool's size behind). With a thread per stage (tar,
    diff hash, compressor, blob hash and write: four busy threads on this 2-core machine)
    the scheduler shared the compressor's core with the others, and the compressor, the
    stage all others wait for, sat runnable but preempted ~0.1 s of a 0.6 s layer.
    zstd compresses on threads of its own, and there a thread per stage stays best: one
    worker hashes the tar, one feeds zstd, and a writer hashes and writes what comes out
    (with all of that on one or two workers, bench case (c)'s zstd layer was as fast in
    some runs on two cores, up to 20% slower in others). Uncompressed: one worker hashes
    and writes (the digest is the diff_id).

    The tar stream is read into the same few buffers over and over (a new 1 MiB bytearray
    per chunk cost the tar thread its zeroing, ~15 ms per 200 MB, and a page fault per
    4 KiB, ~4 us here, whenever malloc had handed the memory back); a buffer comes back to
    the caller when every worker is done with it, and the pool's size (8: fewer left behind
    the compressor when the tar side ends) bounds the chunks in flight, so the queues need
    no bound. hashlib, the compressors and file writes release the GIL on large buffers,
    so the threads' C work overlaps.
    """

    def __init__(self, comp, fileobj, *, comp_alone: bool = False, nbufs: int = 8):
        self.comp = comp
        self.diff = _digest.Hasher()
        self.blob = _digest.Hasher() if comp is not None else self.diff
        self.write = _writer(fileobj)
        self.err = None
        self.nbufs = nbufs  # buffers not made yet
        self.alone = comp is not None and comp_alone  # the caller hashes, writes
        self.out = None  # compressed bytes to the writer thread (zstd); None: the end
        if comp is None:
            stages = [(self._hash_write, None)]
        elif self.alone:
            stages = [(comp.compress, comp.flush)]
        else:
            self.out = queue.SimpleQueue()
            stages = [(self.diff.update, None), (self._compress_on, self._flush_on)]
        # (buf, n, turns) to each worker; None: the end
        self.todo = [queue.SimpleQueue() for _ in stages]
        # (buf, compressed bytes) back to the caller; (None, the stream's tail): a worker done
        self.back = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._work, args=(q, *s), daemon=True)
                        for q, s in zip(self.todo, stages)]
        if self.out is not None:
            self.threads.append(threading.Thread(target=self._writer_thread, daemon=True))
        for t in self.threads:
            t.start()

    def _hash_write(self, chunk):
        self.diff.update(chunk)
        self.write(chunk)

    def _compress_on(self, chunk):
        out = self.comp.compress(chunk)
        if out:
            self.out.put(out)

    def _flush_on(self):
        self.out.put(self.comp.flush())

    def _writer_thread(self):
        """The blob hash and writes of what the compressor's worker hands on (zstd)."""
        while True:
            b = self.out.get()
            if b is None:
                return
            if self.err is None:
                try:
                    self.blob.update(b)
                    self.write(b)
                except BaseException as e:
                    self.err = self.err or e

    def buffer(self) -> bytearray:
        """A free chunk buffer: a new one while the pool is not full, else the next one the
        workers give back (waiting for it), its compressed bytes hashed and written."""
        if self.err is not None:
            raise self.err
        if self.nbufs:
            self.nbufs -= 1
            return bytearray(_FLUSH_AT)
        buf = self._back()
        if self.err is not None:
            raise self.err
        return buf

    def _back(self):
        buf, out = self.back.get()
        if out and self.err is None:
            self.blob.update(out)
            self.write(out)
        return buf

    def put(self, buf: bytearray, n: int) -> None:
        """Hand on buf's first n bytes to every worker; buf comes back through buffer()
        after the last one is done with it (each takes one of the item's turns: list.pop
        is one step under the GIL; the one that takes the 1 gives it back)."""
        if self.alone:
            with memoryview(buf) as mv:
                self.diff.update(mv[:n])
        item = (buf, n, [1] + [0] * (len(self.todo) - 1))
        for q in self.todo:
            q.put(item)

    def _work(self, todo, fn, end):
        """fn(chunk) for each chunk of todo, then end(): what they return goes back to the
        caller with the buffer."""
        back = self.back
        while True:
            item = todo.get()
            if item is None:
                break
            buf, n, turns = item
            out = None
            if self.err is None:  # after a failure: only hand the buffers back
                try:
                    with memoryview(buf) as mv:
                        chunk = mv[:n]
                        out = fn(chunk)
                        chunk.release()
                except BaseException as e:
                    self.err = self.err or e
            if turns.pop():
                back.put((buf, out))
        out = None
        if end is not None and self.err is None:
            try:
                out = end()
            except BaseException as e:
                self.err = self.err or e
        if end is not None and self.out is not None:
            self.out.put(None)  # the compressor's worker is done: so is the writer
        back.put((None, out))

    def close(self):
        """The end of the stream: wait for the workers, the last compressed bytes written."""
        for q in self.todo:
            q.put(None)
        left = len(self.todo)
        while left:
            if self._back() is None:
                left -= 1
        for t in self.threads:
            t.join()
        if self.err is not None:
            raise self.err

    def abort(self):
        if any(t.is_alive() for t in self.threads):
            self.err = self.err or RuntimeError("layer write aborted")
            for q in self.todo:
                q.put(None)
            for t in self.threads:
                t.join()


def _writer(f):
    """f.write that starts the kernel's writeback of each _WRITEBACK_AT bytes written:
    the store fsyncs a blob before committing it, and that fsync otherwise waited for
    the whole blob at the end (~70 ms for 140 MB here, after everything else is done).
    POSIX_FADV_DONTNEED starts writeback of dirty pages (Linux) and drops none of them:
    they are dirty or under writeback, so the blob stays cached."""
    fd = f.fileno()
    pos = done = 0  # bytes written, bytes handed to writeback

    def write(b):
        nonlocal pos, done
        f.write(b)
        pos += len(b)
        if pos - done >= _WRITEBACK_AT:
            f.flush()
            os.posix_fadvise(fd, done, pos - done, os.POSIX_FADV_DONTNEED)
            done = pos
    return write


class _Chunks:
    """The tar stream gathered into 1 MiB buffers of the pipeline's pool, each handed on
    whole: headers are copied in, file content is read straight into them (no per-file
    bytes object, no second copy)."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.spare = bytearray(1)  # read_fd's byte past a file's end
        self._new()

    def _new(self):
        self.buf = self.pipe.buffer()
        self.view = memoryview(self.buf)
        self.pos = 0

    def flush(self, last=False):
        if self.pos:
            self.view.release()
            self.pipe.put(self.buf, self.pos)
            if last:
                self.buf = self.view = None
            else:
                self._new()

    def write(self, b):
        """Append b; every chunk handed on is exactly _FLUSH_AT bytes but the last."""
        n = len(b)
        if self.pos + n <= _FLUSH_AT:
            self.view[self.pos:self.pos + n] = b
            self.pos += n
            return
        mv = memoryview(b)
        while mv:
            if self.pos == _FLUSH_AT:
                self.flush()
            take = min(len(mv), _FLUSH_AT - self.pos)
            self.view[self.pos:self.pos + take] = mv[:take]
            self.pos += take
            mv = mv[take:]

    def read_fd(self, fd: int, size: int, path: str) -> None:
        """Exactly `size` bytes of the open file `path` (it must not change while we write
        the layer). The read that can end the file also asks for one byte more: a file that
        grew fills it, one that did not leaves it empty (a regular file reads short only at
        its end), so no extra read per file checks for growth."""
        left = size
        while left:
            if self.pos == _FLUSH_AT:
                self.flush()
            want = min(left, _FLUSH_AT - self.pos)
            view = self.view[self.pos:self.pos + want]
            n = os.readv(fd, (view, self.spare) if want == left else (view,))
            view.release()
            if n > left:
                raise OCIError(f"{path}: file grew while writing the layer")
            if not n:
                raise OCIError(f"{path}: file shrank while writing the layer")
            self.pos += n
            left -= n


_NUL_BLOCKS = b"\0" * (2 * _BLOCK)


_NULS = b"\0" * 100
_USTAR_MAGIC = b"ustar\x0000" + b"\0" * 64  # magic, version, empty uname and gname
_USTAR_TAIL = b"\0" * 167  # empty prefix, padding


def _ustar(name: bytes, mode, uid, gid, size, mtime, typeflag: bytes, linkname: bytes,
           devmajor=0, devminor=0) -> bytes | None:
    """A plain ustar header, or None when a field does not fit or a name is not ASCII (the
    caller uses PAX then)."""
    if len(name) > 100 or len(linkname) > 100 or uid >= 0o7777777 or gid >= 0o7777777 \
            or size >= 0o77777777777 or not 0 <= mtime < 0o77777777777 \
            or not (name.isascii() and linkname.isascii()):
        return None
    h = b"%s%s%07o\0%07o\0%07o\0%011o\0%011o\0        %s%s%s%s%07o\0%07o\0%s" % (
        name, _NULS[len(name):], mode, uid, gid, size, mtime, typeflag, linkname,
        _NULS[len(linkname):], _USTAR_MAGIC, devmajor, devminor, _USTAR_TAIL)
    # The checksum is the sum of the header's bytes (its own field as spaces). All 512 are
    # ASCII, so that sum is at most 512 * 127 < 65521 and adler32's low half is 1 + the sum:
    # one C call instead of summing 512 ints in Python (half of this function's time).
    return b"%s%06o\0 %s" % (h[:148], (zlib.adler32(h) & 0xFFFF) - 1, h[156:])


def _pax(name: str, e: _Entry, typ: bytes, linkname: str, size: int, xattrs) -> bytes:
    """A PAX header (long or non-ASCII names, big numbers, xattrs) by tarfile."""
    ti = tarfile.TarInfo(name)
    ti.mode, ti.uid, ti.gid, ti.mtime = e.mode, e.uid, e.gid, e.mtime
    ti.type, ti.linkname, ti.size = typ, linkname, size
    ti.devmajor, ti.devminor = e.devmajor, e.devminor
    ti.uname = ti.gname = ""
    if xattrs:
        ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                          for k, v in sorted(xattrs.items())}
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class LayerWriter:
    """Build one layer blob in the store.

        with LayerWriter(store, compression="gzip", source_date_epoch=sde) as lw:
            lw.add_dir_tree(ctx_dir, "app")
        lw.result  # {"digest", "size", "diff_id", "media_type"}
    """

    def __init__(self, store, compression: str | None = "gzip", source_date_epoch: int | None = None,
                 *, level: int | None = None):
        if compression in ("none", "uncompressed", ""):
            compression = None
        if compression not in (None, "gzip", "zstd"):
            raise OCIError(f"unknown layer compression {compression!r}: want gzip, zstd or none")
        self.store = store
        self.compression = compression
        self.source_date_epoch = None if source_date_epoch is None else int(source_date_epoch)
        self.level = level
        self.media_type = mt.layer_media_type(compression)
        self._entries: dict[str, _Entry] = {}
        # add_dir_tree on an empty writer: the walk waits for close(), where a tree that is
        # the whole layer is walked in the layer's order and written as it is walked (its
        # stats and reads overlap the compressor instead of preceding it); any other add
        # walks it first, in the order of the calls
        self._tree: tuple | None = None
        self.result: dict | None = None

    # -- collecting entries --------------------------------------------------------------

    def _mtime(self, mtime) -> int:
        m = int(mtime or 0)
        if self.source_date_epoch is not None and (mtime is None or m > self.source_date_epoch):
            return self.source_date_epoch
        return m

    def _put(self, e: _Entry) -> None:
        if self._tree is not None:
            self._walk_tree()
        if not e.name:
            raise OCIError("layer entry needs a name other than the root")
        self._entries[e.name] = e

    def __len__(self):
        if self._tree is not None:
            self._walk_tree()
        return len(self._entries)

    def add_path(self, host_path, arcname, *, uid=None, gid=None, mode=None, _st=None) -> None:
        """One entry from a host file, directory (not its contents), symlink, device or fifo."""
        host_path = os.fspath(host_path)
        self._add_host(host_path, clean_arcname(arcname), _st or os.lstat(host_path), uid, gid,
                       mode)

    def _add_host(self, host_path: str, name: str, st, uid, gid, mode, overlay=False) -> None:
        """add_path's work, for a name already clean."""
        e = self._host_entry(host_path, name, st, uid, gid, mode, overlay)
        if e is not None:
            self._put(e)

    def _host_entry(self, host_path: str, name: str, st, uid, gid, mode, overlay=False):
        """The entry of a host path (None for a socket)."""
        fmt = stat.S_IFMT(st.st_mode)
        perm = stat.S_IMODE(st.st_mode) if mode is None else (mode & 0o7777)
        u = st.st_uid if uid is None else uid
        g = st.st_gid if gid is None else gid
        mtime = self._mtime(st.st_mtime)
        if fmt == stat.S_IFREG and not overlay:
            xattrs = _SRC_XATTRS
        else:
            xattrs = _read_xattrs(host_path, overlay)
        if fmt == stat.S_IFREG:
            e = _Entry(name, tarfile.REGTYPE, perm, u, g, mtime, size=st.st_size, src=host_path,
                       xattrs=xattrs, ino=(st.st_dev, st.st_ino) if st.st_nlink > 1 else None)
        elif fmt == stat.S_IFDIR:
            e = _Entry(name, tarfile.DIRTYPE, perm, u, g, mtime, xattrs=xattrs)
        elif fmt == stat.S_IFLNK:
            e = _Entry(name, tarfile.SYMTYPE, 0o777, u, g, mtime, linkname=os.readlink(host_path),
                       xattrs=xattrs)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            e = _Entry(name, tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE, perm, u, g,
                       mtime, devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev),
                       xattrs=xattrs)
        elif fmt == stat.S_IFIFO:
            e = _Entry(name, tarfile.FIFOTYPE, perm, u, g, mtime, xattrs=xattrs)
        else:  # sockets have no tar form; docker and buildkit skip them too
            return None
        return e

    def add_dir_tree(self, host_dir, prefix: str = "", *, exclude=None, chown=None, chmod=None,
                     _overlay=False) -> None:
        """Every path below host_dir (not host_dir itself), named prefix/relpath.

        exclude(relpath) -> True skips a path (and, for a directory, all below it).
        chown=(uid, gid) and chmod=mode override every entry's owner and permission bits.
        On a writer with nothing in it yet the walk waits: close() walks the tree in the
        layer's order and writes each entry as it comes (the stats and reads of the walk
        overlap the compressor instead of all coming before it); an add before close()
        walks it first, so later adds replace its entries as usual. Either way the layer's
        bytes are the same; a tree's sizes are those of that walk.
        """
        host_dir = os.fspath(host_dir)
        prefix = clean_arcname(prefix)
        uid, gid = chown if chown is not None else (None, None)
        if self._tree is None and not self._entries:
            self._tree = (host_dir, prefix, exclude, uid, gid, chmod, _overlay)
            return
        if self._tree is not None:
            self._walk_tree()
        self._add_tree(host_dir, prefix, exclude, uid, gid, chmod, _overlay)

    def _walk_tree(self) -> None:
        """The deferred add_dir_tree's entries into the writer (before any later add)."""
        tree, self._tree = self._tree, None
        self._add_tree(*tree)

    def _add_tree(self, *tree) -> None:
        for e in self._tree_entries(*tree):
            self._put(e)

    def add_file_bytes(self, arcname, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0,
                       *, mtime=None, xattrs=None) -> None:
        self._put(_Entry(clean_arcname(arcname), tarfile.REGTYPE, mode & 0o7777, uid, gid,
                         self._mtime(mtime), size=len(data), data=bytes(data), xattrs=xattrs))

    def add_file(self, arcname, src: str, size: int, mode: int = 0o644, uid: int = 0, gid: int = 0,
                 *, mtime=None) -> None:
        """A regular file whose `size` bytes are read from the host file `src` at close()
        (a spooled download or archive member): owner, mode and mtime as given, not src's."""
        self._put(_Entry(clean_arcname(arcname), tarfile.REGTYPE, mode & 0o7777, uid, gid,
                         self._mtime(mtime), size=size, src=src))

    def add_dir(self, arcname, mode: int = 0o755, uid: int = 0, gid: int = 0, *, mtime=None) -> None:
        self._put(_Entry(clean_arcname(arcname), tarfile.DIRTYPE, mode & 0o7777, uid, gid,
                         self._mtime(mtime)))

    def add_symlink(self, arcname, target: str, uid: int = 0, gid: int = 0, *, mtime=None) -> None:
        self._put(_Entry(clean_arcname(arcname), tarfile.SYMTYPE, 0o777, uid, gid,
                         self._mtime(mtime), linkname=target))

    def add_hardlink(self, arcname, target_arcname, *, mtime=None) -> None:
        self._put(_Entry(clean_arcname(arcname), tarfile.LNKTYPE, 0o644, 0, 0, self._mtime(mtime),
                         linkname=clean_arcname(target_arcname)))

    def add_whiteout(self, path) -> None:
        """Mark `path` deleted from the layers below."""
        self._put(self._whiteout(clean_arcname(path)))

    def add_opaque(self, dir_path) -> None:
        """Hide everything the layers below have in `dir_path`."""
        self._put(self._opaque(clean_arcname(dir_path)))

    def _whiteout(self, name: str) -> _Entry:
        head, _, base = name.rpartition("/")
        wh = f"{head}/{WHITEOUT_PREFIX}{base}" if head else WHITEOUT_PREFIX + base
        return _Entry(wh, tarfile.REGTYPE, 0o644, 0, 0, self._mtime(None))

    def _opaque(self, name: str) -> _Entry:
        wh = f"{name}/{WHITEOUT_OPAQUE}" if name else WHITEOUT_OPAQUE
        return _Entry(wh, tarfile.REGTYPE, 0o644, 0, 0, self._mtime(None))

    # -- writing -------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        return False

    def close(self) -> dict:
        """Write the layer (once) and return the result dict."""
        if self.result is None:
            self.result = self._write()
        return self.result

    def descriptor(self, **kw) -> dict:
        from ocispec import image
        r = self.close()
        return image.descriptor(r["media_type"], r["digest"], r["size"], **kw)

    def _compressor(self, parallel: bool = True):
        """The compressor of this layer's stream; parallel=False: zstd on one thread (the
        speed yardstick of the bench)."""
        lvl = 1 if self.level is None else self.level
        if self.compression == "gzip":
            from isal import isal_zlib
            # wbits 31: gzip wrapper with zero mtime, no file name -> deterministic.
            return isal_zlib.compressobj(lvl, isal_zlib.DEFLATED, 31)
        if self.compression == "zstd":
            import zstandard
            # zstd's output is the same for any threads >= 1, so the blob does not depend on
            # the machine's cores (threads=0, no worker, would give other bytes)
            threads = compress_threads() if parallel else 0
            return zstandard.ZstdCompressor(level=lvl, threads=threads).compressobj()
        return None

    def _link_groups(self) -> dict:
        """Entries with explicit hard links joined to their target's group, so whichever
        path sorts first carries the data and the others link to it."""
        out = dict(self._entries)
        for name, e in self._entries.items():
            if e.type != tarfile.LNKTYPE:
                continue
            t = self._entries.get(e.linkname)
            if t is None or t.type != tarfile.REGTYPE:
                continue  # a link to a lower layer's file stays a plain link entry
            key = t.ino or ("link", t.name)
            if t.ino is None:
                t = out[t.name] = _Entry(t.name, t.type, t.mode, t.uid, t.gid, t.mtime, size=t.size,
                                         src=t.src, data=t.data, xattrs=t.xattrs, ino=key)
            out[name] = _Entry(name, t.type, t.mode, t.uid, t.gid, t.mtime, size=t.size, src=t.src,
                               data=t.data, xattrs=t.xattrs, ino=key)
        return out

    def _write(self) -> dict:
        f, tmp = self.store.temp_file(".layer")
        pipe = None
        try:
            with f:
                # isal's gzip compresses on the thread that calls it, zstd on threads of its own
                pipe = _Pipeline(self._compressor(), f, comp_alone=self.compression == "gzip")
                out = _Chunks(pipe)
                emit = out.write
                links: dict = {}

                def write_entry(e: _Entry) -> None:
                    typ, linkname, xattrs = e.type, e.linkname, e.xattrs
                    size = e.size if typ == tarfile.REGTYPE else 0
                    if e.ino is not None:
                        first = links.get(e.ino)
                        if first is None:
                            links[e.ino] = e.name
                        else:
                            typ, linkname, size = tarfile.LNKTYPE, first, 0
                    fd = None
                    if size and e.data is None:
                        fd = os.open(e.src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    try:
                        if xattrs is _SRC_XATTRS:
                            xattrs = _read_xattrs(e.src if fd is None else fd)
                        name = e.name + "/" if typ == tarfile.DIRTYPE else e.name
                        hdr = None
                        if not xattrs and name.isascii() and linkname.isascii():
                            hdr = _ustar(name.encode(), e.mode, e.uid, e.gid, size, e.mtime, typ,
                                         linkname.encode(), e.devmajor, e.devminor)
                        if hdr is None:
                            hdr = _pax(name, e, typ, linkname, size, xattrs)
                        emit(hdr)
                        if not size:
                            return
                        if fd is None:
                            emit(e.data)
                        else:
                            out.read_fd(fd, size, e.src)
                    finally:
                        if fd is not None:
                            os.close(fd)
                    pad = -size % _BLOCK
                    if pad:
                        emit(_NUL_BLOCKS[:pad])

                if self._tree is not None:  # the whole layer is one tree: written as walked
                    for e in self._tree_entries(*self._tree):
                        write_entry(e)
                else:
                    entries = self._link_groups()
                    for key in sorted(entries, key=lambda n: n.split("/")):
                        write_entry(entries[key])
                emit(_NUL_BLOCKS)
                out.flush(last=True)
                pipe.close()
            blob = self.store.commit_temp(tmp, pipe.blob.digest, pipe.blob.size, self.media_type)
        except BaseException:
            if pipe is not None:
                pipe.abort()
            self.store.discard_temp(tmp)
            raise
        return {"digest": blob.digest, "size": blob.size, "diff_id": pipe.diff.digest,
                "media_type": self.media_type}

    def _tree_entries(self, host_dir, prefix, exclude, uid, gid, chmod, overlay):
        """The entries of a host directory tree (add_dir_tree's), in the layer's order,
        walking it: each directory's children gathered as they are met (a later one of the
        same name replaces the earlier: a whiteout over a real ".wh." file, a real
        ".wh..wh..opq" over the opaque marker), then given sorted by name, each
        directory's own children right after it: the order of the whole paths split at
        "/", the order close() writes entries in."""
        host_entry = self._host_entry

        def children(rel_dir: str, abs_dir: str, opaque: _Entry | None):
            """(names sorted, {name: entry}, {name: (rel, host path, opaque entry)})."""
            ents, subs = {}, {}
            if opaque is not None:
                ents[WHITEOUT_OPAQUE] = opaque
            with os.scandir(abs_dir) as it:
                items = sorted(it, key=lambda d: d.name)
            for d in items:
                name = d.name
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if exclude is not None and exclude(rel):
                    continue
                st = d.stat(follow_symlinks=False)
                arc = f"{prefix}/{rel}" if prefix else rel
                if overlay and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    ents[WHITEOUT_PREFIX + name] = self._whiteout(arc)
                    continue
                e = host_entry(d.path, arc, st, uid, gid, chmod, overlay)
                if e is not None:
                    ents[name] = e
                if stat.S_ISDIR(st.st_mode):
                    subs[name] = (rel, d.path, self._opaque(arc)
                                  if overlay and _is_opaque(d.path) else None)
            names = sorted(ents.keys() | subs.keys()) if subs else sorted(ents)
            return iter(names), ents, subs

        stack = [children("", host_dir, None)]
        while stack:
            names, ents, subs = stack[-1]
            for name in names:
                e = ents.get(name)
                if e is not None:
                    yield e
                sub = subs.get(name)
                if sub is not None:
                    stack.append(children(*sub))
                    break
            else:
                stack.pop()


def _is_opaque(path: str) -> bool:
    for name in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def layer_from_overlay_upper(store, upperdir, *, compression: str | None = "gzip",
                             source_date_epoch: int | None = None, exclude=None,
                             level: int | None = None) -> dict:
    """A layer from an overlayfs upper dir (unmounted, or at least quiescent).

    Whiteouts (0:0 character devices) become `.wh.<name>`; opaque directories
    (trusted.overlay.opaque=y) get a `.wh..wh..opq` entry; overlay's own xattrs are dropped.
    """
    with LayerWriter(store, compression, source_date_epoch, level=level) as lw:
        lw.add_dir_tree(upperdir, exclude=exclude, _overlay=True)
    return lw.result
