"""Case names (the upstream runtime-tools validation names) mapped to case functions."""

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Case:
    name: str
    func: Callable
    description: str


CASES: dict[str, Case] = {}


def case(name: str):
    """Register `func(ctx)` under `name`; its docstring is the case's description."""
    def register(func):
        if name in CASES:
            raise ValueError(f"case {name} registered twice")
        CASES[name] = Case(name, func, " ".join((func.__doc__ or "").split()))
        return func
    return register


def all_cases() -> dict[str, Case]:
    from . import cases  # noqa: F401  (registers every case module)
    return CASES
