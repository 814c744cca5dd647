"""pyrunc.oslite and pyrunc.pathlite give os's and posixpath's answers (pyrunc imports them
instead of os, which costs ~1.2 ms of every command): held to the real ones here."""

import itertools
import os
import posixpath
import subprocess
import sys

import pytest

from pyrunc import oslite, pathlite

PARTS = ["", "/", "//", "///", "a", "a/", "/a", "a//b", "/a/b/", ".", "..", "./a", "../a",
         "a/..", "a/../..", "/..", "/../a", "a/./b/../c", "//a", "///a/b", "a/b/c/../../d", "é/ü"]


@pytest.mark.parametrize("fn", ["split", "dirname", "basename", "normpath", "isabs", "abspath"])
def test_one_argument_functions_match_posixpath(fn):
    for p in PARTS:
        assert getattr(pathlite, fn)(p) == getattr(posixpath, fn)(p), (fn, p)


def test_join_matches_posixpath():
    for n in (1, 2, 3):
        for parts in itertools.product(PARTS[:12], repeat=n):
            assert pathlite.join(*parts) == posixpath.join(*parts), parts


def test_predicates_and_realpath_match_on_a_tree_of_links(tmp_path):
    root = str(tmp_path)
    os.makedirs(f"{root}/d/e")
    open(f"{root}/d/f", "w").close()
    links = {"rel": "d/e", "abs": f"{root}/d", "up": "../x", "dangling": "nope/x", "loop1": "loop2",
             "loop2": "loop1", "tofile": "d/f", "chain": "rel/../f", "self": ".", "deep": "abs/e/../../rel"}
    for name, target in links.items():
        os.symlink(target, f"{root}/{name}")
    names = ["", ".", "d", "d/e", "d/f", "d/f/x", "missing", "missing/..", *links,
             *(f"{n}/x" for n in links), *(f"{n}/.." for n in links), "d/../rel/../../abs"]
    for n in names:
        p = f"{root}/{n}"
        for fn in ("exists", "lexists", "isdir", "isfile", "islink", "realpath"):
            assert getattr(pathlite, fn)(p) == getattr(posixpath, fn)(p), (fn, n)
    cwd = os.getcwd()
    try:
        os.chdir(root)
        for n in names[1:]:
            assert pathlite.realpath(n) == posixpath.realpath(n), n
            assert pathlite.abspath(n) == posixpath.abspath(n), n
    finally:
        os.chdir(cwd)
    assert not pathlite.exists("a\0b") and not pathlite.isdir("a\0b")  # as os.path: False, no error


def test_oslite_is_os_without_importing_it(tmp_path):
    for name in ("open", "read", "write", "close", "stat", "O_CLOEXEC", "kill", "waitpid", "_exit",
                 "scandir", "fspath", "strerror", "memfd_create", "register_at_fork"):
        assert getattr(oslite, name) is getattr(os, name), name
    assert (oslite.SEEK_SET, oslite.SEEK_CUR, oslite.SEEK_END) == (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END)
    assert not hasattr(oslite, "environ"), "posix.environ is bytes: code written for os.environ must fail"
    for name in ("a", "é", "a\udcff", b"a\xff"):
        assert oslite.fsencode(name) == os.fsencode(name) and oslite.fsdecode(name) == os.fsdecode(name)
    code = ("import sys\nsys.path[:0] = %r\nfrom pyrunc import oslite\n"
            "print(oslite.getenv('PYRUNC_T'), oslite.getenv('PYRUNC_NONE', 'dflt'), 'os' in sys.modules)"
            % [os.path.dirname(os.path.dirname(oslite.__file__))])
    out = subprocess.run([sys.executable, "-S", "-c", code], env={"PYRUNC_T": "v\xe9"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["v\xe9", "dflt", "False"], out
    d = f"{tmp_path}/x/y/z"
    umask = os.umask(0o022)
    try:
        oslite.makedirs(d, 0o700)
    finally:
        os.umask(umask)
    assert os.stat(d).st_mode & 0o777 == 0o700 and os.stat(f"{tmp_path}/x").st_mode & 0o777 == 0o755
    oslite.makedirs(d, exist_ok=True)
    with pytest.raises(FileExistsError):
        oslite.makedirs(d)
    open(f"{tmp_path}/file", "w").close()
    with pytest.raises(FileExistsError):
        oslite.makedirs(f"{tmp_path}/file", exist_ok=True)


def test_no_pyrunc_module_imports_os_on_import():
    """Every module of pyrunc takes os from oslite (a new `import os` anywhere on the path of a
    command costs every command 1.2 ms); what needs more of os imports it where it uses it."""
    root = os.path.dirname(oslite.__file__)
    offenders = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f)) as fh:
                    for i, line in enumerate(fh, 1):
                        if line.startswith(("import os", "from os ", "from os.", "import posixpath")) \
                                or line.strip() in ("import stat", "from stat import *"):
                            offenders.append(f"{f}:{i}: {line.strip()}")
    assert offenders == []
