"""The build executor: stages of a parsed Dockerfile -> layers, config, manifest, tags.

Each stage is a StageState (layers, image config, cache chain key, ARGs in scope). Only the
stages the target needs are built, each in its own thread once the stages it reads from
are done. Metadata instructions change the config and history only; COPY/ADD write layers
directly; RUN runs in a container (run.py). Every layer step is looked up in the cache
first. Tags and exports happen only after the whole build succeeded.
"""
import copy as _copy
import hashlib
import json
import os
import posixpath
import threading
import time
import uuid
from ..recordclass import record, field

from ocispec import image as _image
from ocispec import mediatypes as mt
from ocispec.errors import OCIError

from . import cache as _cache
from . import context as _context
from . import copy as _copyop
from ..image import images as _images
from .. import rootfs as _rootfs
from . import run as _run
from ..image.store import Store
from ..dockerfile.scope import PROXY_ARGS as _PROXY_ARGS

@record
class BuildOptions:
    context: str
    dockerfile: str | None = None
    tags: list = field(default_factory=list)
    build_args: dict = field(default_factory=dict)
    target: str | None = None
    labels: dict = field(default_factory=dict)
    no_cache: bool = False
    platform: str | None = None
    outputs: list = field(default_factory=list)
    compression: str = "gzip"
    runtime: str = "pyrunc"
    secrets: dict = field(default_factory=dict)
    network: str | None = None
    source_date_epoch: int | None = None
    add_limits: _copyop.AddLimits = field(default_factory=_copyop.AddLimits)
    pull: str = "missing"  # FROM/--from images the store lacks: missing | always | never
    registry: object = None  # pybuild.image.images.PullContext (None: defaults)
    explain_cache: bool = False  # print why each step missed the cache, for the whole build


class StageState:
    def __init__(self, platform):
        self.layers: list[tuple[dict, str]] = []  # (layer descriptor, diff_id)
        self.config: dict = {}  # the image config's "config" (Env, Cmd, ...)
        self.history: list[dict] = []
        self.author: str | None = None
        self.platform = platform
        self.chain = ""
        self.scope = None  # pybuild.dockerfile.scope.Scope: ARG/ENV in effect
        self.shell = ["/bin/sh", "-c"]
        self.cmd_from_base = False

    def env_map(self) -> dict:
        out = {}
        for kv in self.config.get("Env") or []:
            k, _, v = kv.partition("=")
            out[k] = v
        return out

    def set_env(self, key: str, value: str) -> None:
        env = [e for e in self.config.get("Env") or [] if e.partition("=")[0] != key]
        env.append(f"{key}={value}")
        self.config["Env"] = env


class _PendingLayer:
    """A RUN's layer still being written (compressed, hashed) in the background while the
    next steps run. Until it is settled, its upper dir stands in for the layer's extracted
    dir as a lower dir of the next RUNs and of the views of WORKDIR, COPY and ADD (the same
    tree: adopt_layer() later renames it there): no step needs the blob, only the stage's
    end (the image config and manifest name it) settles it."""
    __slots__ = ("future", "upper", "key", "hist", "what")

    def __init__(self, future, upper, key, hist, what):
        self.future, self.upper, self.key, self.hist, self.what = future, upper, key, hist, what


def find_runtime(name: str) -> str:
    """The runtime's path: as given, on PATH, or installed next to pybuild (same venv)."""
    if "/" in name:
        return name
    import shutil
    import sys
    found = shutil.which(name)
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.argv[0] or sys.executable), name)
    return beside if os.access(beside, os.X_OK) else name


def _iso(ts: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(ts)))
    frac = f"{ts % 1:.6f}"[1:] if ts % 1 else ""
    return f"{whole}{frac}Z"


