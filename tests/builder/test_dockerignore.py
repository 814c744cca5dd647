""".dockerignore matching and the context walker."""

import os

import pytest

from ocispec.errors import OCIError
from pybuild.dockerfile.dockerignore import Matcher, clean_relpath, read_patterns, walk


def test_read_patterns_cleaning_and_comments():
    text = "\ufeff# comment\n  *.log  \n\n/abs/path\n./rel/\n!  keep.log\nsub//dir/../x\n #not comment\n"
    assert read_patterns(text) == ["*.log", "abs/path", "rel", "!keep.log", "sub/x", "#not comment"]


@pytest.mark.parametrize("pattern,path,excluded", [
    ("*", "file", True),
    ("*", "dir/file", True),          # the parent "dir" matches
    ("*.go", "main.go", True),
    ("*.go", "pkg/main.go", False),   # * does not cross /
    ("**/*.go", "pkg/sub/main.go", True),
    ("**/*.go", "main.go", True),
    ("**", "any/thing", True),
    ("dir/**", "dir/a/b", True),
    ("dir/**", "dir", False),
    ("**/dir", "a/b/dir", True),
    ("**/dir", "a/b/dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("a**/*.txt", "a/x/y/file.txt", True),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abc/def", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    (".*", ".git", True),
    (".*", "git", False),
    ("abc.def", "abcXdef", False),    # . is literal
    ("a(b)c+{d}|$", "a(b)c+{d}|$", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "axb", False),
    ("docs", "docs/sub/readme.md", True),
    ("/docs/", "docs/x", True),
    ("./build", "build/out", True),
    ("build", "src/build", False),    # patterns are anchored at the context root
])
def test_single_pattern(pattern, path, excluded):
    assert Matcher(read_patterns(pattern)).excluded(path) is excluded


@pytest.mark.parametrize("patterns,path,excluded", [
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md"], "CHANGES.md", True),
    (["!README.md", "*.md"], "README.md", True),         # last match wins
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/other.md", True),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["*", "!src", "src/*.tmp"], "src/a.tmp", True),
    (["*", "!src", "src/*.tmp"], "src/a.py", False),
    (["a", "!a", "a/b"], "a/b/c", True),
    (["**/*.pyc", "!keep/**"], "keep/x/y.pyc", False),
])
def test_exceptions(patterns, path, excluded):
    assert Matcher(patterns).excluded(path) is excluded


def test_root_is_never_excluded():
    assert Matcher(["*"]).excluded(".") is False
    assert Matcher(["*"]).excluded("") is False


@pytest.mark.parametrize("bad", ["[", "a[", "[^bc", "[]a]", "[x-]", "[-x]", "[a-b-c]", "\\", "!"])
def test_bad_patterns(bad):
    with pytest.raises(OCIError) as e:
        Matcher([bad])
    assert ".dockerignore" in str(e.value)


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", ".."])
def test_paths_escaping_context(path):
    with pytest.raises(OCIError) as e:
        Matcher(["*"]).excluded(path)
    assert "outside the build context" in str(e.value)


def test_clean_relpath():
    assert clean_relpath("./a//b/../c/") == "a/c"
    assert clean_relpath("") == "."


def test_may_include_below():
    m = Matcher(["docs", "build", "!docs/keep/**", "!*/special"])
    assert m.may_include_below("docs")
    assert m.may_include_below("build")          # */special could match build/special
    assert not m.may_include_below("build/sub")  # but nothing deeper
    assert m.may_include_below("docs/keep/a")
    assert not Matcher(["docs", "!docs/x"]).may_include_below("other")
    assert Matcher(["*", "!**/keep"]).may_include_below("any/depth")


def make_tree(root, files):
    for rel in files:
        p = os.path.join(root, rel)
        if rel.endswith("/"):
            os.makedirs(p, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(rel)


def test_walk_with_exceptions(tmp_path):
    make_tree(tmp_path, ["Dockerfile", "README.md", "notes.md", "src/app.py", "src/app.pyc",
                         "node_modules/a/index.js", "node_modules/keep/x.js", "empty/",
                         ".git/HEAD", "docs/a.md", "docs/keep.md"])
    os.symlink("src/app.py", tmp_path / "link")
    m = Matcher.from_text("*.md\n!README.md\n**/*.pyc\nnode_modules\n!node_modules/keep\n.git\n"
                          "docs\n!docs/keep.md\n")
    got = [(e.relpath, e.is_dir) for e in walk(str(tmp_path), m)]
    assert got == [
        ("Dockerfile", False), ("README.md", False), ("docs/keep.md", False), ("empty", True),
        ("link", False), ("node_modules/keep", True), ("node_modules/keep/x.js", False),
        ("src", True), ("src/app.py", False)]
    link = [e for e in walk(str(tmp_path), m) if e.relpath == "link"][0]
    assert link.is_symlink and link.path == str(tmp_path / "link")


def test_walk_prunes_excluded_dirs(tmp_path, monkeypatch):
    make_tree(tmp_path, ["big/a/b/c.txt", "keep.txt", "docs/x/y.md", "docs/keep/z.md"])
    calls = []
    real = os.scandir

    def counting(path):
        calls.append(os.path.relpath(path, tmp_path))
        return real(path)
    monkeypatch.setattr(os, "scandir", counting)
    got = [e.relpath for e in walk(str(tmp_path), Matcher(["big", "docs", "!docs/keep"]))]
    assert got == ["docs/keep", "docs/keep/z.md", "keep.txt"]
    # big/ is never entered; docs/ is (an exception may re-include), docs/x is not
    assert sorted(calls) == [".", "docs", "docs/keep"]


def test_walk_without_matcher_and_errors(tmp_path):
    make_tree(tmp_path, ["a/b", "c"])
    assert [e.relpath for e in walk(str(tmp_path))] == ["a", "a/b", "c"]
    with pytest.raises(OCIError):
        list(walk(str(tmp_path / "c")))


def test_for_context_prefers_dockerfile_specific_ignore(tmp_path):
    make_tree(tmp_path, ["x.txt", "y.txt"])
    (tmp_path / ".dockerignore").write_text("x.txt\n")
    assert Matcher.for_context(str(tmp_path)).excluded("x.txt")
    (tmp_path / "Dockerfile.dockerignore").write_text("y.txt\n")
    m = Matcher.for_context(str(tmp_path), str(tmp_path / "Dockerfile"))
    assert m.excluded("y.txt") and not m.excluded("x.txt")
    assert not Matcher.for_context(str(tmp_path / "nowhere"))
