"""pyrunc.ffi: the C types pyrunc calls libc and libseccomp with, defined on _ctypes."""
import ctypes
import errno
import os

import pytest

from pyrunc import ffi, linux


def test_types_match_ctypes_sizes():
    for name in ("c_int", "c_uint", "c_long", "c_ulong", "c_ushort", "c_int64", "c_uint64",
                 "c_int32", "c_uint32", "c_size_t", "c_char", "c_char_p", "c_void_p"):
        assert ffi.sizeof(getattr(ffi, name)) == ctypes.sizeof(getattr(ctypes, name)), name


def test_string_buffer_keeps_every_byte():
    prog = b"\x06\x00\x00\x00\x00\x00\xff\x7f" * 3  # a BPF program is full of NULs
    buf = ffi.create_string_buffer(prog, len(prog))
    assert bytes(buf) == prog and ffi.sizeof(buf) == len(prog)
    assert bytes(ffi.create_string_buffer(b"ab")) == b"ab\x00"
    assert bytes(ffi.create_string_buffer(4)) == b"\x00" * 4


def test_libc_calls_return_and_errno():
    assert ffi.libc.getpid() == os.getpid()
    assert ffi.libc.close(-1) == -1 and ffi.get_errno() == errno.EBADF
    with pytest.raises(OSError) as e:
        linux.check(ffi.libc.close(-1), "close")
    assert e.value.errno == errno.EBADF and "close: " in str(e.value)
    if os.uname().machine == "x86_64":
        assert linux.libc.syscall(ffi.c_long(39)) == os.getpid()  # getpid


def test_structure_by_reference():
    class Pair(ffi.Structure):
        _fields_ = [("a", ffi.c_uint32), ("b", ffi.c_uint64)]

    p = Pair(1, 2**40)
    assert ffi.sizeof(p) == 16 and p.b == 2**40
    assert ffi.addressof(p) != 0 and ffi.byref(p) is not None


def test_library_function_signatures():
    lib = ffi.CDLL("libc.so.6")
    lib.strlen.argtypes, lib.strlen.restype = (ffi.c_char_p,), ffi.c_size_t
    assert lib.strlen(b"pyrunc") == 6
    with pytest.raises(AttributeError):
        lib.no_such_function_in_libc
    with pytest.raises(OSError):
        ffi.CDLL("libdoes-not-exist.so.9")
