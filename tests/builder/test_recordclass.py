"""pybuild.recordclass behaves as dataclasses does for what pybuild uses, and keeps
`dataclasses` (and `inspect`) out of a build's start."""

import subprocess
import sys

import pytest

from pybuild.recordclass import FrozenInstanceError, field, fields, is_record, record, replace


@record
class Base:
    kind: str
    line: int = 1
    args: list = field(default_factory=list)
    pos: dict = field(default_factory=dict, repr=False, compare=False)

    def first(self):
        return self.args[0] if self.args else None


@record
class Child(Base):
    extra: str = "x"


@record(frozen=True)
class Key:
    name: str
    tag: str | None = None


def test_init_defaults_factories_and_order():
    a = Base("RUN")
    b = Base("RUN")
    assert (a.kind, a.line, a.args, a.pos) == ("RUN", 1, [], {})
    a.args.append("x")
    assert b.args == []  # a fresh list each time
    c = Child("COPY", 3, ["a"], extra="y")
    assert [f.name for f in fields(c)] == ["kind", "line", "args", "pos", "extra"]
    assert c.first() == "a" and c.extra == "y"
    assert is_record(c) and is_record(Child) and not is_record(object())


def test_errors_like_dataclasses():
    with pytest.raises(TypeError, match="missing required argument: 'kind'"):
        Base()
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        Base("RUN", nope=1)
    with pytest.raises(TypeError, match="multiple values"):
        Base("RUN", kind="RUN")
    with pytest.raises(TypeError, match="non-default argument"):
        @record
        class Bad(Base):
            required: str


def test_eq_repr_hash():
    a, b = Base("RUN", pos={"a": 1}), Base("RUN", pos={"b": 2})
    assert a == b  # pos is compare=False
    assert a != Base("CMD") and Base("RUN") != Child("RUN")
    assert repr(Child("RUN")) == "Child(kind='RUN', line=1, args=[], extra='x')"
    with pytest.raises(TypeError):
        hash(a)  # equal by value: not hashable, as dataclasses
    assert hash(Key("a")) == hash(Key("a")) and {Key("a"): 1}[Key("a")] == 1
    with pytest.raises(FrozenInstanceError):
        Key("a").name = "b"


def test_replace():
    c = Child("RUN", args=["a"])
    d = replace(c, extra="z")
    assert type(d) is Child and d.extra == "z" and d.args == ["a"] and c.extra == "x"
    k = replace(Key("a"), tag="t")
    assert k == Key("a", "t")


def test_a_build_start_imports_no_dataclasses():
    code = ("import sys, pybuild.build.executor, pybuild.dockerfile.parser; "
            "print('dataclasses' in sys.modules, 'inspect' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
