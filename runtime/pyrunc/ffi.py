"""The part of ctypes pyrunc calls, defined on ctypes' own C module (_ctypes).

`import ctypes` runs ctypes/__init__.py, which defines some sixty types and helpers, builds
pointer types and loads a library object per platform: with `ctypes.CDLL(None)` that is
~2.8 ms of every container start on a machine where the whole of `pyrunc run` is ~30 ms
(hyperfine, `python3.11 -S -c ...`: `import ctypes; ctypes.CDLL(None).syscall(39)` 11.6 ms,
these definitions and the same call 8.8 ms, an empty program 8.0 ms). The types below are
the ones ctypes defines, from the same extension module, so they behave alike: only what
pyrunc uses is here. Everything in pyrunc that calls C goes through this module, never
through ctypes, so one set of types is in play (a function with argtypes refuses another
module's c_int).
"""

from _ctypes import CFuncPtr as _CFuncPtr
from _ctypes import FUNCFLAG_CDECL as _CDECL
from _ctypes import FUNCFLAG_PYTHONAPI as _PYTHONAPI
from _ctypes import FUNCFLAG_USE_ERRNO as _USE_ERRNO
from _ctypes import POINTER, Structure, _SimpleCData, addressof, byref, get_errno, sizeof
from _ctypes import dlopen as _dlopen

__all__ = ["POINTER", "Structure", "addressof", "byref", "get_errno", "sizeof", "CDLL",
           "create_string_buffer", "libc", "pythonapi"]


class c_int(_SimpleCData):
    _type_ = "i"


class c_uint(_SimpleCData):
    _type_ = "I"


class c_long(_SimpleCData):
    _type_ = "l"


class c_ulong(_SimpleCData):
    _type_ = "L"


class c_ushort(_SimpleCData):
    _type_ = "H"


class c_int64(_SimpleCData):
    _type_ = "q"


class c_uint64(_SimpleCData):
    _type_ = "Q"


class c_char(_SimpleCData):
    _type_ = "c"


class c_char_p(_SimpleCData):
    _type_ = "z"


class c_void_p(_SimpleCData):
    _type_ = "P"


c_int32, c_uint32 = c_int, c_uint  # int is 32 bits on every Linux ABI
c_size_t = c_ulong  # and size_t is unsigned long


def create_string_buffer(init, size: int | None = None):
    """A mutable char array: of `init` bytes (and a NUL where it fits) or of `init` zeros."""
    if isinstance(init, bytes):
        buf = (c_char * (len(init) + 1 if size is None else size))()
        buf.value = init  # copies every byte, NULs included
        return buf
    return (c_char * init)()


class CDLL:
    """A loaded library whose functions are attributes, as ctypes.CDLL(name, use_errno=True):
    they return a C int unless given a restype, and save errno for get_errno()."""

    _flags = _CDECL | _USE_ERRNO

    def __init__(self, name: str | None):
        self._name = name
        self._handle = _dlopen(name, 0)  # RTLD_LOCAL, ctypes' default mode

        class _FuncPtr(_CFuncPtr):
            _flags_ = self._flags
            _restype_ = c_int

        self._FuncPtr = _FuncPtr

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        func = self._FuncPtr((name, self))
        setattr(self, name, func)
        return func


class _PyDLL(CDLL):
    # Calls that hold the GIL and check for a Python error after, as ctypes.pythonapi's.
    _flags = _CDECL | _PYTHONAPI


libc = CDLL(None)  # the process's own libc: dlopen(NULL) finds it without a search
pythonapi = _PyDLL(None)
