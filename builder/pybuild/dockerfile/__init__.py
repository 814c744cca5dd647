"""pybuild's Dockerfile front end: parse, expand, plan. Pure: no I/O, no side effects.

    df = parse(text, filename="Dockerfile")      # -> ast.Dockerfile
    expand("${A:-x}", env)                       # -> str
    bp = plan(df, target="app", build_args={...})  # -> BuildPlan (stages, levels, images)
    sc = Scope.for_stage(df, build_args=..., globals_=bp.globals, base_env=image_env)
    sc.apply(inst)                               # -> inst with ARG/ENV expanded
"""

from .ast import (Add, Arg, ArgDecl, Cmd, Copy, Dockerfile, Entrypoint, Env, Expose, From,
                  Healthcheck, Heredoc, Instruction, KeyValue, Label, Maintainer, Mount,
                  Onbuild, Run, Shell, Stage, StopSignal, User, Volume, Workdir)
from .command import RunCommand, run_command
from .expand import expand, expand_heredoc, expand_words
from .mounts import MountError, parse_mount
from .instructions import parse
from .plan import BuildPlan, PlannedStage, plan
from .render import render
from .scope import Platform, Scope, parse_platform, predefined_args

__all__ = [
    "parse", "expand", "expand_words", "expand_heredoc", "plan", "BuildPlan", "PlannedStage",
    "Scope", "Platform", "parse_platform", "predefined_args", "render", "parse_mount",
    "MountError", "run_command", "RunCommand",
    "Dockerfile", "Stage", "Instruction", "Heredoc", "KeyValue", "ArgDecl", "Mount",
    "From", "Run", "Cmd", "Entrypoint", "Shell", "Env", "Label", "Arg", "Copy", "Add",
    "Expose", "Volume", "User", "Workdir", "StopSignal", "Maintainer", "Healthcheck",
    "Onbuild",
]
