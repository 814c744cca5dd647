"""Record classes: the part of `dataclasses` pybuild uses, without its start-up cost.

`dataclasses` imports `inspect` (with `ast`, `dis` and `tokenize`, ~8 ms here) and compiles
the source of an __init__, __repr__ and __eq__ for every class it decorates (~0.8 ms a class
on this machine): pybuild's 40 record classes cost ~30 ms of every cold build's start, a
quarter of a small build. These are made from closures over the field list instead.

    @record                     like @dataclass: fields from the class's annotations, in
    class Copy(Instruction):    order after the base classes' ones; `x: T = value` or
        sources: list[str] = field(default_factory=list)        `= field(...)` defaults

    @record(frozen=True)        immutable (FrozenInstanceError) and hashable
    replace(obj, **changes), fields(obj_or_class), is_record(obj)

The generated methods behave as dataclasses' do for what pybuild uses: positional or
keyword __init__ (then __post_init__), __repr__ of the repr=True fields, __eq__ over the
compare=True fields of an object of the same class (unhashable unless frozen), and a method
the class defines itself is kept.
"""

_MISSING = object()


class FrozenInstanceError(AttributeError):
    pass


class Field:
    __slots__ = ("name", "default", "default_factory", "repr", "compare")

    def __init__(self, default=_MISSING, default_factory=_MISSING, repr=True, compare=True):
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare

    def __repr__(self) -> str:
        return f"Field(name={self.name!r})"


def field(*, default=_MISSING, default_factory=_MISSING, repr: bool = True,
          compare: bool = True) -> Field:
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, repr, compare)


def _is_classvar(annotation) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.startswith(("ClassVar", "typing.ClassVar"))


def record(cls=None, /, *, frozen: bool = False):
    def wrap(cls):
        return _make(cls, frozen)

    return wrap if cls is None else wrap(cls)


def _make(cls, frozen: bool):
    found = {}
    for base in reversed(cls.__mro__[1:]):
        for f in getattr(base, "__record_fields__", ()):
            found[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, _MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name = name
        if isinstance(value, Field):
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        found[name] = f
    flist = tuple(found.values())
    seen_default = False
    for f in flist:
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        if seen_default and not has_default:
            raise TypeError(f"{cls.__name__}: non-default argument {f.name!r} follows "
                            "default argument")
        seen_default = seen_default or has_default
    names = tuple(f.name for f in flist)
    shown = tuple(f.name for f in flist if f.repr)
    compared = tuple(f.name for f in flist if f.compare)
    set_ = object.__setattr__

    def __init__(self, *args, **kw):
        if len(args) > len(flist):
            raise TypeError(f"{cls.__name__}() takes {len(flist)} positional arguments "
                            f"but {len(args)} were given")
        for i, f in enumerate(flist):
            if i < len(args):
                if f.name in kw:
                    raise TypeError(f"{cls.__name__}() got multiple values for {f.name!r}")
                value = args[i]
            elif f.name in kw:
                value = kw.pop(f.name)
            elif f.default is not _MISSING:
                value = f.default
            elif f.default_factory is not _MISSING:
                value = f.default_factory()
            else:
                raise TypeError(f"{cls.__name__}() missing required argument: {f.name!r}")
            set_(self, f.name, value)
        if kw:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument "
                            f"{next(iter(kw))!r}")
        post = getattr(self, "__post_init__", None)
        if post is not None:
            post()

    def __repr__(self):
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in compared)

    methods = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
    if frozen:
        def __setattr__(self, name, value):
            raise FrozenInstanceError(f"cannot assign to field {name!r}")

        def __delattr__(self, name):
            raise FrozenInstanceError(f"cannot delete field {name!r}")

        def __hash__(self):
            return hash(tuple(getattr(self, n) for n in compared))

        methods.update(__setattr__=__setattr__, __delattr__=__delattr__, __hash__=__hash__)
    elif "__eq__" not in cls.__dict__:
        methods["__hash__"] = None  # as dataclasses: equal by value, so not hashable
    for name, fn in methods.items():
        if name not in cls.__dict__:
            if fn is not None:
                fn.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, fn)
    cls.__record_fields__ = flist
    cls.__match_args__ = names
    return cls


def fields(obj) -> tuple:
    """The Field objects (each with .name) of a record or record class, in order."""
    return getattr(obj, "__record_fields__")


def is_record(obj) -> bool:
    return hasattr(type(obj) if not isinstance(obj, type) else obj, "__record_fields__")


def replace(obj, **changes):
    """A new record like obj with the given fields changed (dataclasses.replace)."""
    for f in obj.__record_fields__:
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return obj.__class__(**changes)
