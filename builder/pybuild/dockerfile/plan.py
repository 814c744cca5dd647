"""The stage graph: which stages a target needs, in which order, which can run together.

A stage depends on the stage its FROM names, on stages named by `COPY --from` and by
`RUN --mount=from=`. References go by stage name (case-insensitive) or, for --from, by
index. A reference to a later stage or to the stage itself is an error (BuildKit: "it
needs to be defined before current stage"); a name that is not a stage is an image, but
a bare --from name one typo away from a stage name is reported as an unknown stage (and
such a FROM gets a warning).
"""

from __future__ import annotations

from collections.abc import Mapping
from ..recordclass import record, field

from ocispec.errors import OCIError

from . import ast
from .expand import expand
from .instructions import STAGE_NAME_RE
from .parser import _q
from .scope import BUILTIN_ARGS, global_args, parse_platform, predefined_args


@record
class PlannedStage:
    """One stage of the plan, its FROM resolved.

    base: the FROM image after global-ARG expansion ("scratch", an image reference such
        as "alpine:3" or "oci:DIR:tag", or the name of an earlier stage).
    base_kind: "scratch", "stage" or "image"; base_stage: the stage index when "stage".
    platform: the stage's --platform after expansion, normalized ("linux/arm64"), or None.
    deps: indexes of the stages that must be built first (base, --from, mount from=).
    images: external images this stage reads from (COPY --from / mount from=), not its base.
    """

    index: int
    name: str | None
    stage: ast.Stage
    base: str
    base_kind: str
    base_stage: int | None = None
    platform: str | None = None
    deps: list[int] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


@record
class BuildPlan:
    """What to build for a target.

    stages: the needed stages, dependencies first, the target last.
    levels: the same stage indexes grouped in waves: every stage of a wave depends only on
        stages of earlier waves, so the stages of one wave can be built concurrently.
    globals: the variables FROM lines saw (predefined args + global ARGs).
    predefined: BUILDPLATFORM, TARGETPLATFORM, ... for this build.
    images: every external image the needed stages use (bases and --from images), in order.
    warnings: the parser's (df.warnings), FROM names one typo off a stage name, and build
        args no needed stage declares.
    """

    dockerfile: ast.Dockerfile
    stages: list[PlannedStage]
    target: PlannedStage
    levels: list[list[int]]
    globals: dict[str, str]
    predefined: dict[str, str]
    build_args: dict[str, str]
    platform: str
    build_platform: str
    images: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unused_build_args: list[str] = field(default_factory=list)

    def stage(self, index: int) -> PlannedStage:
        for ps in self.stages:
            if ps.index == index:
                return ps
        raise KeyError(index)


def plan(df: ast.Dockerfile, *, target: str | None = None,
         build_args: Mapping[str, str] | None = None, platform: str | None = None,
         build_platform: str | None = None) -> BuildPlan:
    """Resolve the stage graph of df for target (default: the last stage)."""
    build_args = dict(build_args or {})
    try:
        # TARGETSTAGE without --target: the last stage's name (BuildKit), "default" if none
        predefined = predefined_args(platform=platform, build_platform=build_platform,
                                     target=target or (df.stages[-1].name if df.stages else None))
    except OCIError as e:
        raise OCIError(f"--platform: {e.message}") from None
    globals_ = global_args(df, build_args, predefined)
    graph = _Graph(df, globals_)
    planned = [graph.resolve(st) for st in df.stages]

    tgt = _find_target(df, target)
    needed: set[int] = set()
    todo = [tgt.index]
    while todo:
        i = todo.pop()
        if i not in needed:
            needed.add(i)
            todo.extend(planned[i].deps)
    order = [planned[i] for i in sorted(needed)]  # deps always point backwards

    level_of: dict[int, int] = {}
    for ps in order:
        level_of[ps.index] = 1 + max((level_of[d] for d in ps.deps), default=-1)
    levels: list[list[int]] = [[] for _ in range(max(level_of.values()) + 1)]
    for ps in order:
        levels[level_of[ps.index]].append(ps.index)

    images: list[str] = []
    for ps in order:
        for ref in ([ps.base] if ps.base_kind == "image" else []) + ps.images:
            if ref not in images:
                images.append(ref)

    declared = {d.name for a in df.global_args for d in a.decls}
    for ps in order:
        for inst in ps.stage.instructions:
            if isinstance(inst, ast.Arg):
                declared.update(d.name for d in inst.decls)
    unused = sorted(k for k in build_args if k not in declared and k not in BUILTIN_ARGS
                    and not k.startswith("BUILDKIT_"))
    warnings = list(df.warnings) + graph.warnings
    if unused:
        warnings.append("one or more build args were not consumed: " + ", ".join(unused))

    return BuildPlan(dockerfile=df, stages=order, target=planned[tgt.index], levels=levels,
                     globals=globals_, predefined=predefined, build_args=build_args,
                     platform=predefined["TARGETPLATFORM"],
                     build_platform=predefined["BUILDPLATFORM"], images=images,
                     warnings=warnings, unused_build_args=unused)


def _find_target(df: ast.Dockerfile, target: str | None) -> ast.Stage:
    if target is None or target == "":
        return df.stages[-1]
    for st in df.stages:
        if st.name == target.lower():
            return st
    names = [st.name for st in df.stages if st.name]
    near = _near_miss(target.lower(), names)
    hint = f"did you mean {near}?" if near else (
        "stages: " + ", ".join(names) if names else "no stage has a name (FROM ... AS NAME)")
    raise OCIError(f"{df.filename}: target stage {_q(target)} could not be found", hint=hint)


