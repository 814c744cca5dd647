"""RUN: a container of the runtime over an overlay of the parent layers.

rootfs = overlay(lowerdirs = the stage's extracted layers, upperdir = a fresh dir); the
runtime runs the command with a config.json made here; the upper dir becomes the layer.
Mount points that we (or the runtime) had to create for RUN's own mounts are removed from
the upper dir afterwards, so /run/secrets/X or /etc/resolv.conf never land in a layer.
Every mount made here is undone in a finally block; a failed RUN leaves nothing behind.
"""
import collections
import fcntl
import json
import os
import stat
import subprocess
import uuid

from ocispec import defaults
from ocispec.errors import OCIError

from .. import mounts
from ..image.layer import layer_from_overlay_upper
from ..rootfs import mkdir_all, resolve_in_root, rmtree_safe
from ..image.users import resolve_user

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TAIL = 8
PATH_MAX = 4096  # the kernel's limit on a path, the NUL included


def container_config(spec: "RunSpec", root: str, user: tuple, mounts: list) -> dict:
    """config.json of a RUN: what BuildKit gives a build container (ocispec.defaults:
    docker's capabilities, runc's device rules, masked and read-only /proc and /sys paths,
    moby's seccomp profile), with this step's process, rootfs, mounts and network."""
    uid, gid, extra = user
    config = defaults.container_spec(args=spec.args)
    config["ociVersion"] = "1.0.2"
    config["process"].update(user={"uid": uid, "gid": gid, "additionalGids": extra},
                             env=spec.env, cwd=spec.cwd)
    config["root"] = {"path": root, "readonly": False}
    config["hostname"] = spec.hostname
    config["mounts"] += mounts
    # the network namespace only for --network=none: default and host share the host's
    config["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")] + \
        ([{"type": "network"}] if spec.network == "none" else [])
    return config


class RunSpec:
    """What a RUN needs, gathered by the executor."""

    def __init__(self, *, args, env, user, cwd, network, mounts, what, hostname="pybuild",
                 files=None):
        self.args, self.env, self.user, self.cwd = args, env, user, cwd
        self.files = files or {}  # container path -> content (heredoc scripts), read-only
        self.network, self.mounts, self.what, self.hostname = network, mounts, what, hostname


def _missing_ancestor(merged: str, path: str) -> str | None:
    """The top-most component of `path` missing in the rootfs, or None if it exists."""
    parts = [p for p in path.split("/") if p]
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if not os.path.lexists(os.path.join(merged, sub)):
            return sub
    return None


def _lower_parents(merged: str, stop: str) -> dict:
    """(mode, uid, gid) of the existing parents of a mount point we create."""
    out = {}
    parts = stop.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        st = os.lstat(os.path.join(merged, sub))
        out[sub] = (st.st_mode, st.st_uid, st.st_gid)
    return out


def mountpoints_to_create(root: str, mounts: list) -> list[tuple]:
    """(destination, first missing ancestor, the lower layers' parents) for each mount the
    runtime will have to create a mount point for in `root` (an overlay whose upper dir must
    not keep them: _cleanup_mountpoint() takes each out again)."""
    out = []
    for m in mounts:
        if m["destination"].startswith("/dev/"):
            continue  # inside the /dev tmpfs, never in the upper dir
        miss = _missing_ancestor(root, resolve_in_root(root, m["destination"]))
        if miss is not None:
            out.append((m["destination"], miss, _lower_parents(root, miss)))
    return out


def _cleanup_mountpoint(upper: str, target: str, stop: str, parents: dict) -> None:
    """Remove an empty mount point (file or dir) and its created parents up to `stop`; then
    parents that were only copied up to hold it (empty, unchanged owner and mode)."""
    path = target.strip("/")
    while True:
        host = os.path.join(upper, path)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                try:
                    os.rmdir(host)
                except OSError:
                    return  # the command put something there: keep it
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(host)
            else:
                return
        if path == stop or "/" not in path:
            break
        path = path.rsplit("/", 1)[0]
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        host = os.path.join(upper, path)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            continue
        if parents.get(path) != (st.st_mode, st.st_uid, st.st_gid) or os.listdir(host) or \
                _opaque(host):
            return
        os.rmdir(host)


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