class Builder:
    def __init__(self, store: Store, opts: BuildOptions, progress):
        self.store = store
        self.opts = opts
        self.progress = progress
        self.cache = _cache.LayerCache(store, enabled=not opts.no_cache)
        self.layer_cache = _rootfs.LayerCache(store)
        # this process's scratch dir: locked for our life, so a dead build's is pruned
        self.session = store.session()
        self.scratch = os.path.join(self.session.scratch, uuid.uuid4().hex[:12])
        self.runtime = find_runtime(opts.runtime)
        self.run_dirs = _run.RunDirs(self.scratch)
        self.stat_cache = _context.StatCache(os.path.join(store.root, "statcache.json"))
        self._local = threading.local()
        self.sde = _source_date_epoch(opts)
        self.platform = (_image.parse_platform(opts.platform) if opts.platform
                         else _image.host_platform())
        self._results: dict[int, StageState] = {}
        self._events: dict[int, threading.Event] = {}
        self._errors: list[BaseException] = []
        self.procs: set = set()  # runtime processes running now
        self.explain_log = None  # set once the Dockerfile is known
        self.misses: list = []  # (step label, reasons) of the steps that missed
        self.cancelled = False
        self._pull = {"pull": opts.pull, "registry": opts.registry or _images.PullContext()}
        self._layer_jobs = None  # one thread writing RUN layers in step order (_PendingLayer)
        self._layer_futures: list = []

    # -- entry point ------------------------------------------------------------------

    def build(self) -> dict:
        """Build; returns the manifest descriptor (tagged and exported)."""
        t0 = time.monotonic()
        opts = self.opts
        dfpath = opts.dockerfile or _default_dockerfile(opts.context)
        try:
            with open(dfpath, "rb") as f:
                data = f.read()
        except OSError as e:
            raise OCIError(f"cannot read the Dockerfile {dfpath}: {e.strerror}") from None
        from ..dockerfile import parse
        from ..dockerfile.parser import decode_text
        self.fname = os.path.basename(dfpath)
        self.explain_log = _cache.ExplainLog(self.store, dfpath)
        text = decode_text(data, self.fname)
        self.df = parse(text, filename=self.fname)
        if not self.df.stages:
            raise OCIError(f"{self.fname}: no FROM instruction: a Dockerfile needs at least one stage")
        self.context = _context.context_source(opts.context, self.stat_cache, dfpath)
        order, target = self._plan()
        self._order = order
        self._prune_dead()
        os.mkdir(os.path.join(self.session.scratch_dir(), os.path.basename(self.scratch)), 0o700)
        _rootfs.spread_subdirs(self.scratch)  # each RUN's dir in a roomy block group
        try:
            threads = []
            for st in order:
                self._events[st.index] = threading.Event()
            for st in order:
                th = threading.Thread(target=self._stage_thread, args=(st,), daemon=True)
                threads.append(th)
                th.start()
            try:
                self._wait_stages(order)
            except BaseException:
                # Ctrl-C: stop the stage threads' containers, let their finally blocks
                # unmount, then go
                self.cancelled = True
                for kill in list(self.procs):
                    kill()
                self._wait_stages(order)
                raise
            if self._errors:
                raise self._errors[0]
            final = self._results[target.index]
            desc = self._write_image(final)
        finally:
            self._wait_layer_jobs()  # they read upper dirs under the scratch dir
            self.stat_cache.save()
            _rootfs.rmtree_safe(self.scratch)
        for out in opts.outputs:
            self._export(desc, out)
        for tag in opts.tags:
            self.store.tag(tag, desc)
        if opts.explain_cache:
            self.progress.explain_cache(self.misses)
        self.progress.result(desc["digest"], time.monotonic() - t0)
        return desc

    def _prune_dead(self) -> None:
        """Remove what killed builds left in this store (their mounts, containers, files)."""
        from .session import prune
        try:
            prune(self.store.root, own=self.session.id)
        except (OSError, OCIError) as e:  # never fails this build: `pybuild prune` says more
            self.progress.info(f"warning: cleaning up after an earlier build: {e}")

    def _wait_stages(self, order) -> None:
        # Event.wait, not Thread.join: an interrupted join in CPython 3.11 can mark a live
        # thread as finished (bpo-45274's fix), and we must really wait for the cleanup.
        for st in order:
            while not self._events[st.index].wait(0.5):
                pass

    # -- planning ---------------------------------------------------------------------

    def _plan(self):
        """The stages the target needs, dependencies first (pybuild.dockerfile.plan)."""
        from ..dockerfile.plan import plan
        bp = plan(self.df, target=self.opts.target, build_args=self.opts.build_args,
                  platform=self.opts.platform)
        for w in bp.warnings:
            self.progress.info(f"warning: {w}")
        self._planned = {ps.index: ps for ps in bp.stages}
        self.global_args = dict(bp.globals)
        return [ps.stage for ps in bp.stages], bp.target.stage

    # -- stage execution --------------------------------------------------------------

    def _stage_thread(self, stage) -> None:
        try:
            for dep in self._planned[stage.index].deps:
                self._events[dep].wait()
                if dep not in self._results:
                    return  # a dependency failed; its error is reported
            self._results[stage.index] = self._build_stage(stage)
        except BaseException as e:  # noqa: BLE001 - reported by build()
            self._errors.append(e)
            self.cancelled = True  # the other stages stop at their next step
        finally:
            self._events[stage.index].set()

    def _where(self, ins) -> str:
        return f"{self.fname}:{ins.line}"

    def _build_stage(self, stage) -> StageState:
        n_total = len(stage.instructions) + 1
        pos = self._order.index(stage) + 1
        nst = len(self._order)
        ps = self._planned[stage.index]
        base = ps.base
        plat = _image.parse_platform(ps.platform) if ps.platform else self.platform
        h = self.progress.step(pos, nst, 1, n_total, f"FROM {base}" + (
            f" AS {stage.name}" if stage.name else ""))
        try:
            st, triggers = self._from(stage, ps, plat)
        except BaseException:
            self.progress.fail(h)
            raise
        self.progress.done(h, cached=False)
        instructions = list(triggers) + list(stage.instructions)
        try:
            self._run_steps(st, instructions, pos, nst, stage)
            self._settle(st)
        except BaseException as e:
            try:
                self._settle(st)  # record the layers that were written
            except OCIError as earlier:
                # An earlier RUN's layer failed in the background: that is the cause (a
                # full disk fails the steps after it too), so it is the error reported.
                if isinstance(e, OCIError):
                    raise earlier from None
            except Exception:  # noqa: BLE001 - the step's own error matters more
                pass
            raise
        return st

    def _run_steps(self, st, instructions, pos, nst, stage) -> None:
        runs_after = [any(i.kind == "RUN" for i in instructions[k + 1:])
                      for k in range(len(instructions))]
        for n, ins in enumerate(instructions, 2):
            self._local.more_runs = runs_after[n - 2]
            if self.cancelled:
                raise OCIError("build cancelled")
            text = ins.original or ins.kind
            h = self.progress.step(pos, nst, n, len(instructions) + 1, text)
            self._local.step = h
            self._local.pos = (stage.index, n)
            try:
                fn = getattr(self, "_i_" + ins.kind.lower(), None)
                if fn is None:
                    raise OCIError(f"{self._where(ins)}: {ins.kind} is not supported here")
                self._settle(st, wait=False)  # those written: their dirs adopted now
                cached = fn(st, st.scope.apply(ins))  # expanded copy; ARG/ENV update scope
            except OCIError as e:
                self.progress.fail(h)
                msg = str(e)
                if not msg.startswith(self.fname + ":"):
                    msg = f"{self._where(ins)}: {msg}"
                raise OCIError(msg) from None
            except OSError as e:
                self.progress.fail(h)
                raise OCIError(f"{self._where(ins)}: {ins.kind}: {e}") from None
            self.progress.done(h, cached=bool(cached))

    # -- layers written in the background ---------------------------------------------

    def _settle(self, st, wait: bool = True) -> None:
        """Replace st's pending layers by their (descriptor, diff_id), recording each in the
        cache and moving its upper dir to the extracted layers. wait=False: only those
        already written (between steps no mount of this stage uses their dirs)."""
        for i, layer in enumerate(st.layers):
            if isinstance(layer, _PendingLayer) and (wait or layer.future.done()):
                st.layers[i] = self._finish_layer(layer)

    def _finish_layer(self, p: _PendingLayer) -> tuple:
        try:
            result, entry = p.future.result()
        except OCIError as e:
            raise OCIError(f"{p.what}: writing its layer: {e}") from None
        except OSError as e:
            raise OCIError(f"{p.what}: writing its layer: {e}") from None
        from ..image.unpack import adopt_layer
        # with SOURCE_DATE_EPOCH the blob's mtimes differ from the upper dir's: not adopted
        if self.sde is not None or not adopt_layer(self.store, result, result["diff_id"],
                                                    p.upper, remembered=True):
            _rootfs.rmtree_safe(p.upper)
        return {k: v for k, v in entry["layer"].items() if k != "diff_id"}, result["diff_id"]

    def _lowerdirs(self, layers) -> list[str]:
        """Lower dirs of layers (top first): extracted dirs, or a pending layer's upper dir."""
        return [x.upper if isinstance(x, _PendingLayer) else self.layer_cache.path(*x)
                for x in reversed(layers)]

    def _wait_layer_jobs(self) -> None:
        for job in self._layer_futures:
            job.wait()
        if self._layer_jobs is not None:
            self._layer_jobs.close()
            self._layer_jobs = None

    def _later(self, fn, *args):
        """Run fn(*args) on the build's background thread (in submission order); the build
        waits for it before it ends."""
        if self._layer_jobs is None:
            from ..jobs import Pool
            self._layer_jobs = Pool(1, "layers")
        fut = self._layer_jobs.submit(fn, *args)
        self._layer_futures.append(fut)
        return fut

    def _write_layer_later(self, upper: str, key: str, hist: dict):
        return self._later(self._write_layer, upper, key, hist)

    def _write_layer(self, upper: str, key: str, hist: dict) -> tuple:
        """A RUN's layer blob: (LayerWriter.result, cache entry). What the store and the
        cache keep of it (files that cost new inodes) is written next on this thread, while
        the step that waited for the blob goes on."""
        from ..image.unpack import note_layer
        result = _run.write_layer(self.store, upper, compression=self.opts.compression,
                                  sde=self.sde)
        note_layer(self.store, result["digest"], result["diff_id"])
        entry = self._entry(result, hist["created_by"], hist["created"])
        self._later(self._keep_layer, key, result, entry)
        return result, entry

    def _keep_layer(self, key: str, result: dict, entry: dict) -> None:
        from ..image.unpack import remember_layer
        try:
            remember_layer(self.store, result["digest"], result["diff_id"])
            self.cache.put(key, entry)
        except OSError as e:  # never fails the build: the next one runs the step again
            self.progress.info(f"warning: cannot record a RUN's layer in the cache: {e}")

    def on_output(self, line: str) -> None:
        step = getattr(self._local, "step", None)
        if step is not None:
            self.progress.output(step, line)

    def _scope(self, parent=None, base_env=None):
        from ..dockerfile.scope import Scope
        return Scope.for_stage(self.df, build_args=self.opts.build_args,
                               globals_=self.global_args, parent=parent, base_env=base_env)

    def _from(self, stage, ps, plat):
        st = StageState(plat)
        triggers = []
        base = ps.base
        if ps.base_kind == "scratch":
            # BuildKit's emptyImage: PATH and the working directory are set
            st.config = {"Env": ["PATH=" + _run.DEFAULT_PATH], "WorkingDir": "/"}
            st.scope = self._scope(base_env=st.env_map())
            st.chain = _cache.chain_key("scratch", plat, self.sde, self.opts.compression)
            return st, triggers
        if ps.base_kind == "stage":
            src = self._results[ps.base_stage]
            st.scope = self._scope(parent=src.scope)
            st.layers = list(src.layers)
            st.config = _copy.deepcopy(src.config)
            st.history = _copy.deepcopy(src.history)
            st.author = src.author
            st.shell = list(src.shell)
            st.chain = _cache.chain_key("stage", src.chain)
            # BuildKit: the base stage's ONBUILD commands are this stage's triggers
            onbuild = st.config.pop("OnBuild", None) or []
            return st, self._triggers(onbuild, f"ONBUILD of stage {ps.base}", stage)
        what = f"{self.fname}:{stage.line}: FROM {base}"
        desc, man, cfg = _images.resolve_base(self.store, base, what, platform=plat,
                                              **self._pull)
        st.layers = list(zip(man["layers"], cfg["rootfs"]["diff_ids"]))
        st.config = _copy.deepcopy(cfg.get("config") or {})
        st.history = list(cfg.get("history") or [])
        st.author = cfg.get("author")
        st.scope = self._scope(base_env=st.env_map())
        if st.config.get("Shell"):
            st.shell = list(st.config["Shell"])
        st.cmd_from_base = "Cmd" in st.config
        onbuild = st.config.pop("OnBuild", None) or []
        triggers = self._triggers(onbuild, f"ONBUILD of {base}", stage)
        st.chain = _cache.chain_key("image", desc["digest"], self.sde, self.opts.compression)
        return st, triggers

    def _triggers(self, onbuild: list, name: str, stage) -> list:
        """ONBUILD expressions (heredoc bodies included) parsed as instructions."""
        if not onbuild:
            return []
        from ..dockerfile import parse
        sub = parse("FROM scratch\n" + "\n".join(onbuild) + "\n", filename=name)
        triggers = sub.stages[0].instructions
        for t in triggers:
            t.line = stage.line
        return triggers

    # -- helpers ----------------------------------------------------------------------


    def _lookup(self, st, key: str, inputs: dict) -> dict | None:
        """The cache entry for a step's key; on a miss, say why (the inputs that differ
        from the last build that had this step) and remember these inputs for the next."""
        hit = self.cache.get(key)
        pos = getattr(self._local, "pos", None)
        if pos is None or self.explain_log is None:
            return hit
        inputs = dict(inputs, parent=st.chain, sde=self.sde)
        inputs = json.loads(json.dumps(inputs, default=str))  # as the log will read it back
        if hit is None:
            reasons = _cache.explain(self.explain_log.load(*pos), inputs)
            step = self._local.step
            self.misses.append((step.label, reasons))
            self.progress.cache_miss(step, reasons)
        self._later(self._save_inputs, pos, inputs)
        return hit

    def _save_inputs(self, pos, inputs: dict) -> None:
        try:
            self.explain_log.save(*pos, inputs)
        except OSError as e:  # never fails the build: the next one explains less
            self.progress.info(f"warning: cannot record the cache inputs: {e}")

    def _now(self) -> str:
        return _iso(self.sde if self.sde is not None else time.time())

    def _meta(self, st, ins, created_by: str) -> bool:
        """A config-only step: history entry with empty_layer, chain advances."""
        st.history.append({"created": self._now(), "created_by": created_by,
                           "comment": "buildkit.dockerfile.v0", "empty_layer": True})
        st.chain = _cache.chain_key(st.chain, created_by)
        return False

    def _record(self, key: str, result: dict | None, created_by: str,
                created: str | None = None) -> dict:
        """Store a fresh step result in the cache; returns the cache entry."""
        entry = self._entry(result, created_by, created)
        self.cache.put(key, entry)
        return entry

    def _entry(self, result: dict | None, created_by: str, created: str | None = None) -> dict:
        """The cache entry of a fresh step result."""
        layer = None
        if result is not None:
            layer = _image.descriptor(result["media_type"], result["digest"], result["size"])
            layer["diff_id"] = result["diff_id"]
        return {"layer": layer, "history": {"created": created or self._now(),
                                            "created_by": created_by,
                                            "comment": "buildkit.dockerfile.v0"}}

    def _add_layer(self, st, chain: str, entry: dict) -> None:
        layer, hist = entry.get("layer"), dict(entry["history"])
        if layer is not None:
            desc = {k: v for k, v in layer.items() if k != "diff_id"}
            st.layers.append((desc, layer["diff_id"]))
        else:
            hist["empty_layer"] = True
        st.history.append(hist)
        st.chain = chain

    # -- metadata instructions --------------------------------------------------------

    def _i_env(self, st, ins):
        pairs = [(kv.key, kv.value) for kv in ins.pairs]
        for k, v in pairs:
            st.set_env(k, v)
        return self._meta(st, ins, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))

    def _i_label(self, st, ins):
        labels = st.config.setdefault("Labels", {})
        pairs = [(kv.key, kv.value) for kv in ins.pairs]
        for k, v in pairs:
            labels[k] = v
        return self._meta(st, ins, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))

    def _i_arg(self, st, ins):
        # the scope already declared them: decls carry the values (None = unset)
        shown = [d.name if d.default is None else f"{d.name}={d.default}" for d in ins.decls]
        return self._meta(st, ins, "ARG " + " ".join(shown))

    def _command(self, st, ins) -> list[str]:
        cmd = ins.command
        if isinstance(cmd, list):
            return list(cmd)
        return list(st.shell) + [cmd]

    def _i_cmd(self, st, ins):
        st.config["Cmd"] = self._command(st, ins)
        st.cmd_from_base = False
        return self._meta(st, ins, "CMD " + _json(st.config["Cmd"]))

    def _i_entrypoint(self, st, ins):
        st.config["Entrypoint"] = self._command(st, ins)
        if st.cmd_from_base:  # docker: a new ENTRYPOINT drops the base image's CMD
            st.config.pop("Cmd", None)
            st.cmd_from_base = False
        return self._meta(st, ins, "ENTRYPOINT " + _json(st.config["Entrypoint"]))

    def _i_shell(self, st, ins):
        st.shell = list(ins.shell)
        st.config["Shell"] = list(ins.shell)
        return self._meta(st, ins, "SHELL " + _json(ins.shell))

    def _i_expose(self, st, ins):
        ports = st.config.setdefault("ExposedPorts", {})
        shown = []
        for p in ins.ports:
            num, _, proto = p.partition("/")
            proto = (proto or "tcp").lower()
            if proto not in ("tcp", "udp", "sctp"):
                raise OCIError(f"EXPOSE {p}: unknown protocol {proto!r}")
            lo, _, hi = num.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise OCIError(f"EXPOSE {p}: invalid port")
            for n in range(int(lo), int(hi or lo) + 1):
                ports[f"{n}/{proto}"] = {}
            shown.append(f"{num}/{proto}")
        return self._meta(st, ins, "EXPOSE " + " ".join(shown))

    def _i_volume(self, st, ins):
        vols = st.config.setdefault("Volumes", {})
        paths = list(ins.paths)
        for p in paths:
            if not p:
                raise OCIError("VOLUME: empty path")
            vols[p] = {}
        return self._meta(st, ins, "VOLUME " + _json(paths))

    def _i_user(self, st, ins):
        user = ins.user
        if ins.group is not None:
            user += ":" + ins.group
        st.config["User"] = user
        return self._meta(st, ins, "USER " + user)

    def _i_workdir(self, st, ins):
        wd = posixpath.normpath(posixpath.join(st.config.get("WorkingDir") or "/", ins.path))
        st.config["WorkingDir"] = wd
        created_by = "WORKDIR " + wd
        if wd == "/":
            return self._meta(st, ins, created_by)
        if len(wd.encode()) >= _run.PATH_MAX:  # BuildKit's mkdir fails there too
            raise OCIError(f"{self._where(ins)}: WORKDIR: the working directory is "
                           f"{len(wd.encode())} bytes long: a process cannot run in a path of "
                           f"{_run.PATH_MAX} or more", hint="use a shorter WORKDIR")
        # BuildKit: mkdir -p, 0755, owned by the current USER, SOURCE_DATE_EPOCH times
        user = st.config.get("User") or ""
        key = _cache.chain_key(st.chain, "WORKDIR", wd, user, self.sde, self.opts.compression)
        hit = self._lookup(st, key, {"instruction": created_by, "user": user})
        if hit is not None:
            self._add_layer(st, key, hit)
            return True
        with _Views(self) as views:
            result = _copyop.mkdir_layer(self.store, views.view(st.layers), wd, user,
                                         compression=self.opts.compression, sde=self.sde,
                                         what=f"{self._where(ins)}: WORKDIR")
        self._add_layer(st, key, self._record(key, result, created_by))
        return False

    def _i_stopsignal(self, st, ins):
        sig = ins.signal
        name = sig.upper() if not sig.isdigit() else sig
        if not sig.isdigit():
            if not name.startswith("SIG"):
                name = "SIG" + name
            import signal
            if name not in signal.Signals.__members__ and not name.startswith("SIGRTM"):
                raise OCIError(f"STOPSIGNAL: unknown signal {sig!r}")
        st.config["StopSignal"] = name
        return self._meta(st, ins, "STOPSIGNAL " + name)

    def _i_healthcheck(self, st, ins):
        if ins.none:
            st.config["Healthcheck"] = {"Test": ["NONE"]}
        else:
            hc = {"Test": list(ins.test)}
            for attr, key in (("interval", "Interval"), ("timeout", "Timeout"),
                              ("start_period", "StartPeriod"), ("start_interval", "StartInterval"),
                              ("retries", "Retries")):
                v = getattr(ins, attr, None)
                if v is not None:
                    hc[key] = v
            st.config["Healthcheck"] = hc
        return self._meta(st, ins, "HEALTHCHECK " + _json(st.config["Healthcheck"]))

    def _i_onbuild(self, st, ins):
        st.config.setdefault("OnBuild", []).append(ins.expression)
        st.chain = _cache.chain_key(st.chain, "ONBUILD " + ins.expression)  # no history (BuildKit)
        return False

    def _i_maintainer(self, st, ins):
        st.author = ins.name
        return self._meta(st, ins, "MAINTAINER " + ins.name)

    # -- COPY / ADD -------------------------------------------------------------------

    def _source_for(self, st, ref: str, ins):
        """(Source, layers or None, key part) for COPY --from."""
        s = self.df.stage(ref)
        if s is not None:
            self._events[s.index].wait()
            res = self._results.get(s.index)
            if res is None:
                raise OCIError(f"COPY --from={ref}: stage {ref!r} was not built")
            return res.layers, res.chain
        desc, man, cfg = _images.resolve_base(self.store, ref, f"{self._where(ins)}: COPY --from",
                                              platform=self.platform, **self._pull)
        return list(zip(man["layers"], cfg["rootfs"]["diff_ids"])), desc["digest"]

    def _i_copy(self, st, ins):
        return self._copy(st, ins, is_add=False)

    def _i_add(self, st, ins):
        return self._copy(st, ins, is_add=True)

    def _copy(self, st, ins, *, is_add: bool):
        what = f"{self._where(ins)}: {ins.kind}"
        srcs, dest, chown, chmod = list(ins.sources), ins.dest, ins.chown, ins.chmod
        excludes = list(ins.exclude or [])  # as written: BuildKit does not expand them
        from_ = getattr(ins, "from_", None)  # never expanded (BuildKit)
        checksum = getattr(ins, "checksum", None)
        unpack = getattr(ins, "unpack", None)
        workdir = st.config.get("WorkingDir") or "/"
        heredocs = [h for h in ins.heredocs if h.path is not None]  # bodies expanded by the scope
        from_layers, from_key = None, None
        with _Views(self) as views:
            if from_:
                from_layers, from_key = self._source_for(st, from_, ins)
                root = views.view(from_layers)
                source = _context.Source(root or views.empty(), is_context=False)
            else:
                source = self.context
            sel = _copyop.select(ins, srcs, source, is_add=is_add, tmp_dir=self.scratch,
                                 checksum=checksum, excludes=excludes, heredocs=heredocs, what=what,
                                 limits=self.opts.add_limits)
            try:
                flags = {"chown": chown, "chmod": chmod, "link": bool(ins.link),
                         "parents": bool(ins.parents), "exclude": excludes, "unpack": unpack,
                         "from": from_key}
                parent = "" if ins.link else st.chain
                key = _cache.chain_key(parent, ins.kind, srcs, dest, workdir, flags, sel.digest,
                                       self.sde, self.opts.compression)
                created_by = f"{ins.kind} {' '.join(srcs)} {dest} # buildkit"
                hit = self._lookup(st, key, {
                    "instruction": f"{ins.kind} {' '.join(srcs)} {dest}",
                    "flags": flags, "workdir": workdir, "files": _selected_files(sel, source),
                    "link": bool(ins.link)})
                if hit is not None:
                    self._add_layer(st, _cache.chain_key(st.chain, key), hit)
                    return True
                view = None if ins.link else views.view(st.layers)
                result = _copyop.write(
                    self.store, sel, dest=dest, workdir=workdir, view=view, chown=chown,
                    chmod=chmod, from_context=from_ is None, is_add=is_add, unpack=unpack,
                    compression=self.opts.compression, sde=self.sde, what=what,
                    limits=self.opts.add_limits)
            finally:
                sel.cleanup()
        self._add_layer(st, _cache.chain_key(st.chain, key), self._record(key, result, created_by))
        return False

    # -- RUN --------------------------------------------------------------------------

    def _i_run(self, st, ins):
        what = f"{self._where(ins)}: RUN"
        from ..dockerfile.command import run_command
        rc = run_command(ins, st.shell)  # BuildKit's argv, heredocs included
        args, files = rc.argv, dict(rc.files)
        cmd = ins.command
        # ENV and the ARGs in scope (the later assignment wins), plus proxy build args
        full_env = st.scope.run_env()
        full_env.setdefault("PATH", _run.DEFAULT_PATH)
        arg_env = {k: v for k, v in st.scope.args.items() if full_env.get(k) == v and
                   st.scope.env.get(k) != v}
        if ins.security == "insecure":
            # BuildKit needs --allow security.insecure for it; pybuild never unconfines a RUN
            raise OCIError(f"{what}: --security=insecure is not allowed: pybuild runs every RUN "
                           "confined (capabilities, device rules, seccomp); remove the flag")
        network = ins.network or self.opts.network or "default"
        if network not in ("none", "host", "default"):
            raise OCIError(f"{what}: --network={network}: want none, host or default")
        mounts, mount_keys = [], []
        for m in ins.mounts:  # expanded by the scope
            rm, mk = self._run_mount(st, m, what)
            mounts.append(rm)
            mount_keys.append(mk)
        user = st.config.get("User") or ""
        cwd = st.config.get("WorkingDir") or "/"
        created_by = "RUN " + (_json(args) if isinstance(cmd, list) else " ".join(args)) + " # buildkit"
        if arg_env:
            created_by = f"RUN |{len(arg_env)} " + " ".join(f"{k}={v}" for k, v in
                                                           sorted(arg_env.items())) + " " + created_by[4:]
        # proxy build args reach the command but not the key (BuildKit's ProxyEnv), unless
        # the Dockerfile declares them (then they are ARGs like any other)
        key_env = sorted((k, v) for k, v in full_env.items()
                         if k not in _PROXY_ARGS or k in st.scope.state)
        key = _cache.chain_key(st.chain, "RUN", args, files, key_env, user, cwd,
                               network, mount_keys, self.sde, self.opts.compression)
        hit = self._lookup(st, key, {
            "instruction": "RUN " + (_json(args) if isinstance(cmd, list) else " ".join(args)),
            "env": dict(key_env),
            "user": user, "workdir": cwd, "network": network, "mounts": mount_keys,
            "heredoc files": files})
        if hit is not None:
            self._add_layer(st, key, hit)
            return True
        spec = _run.RunSpec(args=args, env=[f"{k}={v}" for k, v in full_env.items()], user=user,
                            cwd=cwd, network=network, mounts=mounts, what=what, files=files)
        # recorded before the container exists: if we die, the guardian or the next
        # pybuild deletes it with this runtime (run.py's state root)
        self.session.record_runtime(self.runtime, self.session.state_root())
        upper = _run.run(self, spec, self._lowerdirs(st.layers),
                         more=getattr(self._local, "more_runs", False))
        # the layer is written while the next steps run (settled before they need it)
        hist = {"created": self._now(), "created_by": created_by,
                "comment": "buildkit.dockerfile.v0"}
        st.layers.append(_PendingLayer(self._write_layer_later(upper, key, hist), upper, key, hist,
                                       what))
        st.history.append(dict(hist))
        st.chain = key
        if self.sde is not None:  # the next RUN must see the blob's clamped mtimes
            self._settle(st)
        return False

    def _run_mount(self, st, m, what):
        """A RUN --mount resolved to a host source, plus what it adds to the cache key."""
        target = m.target or ""
        m = _copy.copy(m)
        if m.type != "secret":
            # BuildKit joins a relative (or missing) target to the working directory
            m.target = posixpath.normpath(posixpath.join(st.config.get("WorkingDir") or "/",
                                                         target))
            if m.target == "/":
                raise OCIError(f"{what}: --mount type={m.type}: invalid mount target \"/\"",
                               hint="give target= a directory other than the root")
        if m.type == "tmpfs":
            return _run.RunMount(m), ("tmpfs", m.target, m.size)
        if m.type == "secret":
            sid = m.id or (posixpath.basename(m.target) if m.target else None)
            if not sid:
                raise OCIError(f"{what}: --mount type=secret needs id= or target=")
            src = self.opts.secrets.get(sid)
            if src is None:
                if m.required:
                    raise OCIError(f"{what}: secret {sid!r} is required: pass --secret id={sid},src=FILE")
                return _run.RunMount(_copy.copy(m)), ("secret-missing", sid)
            if not m.target:
                m.target = f"/run/secrets/{sid}"
            # the secret's content never enters the cache key (nor a layer)
            return _run.RunMount(m, secret_path=os.path.abspath(src)), ("secret", sid, m.target)
        if m.type == "cache":
            cid = m.id or m.target
            d = os.path.join(self.store.root, "cache-mounts",
                             _cache.chain_key(cid, m.from_ or "")[:32])
            os.makedirs(d, exist_ok=True)
            if m.mode is not None or m.uid is not None or m.gid is not None:
                os.chown(d, m.uid or 0, m.gid or 0)
                os.chmod(d, m.mode if m.mode is not None else 0o755)
            return _run.RunMount(m, cache_dir=d), ("cache", cid, m.target)
        if m.type == "bind":
            if m.from_:
                ref = m.from_
                layers, _ = self._source_for(st, ref, None) if self.df.stage(ref) else \
                    self._image_layers(ref, what)
                # the key follows the content of the mounted path, not the stage's history
                return _run.RunMount(m, view_layers=layers), (
                    "bind-from", self._mounted_digest(layers, m.source, what), m.target,
                    m.readonly)
            rel = (m.source or ".")
            host = self.context.host(os.path.normpath("/" + rel).lstrip("/"))
            if not os.path.exists(host):
                raise OCIError(f"{what}: --mount source {rel!r} does not exist in the build context")
            entries = list(self.context.walk(os.path.normpath("/" + rel).lstrip("/")))
            dg = self.context.digest_entries(entries)
            return _run.RunMount(m, source_host=host), ("bind", rel, m.target, m.readonly, dg)
        raise OCIError(f"{what}: --mount type={m.type} is not supported")

    def _mounted_digest(self, layers, source, what) -> str:
        """Digest of what a from= bind mount shows: paths, modes, owners, contents."""
        with _Views(self) as views:
            root = views.view(layers) or views.empty()
            src = _context.Source(root, is_context=False)
            rel = os.path.normpath("/" + (source or "/")).lstrip("/")
            if not os.path.lexists(src.host(rel) if rel else src.root):
                raise OCIError(f"{what}: --mount source {source!r} does not exist in the "
                               "mounted stage or image")
            return src.digest_entries(src.walk(rel))

    def _image_layers(self, ref, what):
        desc, man, cfg = _images.resolve_base(self.store, ref, what, platform=self.platform,
                                              **self._pull)
        return list(zip(man["layers"], cfg["rootfs"]["diff_ids"])), desc["digest"]

    # -- the image --------------------------------------------------------------------

    def _write_image(self, st) -> dict:
        # A build whose every step hit the cache gives the image it gave before (as docker
        # does): same digest, nothing written.
        key = _cache.chain_key("image", st.chain, sorted(self.opts.labels.items()), st.platform,
                               st.author, self.sde)
        hit = self.cache.get(key)
        if hit is not None and self.store.has(hit["manifest"]["digest"]):
            return hit["manifest"]
        desc = self._new_image(st)
        self.cache.put(key, {"manifest": desc, "history": {}})
        return desc

    def _new_image(self, st) -> dict:
        cfg = _copy.deepcopy(st.config)
        if self.opts.labels:
            cfg.setdefault("Labels", {}).update(self.opts.labels)
        doc = _image.image_config(diff_ids=[d for _, d in st.layers], config=cfg,
                                  history=st.history, created=self._now(), author=st.author,
                                  platform=st.platform)
        cblob = self.store.put_json(doc, mt.IMAGE_CONFIG)
        man = _image.manifest(cblob.descriptor(mt.IMAGE_CONFIG), [d for d, _ in st.layers])
        mblob = self.store.put_json(man, mt.IMAGE_MANIFEST)
        return mblob.descriptor(mt.IMAGE_MANIFEST)

    def _export(self, desc: dict, out: str) -> None:
        from ..image import export
        export.export(self.store, desc, out, tags=self.opts.tags)


