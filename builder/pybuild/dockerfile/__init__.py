"""pybuild's Dockerfile front end: parse, expand, plan. Pure: no I/O, no side effects.

    df = parse(text, filename="Dockerfile")      # -> ast.Dockerfile
    expand("${A:-x}", env)                       # -> str
    plan(df, target="app", build_args={...})     # -> BuildPlan
"""

from .ast import (Add, Arg, ArgDecl, Cmd, Copy, Dockerfile, Entrypoint, Env, Expose, From,
                  Healthcheck, Heredoc, Instruction, KeyValue, Label, Maintainer, Mount,
                  Onbuild, Run, Shell, Stage, StopSignal, User, Volume, Workdir)
from .expand import expand, expand_words
from .parser import parse

__all__ = [
    "parse", "expand", "expand_words",
    "Dockerfile", "Stage", "Instruction", "Heredoc", "KeyValue", "ArgDecl", "Mount",
    "From", "Run", "Cmd", "Entrypoint", "Shell", "Env", "Label", "Arg", "Copy", "Add",
    "Expose", "Volume", "User", "Workdir", "StopSignal", "Maintainer", "Healthcheck",
    "Onbuild",
]

from .plan import BuildPlan, PlannedStage, plan  # noqa: E402
from .scope import Platform, Scope, parse_platform, predefined_args  # noqa: E402

__all__ += ["plan", "BuildPlan", "PlannedStage", "Scope", "Platform", "parse_platform",
            "predefined_args"]