class RunDirs:
    """The directories of a build's RUNs, made ready while the container of the RUN before
    runs, and used again.

    A RUN's dir holds its bundle (config.json), its overlay's upper and work dirs and the
    mount point of its rootfs. On ext4 under load each new inode costs 0.1-1.5 ms, and
    each removal some too; so a finished RUN's dir is used again by a later RUN: only its
    upper dir is new (the old one became a layer), its overlay work dir is emptied of the
    marks a volatile mount leaves (work/incompat/volatile), config.json is written over.
    The stage thread is idle while a container runs (it waits for its output): that is
    when the next RUN's dir is made ready (tidy()), so a RUN starts with its dirs there
    (take()). A dir that held anything else (heredoc files, mount views) or whose RUN failed
    is removed instead. What is left goes with the build's scratch dir.

    It also holds the skeleton: a lower dir, below the image's layers, with the mount points
    every RUN's config has (/proc, /dev, /sys, and /etc/resolv.conf and /etc/hosts when they
    are bound). Where the image has them, its own hide it; where it lacks them (a base made
    FROM scratch), the runtime finds them there instead of creating each in the upper dir,
    where they would cost more inodes and then have to be taken out of the layer again.
    Mount points cannot be removed or changed while mounted, so the skeleton's entries
    never reach a layer as such: a RUN that writes into a skeleton-only /etc copies it up
    as root-owned 0755, the mode the runtime would have made it with."""

    _PARTS = ("config.json", "merged", "work")  # what a finished RUN's dir holds

    def __init__(self, scratch: str):
        self.scratch = scratch
        self._ready: list[str] = []
        self._used: list[str] = []
        self._skeletons: dict[tuple, str] = {}

    def _make(self) -> str:
        work = os.path.join(self.scratch, f"run-{uuid.uuid4().hex[:12]}")
        os.mkdir(work, 0o755)
        for n in ("upper", "work", "merged"):
            os.mkdir(os.path.join(work, n), 0o755)
        os.close(os.open(os.path.join(work, "config.json"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        return work

    def _reuse(self, work: str) -> bool:
        """Make a finished RUN's dir ready again (False: it is not one to use again)."""
        if sorted(os.listdir(work)) != list(self._PARTS) or os.listdir(os.path.join(work, "merged")):
            return False
        # the overlay's own dir in its work dir, empty but for the volatile marks: removed
        # here, or the next mount would remove it first (and it refuses those marks)
        inner = os.path.join(work, "work", "work")
        marks = os.path.join(inner, "incompat")
        if os.path.lexists(marks):
            volatile = os.path.join(marks, "volatile")
            for name in os.listdir(volatile) if os.path.isdir(volatile) else ():
                os.unlink(os.path.join(volatile, name))
            if os.path.lexists(volatile):
                os.rmdir(volatile)
            os.rmdir(marks)
        if os.path.lexists(inner):
            os.rmdir(inner)  # fails if anything else is there: not used again then
        os.mkdir(os.path.join(work, "upper"), 0o755)
        return True

    def take(self) -> str:
        """A RUN dir with a new, empty upper dir: one made ready earlier, or a new one."""
        try:
            return self._ready.pop()
        except IndexError:
            return self._make()

    def done(self, work: str, ok: bool) -> None:
        """A RUN's dir after the RUN (nothing mounted in it any more): kept to be used
        again if the RUN succeeded (its upper dir moved out), else removed now."""
        if ok:
            self._used.append(work)
        else:
            rmtree_safe(work)

    def tidy(self, spare: bool) -> None:
        """While a container runs: if another RUN will come (`spare`), have a dir ready for
        it, else remove the finished ones. Never fails the running step: take() makes a
        dir that could not be made here, and says why not; the scratch dir's removal takes
        what could not go."""
        if not spare:  # the last RUN: the dirs of those before it can go now
            while self._used:
                try:
                    rmtree_safe(self._used.pop())
                except (IndexError, OSError, OCIError):
                    pass
            return
        if self._ready:
            return
        while True:
            try:
                work = self._used.pop()
            except IndexError:
                break
            try:
                if self._reuse(work):
                    self._ready.append(work)
                    return
            except OSError:
                pass
            try:  # not to be used again: it goes now (or with the scratch dir)
                rmtree_safe(work)
            except (OSError, OCIError):
                pass
        try:
            self._ready.append(self._make())
        except OSError:
            pass

    def skeleton(self, points: tuple) -> str:
        """The lower dir holding `points`, ((path, is_dir), ...), made on first use."""
        skel = self._skeletons.get(points)
        if skel is None:
            skel = os.path.join(self.scratch, f"skel-{uuid.uuid4().hex[:12]}")
            os.mkdir(skel, 0o755)
            for path, is_dir in points:
                parent = os.path.dirname(path)
                if parent != "/":
                    mkdir_all(skel, parent, 0o755)
                host = os.path.join(skel, path.lstrip("/"))
                if is_dir:
                    os.mkdir(host, 0o755)
                else:
                    os.close(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                     0o644))
            self._skeletons[points] = skel
        return skel


# the mount points of every RUN that a skeleton holds (not those below /dev, a tmpfs the
# runtime mounts, nor /sys/fs/cgroup, in sysfs): path -> is a directory
_SKELETON = {"/proc": True, "/dev": True, "/sys": True, "/etc/resolv.conf": False,
             "/etc/hosts": False}


def skeleton_points(mounts: list) -> tuple:
    """((path, is_dir), ...) of the skeleton for a RUN with these mounts."""
    return tuple(sorted((d, _SKELETON[d]) for d in {m["destination"] for m in mounts}
                        if d in _SKELETON))


def run(builder, spec: RunSpec, lowers: list[str], *, more: bool = False) -> str:
    """Run one RUN over the lower dirs `lowers` (top first); returns its upper dir, moved
    out of the step's work dir into the build's scratch: the caller makes it a layer
    (write_layer) and then the layer's extracted dir (adopt_layer) or removes it. `more`:
    another RUN will follow (its dirs are made while this one's container runs)."""
    dirs = builder.run_dirs
    work = dirs.take()
    upper, wdir, merged = (os.path.join(work, n) for n in ("upper", "work", "merged"))
    bundle = work  # config.json beside the overlay's dirs: one directory less per RUN
    extra_mounts: list[str] = []
    locks: list[int] = []
    cid = f"pybuild-{uuid.uuid4().hex[:16]}"
    state_root = builder.session.state_root()
    created_points: list[tuple] = []
    ok = False
    try:
        for m in spec.mounts:  # sharing=locked: one RUN at a time uses this cache dir
            if m.m.type == "cache" and m.m.sharing == "locked":
                fd = os.open(m.cache_dir + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                locks.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
        std_mounts = _std_mounts(spec)
        skel = dirs.skeleton(skeleton_points(defaults.MOUNTS + std_mounts))
        mounts.overlay(merged, list(lowers) + [skel], upper, wdir, volatile=True)
        extra_mounts.append(merged)
        try:
            cfg_mounts = []
            for m in spec.mounts:
                cfg_mounts.append(m.to_oci(builder, work, extra_mounts))
            for n, (path, content) in enumerate(sorted(spec.files.items())):
                host = os.path.join(work, f"file-{n}")
                with open(host, "w") as f:
                    f.write(content)
                os.chmod(host, 0o755)
                cfg_mounts.append({"destination": path, "type": "bind", "source": host,
                                   "options": ["rbind", "ro"]})
            cfg_mounts += std_mounts
            config = container_config(spec, merged, resolve_user(merged, spec.user, spec.what),
                                      cfg_mounts)
            created_points = mountpoints_to_create(merged, config["mounts"])
            # WORKDIR is created if missing (and stays in the layer, as docker does).
            if len(spec.cwd.encode()) >= PATH_MAX:
                raise OCIError(f"{spec.what}: the working directory is {len(spec.cwd.encode())} "
                               f"bytes long: a process cannot run in a path of {PATH_MAX} or more",
                               hint="use a shorter WORKDIR")
            mkdir_all(merged, resolve_in_root(merged, spec.cwd), 0o755)
            with open(os.path.join(bundle, "config.json"), "w") as f:
                f.write(json.dumps(config))  # json.dump would encode in Python, not C
            _exec_runtime(builder, state_root, bundle, cid, spec.what,
                          started=lambda: dirs.tidy(spare=more))
        finally:
            for m in reversed(extra_mounts):
                mounts.umount(m)
            extra_mounts.clear()
        for target, stop, parents in created_points:
            _cleanup_mountpoint(upper, target, stop, parents)
        done = os.path.join(builder.scratch, f"upper-{uuid.uuid4().hex[:12]}")
        os.rename(upper, done)
        ok = True
        return done
    finally:
        for m in reversed(extra_mounts):
            mounts.umount(m)
        for fd in locks:
            os.close(fd)
        dirs.done(work, ok)


def _std_mounts(spec: RunSpec) -> list:
    """The host's resolv.conf and hosts, read-only, unless the RUN has no network."""
    if spec.network == "none":
        return []
    return [{"destination": f, "type": "bind", "source": f, "options": ["rbind", "ro"]}
            for f in ("/etc/resolv.conf", "/etc/hosts") if os.path.exists(f)]


def write_layer(store, upper: str, *, compression, sde) -> dict:
    """The layer blob of a finished RUN's upper dir (LayerWriter.result); the dir is only
    read, so later RUNs may use it as a lower dir meanwhile."""
    return layer_from_overlay_upper(store, upper, compression=compression, source_date_epoch=sde)


def _exec_runtime(builder, state_root: str, bundle: str, cid: str, what: str,
                  started=None) -> None:
    """Run the container with the runtime, its output going to the build's progress;
    `started()` is called once the runtime process runs (work to do while it does)."""
    cmd = [builder.runtime, "--root", state_root, "run", "--bundle", bundle, cid]
    tail: collections.deque = collections.deque(maxlen=_TAIL)
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, cwd=bundle)
    except OSError as e:
        raise OCIError(f"{what}: cannot start the runtime {builder.runtime!r}: {e.strerror}",
                       hint="pass --runtime PATH") from None
    def kill():  # on Ctrl-C: the container holds our pipe open, so kill it, then runc
        subprocess.run([builder.runtime, "--root", state_root, "kill", cid, "KILL"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.kill()
    builder.procs.add(kill)
    if builder.cancelled:  # Ctrl-C came while the runtime was starting: nobody else kills it
        kill()
    try:
        if started is not None:
            started()
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            builder.on_output(line)
        rc = p.wait()
    finally:
        builder.procs.discard(kill)
        if p.poll() is None:
            p.kill()
            p.wait()
        # a container that did not exit cleanly may leave state: delete it by its id (a
        # clean `run` removed its state dir itself: no second runtime start then)
        if p.returncode != 0 or os.path.exists(os.path.join(state_root, cid)):
            subprocess.run([builder.runtime, "--root", state_root, "delete", "--force", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if rc != 0:
        out = " | ".join(x for x in tail if x.strip())
        raise OCIError(f"{what} exited with status {rc}" + (f": {out}" if out else ""))


def _empty_dir(work: str) -> str:
    d = os.path.join(work, f"empty-{uuid.uuid4().hex[:8]}")
    os.mkdir(d)
    return d


def _scratch_overlay(work: str, lowers: list, readonly: bool, extra_mounts: list) -> str:
    """An overlay of `lowers` under the RUN's work dir: read-only, or writable into an upper
    dir there that goes when the step ends (work is removed after the unmounts)."""
    view = os.path.join(work, f"view-{uuid.uuid4().hex[:8]}")
    os.mkdir(view)
    if readonly:
        mounts.overlay(view, lowers, readonly=True)
    else:
        upper, wdir = view + ".upper", view + ".work"
        os.mkdir(upper)
        os.mkdir(wdir)
        mounts.overlay(view, lowers, upper, wdir)
    extra_mounts.append(view)
    return view


class RunMount:
    """A RUN --mount, resolved to a host source."""

    def __init__(self, m, *, source_host=None, view_layers=None, secret_path=None, cache_dir=None):
        self.m = m
        self.source_host = source_host
        self.view_layers = view_layers
        self.secret_path = secret_path
        self.cache_dir = cache_dir

    def to_oci(self, builder, work: str, extra_mounts: list) -> dict:
        m = self.m
        target = m.target
        if not target.startswith("/"):
            target = "/" + target
        if m.type == "tmpfs":
            opts = ["nosuid", "nodev"] + ([f"size={m.size}"] if m.size else [])
            return {"destination": target, "type": "tmpfs", "source": "tmpfs", "options": opts}
        if m.type == "secret":
            return {"destination": target, "type": "bind", "source": self.secret_path,
                    "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}
        if m.type == "cache":
            src = self.cache_dir
            ro = m.readonly
        elif self.view_layers is not None:
            # bind from a stage or image: an overlay of its layers, under this RUN's dir. rw
            # (as BuildKit) gives the step a scratch upper dir, thrown away with the step:
            # the extracted layers, shared by every build, stay read-only lowers.
            lowers = builder.layer_cache.lowerdirs(self.view_layers)
            view = _scratch_overlay(work, lowers + [_empty_dir(work)], m.readonly, extra_mounts)
            rel = resolve_in_root(view, m.source or "/")
            src = os.path.join(view, rel.lstrip("/"))
            ro = m.readonly
        else:
            # bind from the build context. rw gets a throwaway overlay over it: writes are
            # seen by the step, the context stays byte for byte as it was (BuildKit).
            src, ro = self.source_host, m.readonly
            if not ro and os.path.exists(src):
                lower = src if os.path.isdir(src) else os.path.dirname(src)
                view = _scratch_overlay(work, [lower], False, extra_mounts)
                src = view if lower == src else os.path.join(view, os.path.basename(src))
        if not os.path.exists(src):
            raise OCIError(f"RUN --mount source {m.source or '/'} does not exist")
        return {"destination": target, "type": "bind", "source": src,
                "options": ["rbind", "ro" if ro else "rw"]}