class _Views:
    """Read-only overlay views mounted for one step; all unmounted when the step ends."""

    def __init__(self, builder):
        self.b = builder
        self._stack = []
        self._empty = None

    def __enter__(self):
        return self

    def view(self, layers):
        if not layers:
            return None
        cm = _rootfs.mounted_view(self.b._lowerdirs(layers), self.b.scratch)
        path = cm.__enter__()
        self._stack.append(cm)
        return path

    def empty(self):
        if self._empty is None:
            self._empty = os.path.join(self.b.scratch, f"empty-{uuid.uuid4().hex[:8]}")
            os.mkdir(self._empty)
        return self._empty

    def __exit__(self, *exc):
        err = None
        while self._stack:
            try:
                self._stack.pop().__exit__(None, None, None)
            except BaseException as e:  # keep unmounting the rest
                err = err or e
        if self._empty:
            os.rmdir(self._empty)
        if err:
            raise err
        return False


def _json(v) -> str:
    import json
    return json.dumps(v, ensure_ascii=False)


def _default_dockerfile(context: str) -> str:
    """`Dockerfile` in the context, or `dockerfile` when only that exists (BuildKit's
    dockerui falls back to the lower-case name)."""
    path = os.path.join(context, "Dockerfile")
    lower = os.path.join(context, "dockerfile")
    if not os.path.lexists(path) and os.path.lexists(lower):
        return lower
    return path


def _source_date_epoch(opts) -> int | None:
    """--build-arg SOURCE_DATE_EPOCH wins over the environment (buildx passes the
    environment's as that build arg); an empty value means unset."""
    if "SOURCE_DATE_EPOCH" not in opts.build_args:
        return opts.source_date_epoch
    v = opts.build_args["SOURCE_DATE_EPOCH"].strip()
    if not v:
        return None
    if not v.isdigit():
        raise OCIError(f"--build-arg SOURCE_DATE_EPOCH={v!r}: want seconds since the epoch")
    return int(v)


def _selected_files(sel, source) -> dict:
    """{path: digest} of what a COPY selected, for explaining a miss by file."""
    out = {}
    for it in sel.items:
        if it.kind == "tree":
            for rel, host, st in it.entries:
                out[rel or "."] = source.digest_entries([(rel, host, st)])
        else:
            out[it.name or it.host] = hashlib.sha256(it.data).hexdigest()
    return out