class _Graph:
    def __init__(self, df: ast.Dockerfile, globals_: dict[str, str]):
        self.df = df
        self.globals = globals_
        self.names = {st.name: st.index for st in df.stages if st.name}
        self.warnings: list[str] = []

    def err(self, pos: tuple[int, int], msg: str, hint: str | None = None) -> OCIError:
        return OCIError(f"{self.df.filename}:{pos[0]}:{pos[1]}: {msg}", hint=hint)

    def resolve(self, st: ast.Stage) -> PlannedStage:
        frm = st.from_
        assert frm is not None
        pos = frm.image_pos if frm.image_pos != (0, 0) else (frm.line, frm.column)
        try:
            base = expand(st.base, self.globals, escape=self.df.escape)
        except OCIError as e:
            raise self.err(pos, e.message) from None
        if not base:
            raise self.err(pos, f"base name ({st.base}) should not be blank",
                           hint="define the ARG before the first FROM or pass --build-arg")
        ps = PlannedStage(index=st.index, name=st.name, stage=st, base=base, base_kind="image")
        if st.platform is not None:
            ppos = (frm.flag_pos.get("platform") or [(frm.line, frm.column)])[-1]
            try:
                value = expand(st.platform, self.globals, escape=self.df.escape)
                if not value:
                    raise OCIError(f"empty platform value from expression {st.platform}")
                ps.platform = str(parse_platform(value))
            except OCIError as e:
                raise self.err(ppos, "--platform: " + e.message) from None
        if base.lower() == "scratch":
            ps.base_kind = "scratch"
        else:
            idx = self.names.get(base.lower())
            if idx is not None:
                self._check_order(idx, st, pos, "FROM")
                ps.base_kind, ps.base_stage = "stage", idx
                ps.deps.append(idx)
            else:
                near = self._near_stage(base)
                if near:
                    # An image may legitimately be one letter off a stage name (bash/base):
                    # only warn here; --from is stricter.
                    self.warnings.append(
                        f"{self.df.filename}:{pos[0]}:{pos[1]}: FROM {base}: no stage has "
                        f"this name, using it as an image (did you mean stage {near}?)")
        if ps.base_stage is not None:
            # The base stage's ONBUILD triggers run in this stage (BuildKit does the same).
            for inst in self.df.stages[ps.base_stage].instructions:
                if isinstance(inst, ast.Onbuild) and inst.trigger is not None:
                    self._inst_deps(ps, inst.trigger)
        for inst in st.instructions:
            self._inst_deps(ps, inst)
        ps.deps = sorted(set(ps.deps))
        return ps

    def _inst_deps(self, ps: PlannedStage, inst: ast.Instruction) -> None:
        if isinstance(inst, ast.Copy) and not isinstance(inst, ast.Add) and inst.from_ is not None:
            fpos = (inst.flag_pos.get("from") or [(inst.line, inst.column)])[-1]
            self._dep(ps, inst.from_, fpos, "--from")
        if isinstance(inst, ast.Run):
            mpos = inst.flag_pos.get("mount") or []
            for k, m in enumerate(inst.mounts):
                if m.from_:
                    p = mpos[k] if k < len(mpos) else (inst.line, inst.column)
                    self._dep(ps, m.from_, p, "--mount from")

    def _dep(self, ps: PlannedStage, ref: str, pos: tuple[int, int], what: str) -> None:
        if "$" in ref:
            raise self.err(pos, f"{what}: variable expansion is not supported in {_q(ref)}",
                           hint="name a stage with FROM ${ARG} AS NAME and use that name")
        if ref.isdigit():
            idx = int(ref)
            if idx >= len(self.df.stages):
                raise self.err(pos, f"{what}: invalid stage index {idx}: the Dockerfile has "
                               f"{len(self.df.stages)} stages")
        else:
            idx = self.names.get(ref.lower())
        if idx is None:
            near = self._near_stage(ref)
            if near:
                raise self.err(pos, f"{what}: unknown stage {_q(ref)}",
                               hint=f"did you mean {near}? to copy from an image, give it a tag, "
                               f"e.g. {ref}:latest")
            if ref not in ps.images:
                ps.images.append(ref)
            return
        self._check_order(idx, ps.stage, pos, what)
        ps.deps.append(idx)

    def _check_order(self, idx: int, st: ast.Stage, pos: tuple[int, int], what: str) -> None:
        ref = self.df.stages[idx].name or str(idx)
        cur = st.name or str(st.index)
        if idx == st.index:
            raise self.err(pos, f"{what}: circular dependency: stage {_q(cur)} refers to itself")
        if idx > st.index:
            raise self.err(pos, f"{what}: stage {_q(ref)} is defined after the current stage "
                           f"{_q(cur)}: a stage can only use stages defined before it")

    def _near_stage(self, ref: str) -> str | None:
        """A stage name ref is probably a typo of (bare names only, not tagged images)."""
        low = ref.lower()
        if not STAGE_NAME_RE.match(low) or any(c in ref for c in ":/@"):
            return None
        return _near_miss(low, list(self.names))


def _near_miss(word: str, candidates: list[str]) -> str | None:
    """A candidate within a small edit distance (with transpositions) of word."""
    limit = 1 if len(word) < 8 else 2
    best = None
    for c in candidates:
        d = _osa(word, c)
        if 0 < d <= limit and (best is None or d < best[0]):
            best = (d, c)
    return best[1] if best else None


def _osa(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    if abs(len(a) - len(b)) > 2:
        return 3
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]
