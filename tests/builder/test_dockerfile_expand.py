"""Variable substitution: BuildKit's shell-lexer word grammar."""

import pytest

from ocispec.errors import OCIError
from pybuild.dockerfile.expand import expand, expand_words, raw_words, unquote

ENV = {"PWD": "/home", "SHELL": "bash", "NULL": "", "str": "foobarbaz",
       "file": "/home/tux/book/book.tar.bz2", "SP": "a  b ", "X": "x"}


@pytest.mark.parametrize("word,want", [
    # the Dockerfile reference's own examples
    ("${str#f*b}", "arbaz"),
    ("${str##f*b}", "az"),
    ("${str%b*}", "foobar"),
    ("${str%%b*}", "foo"),
    ("${str/ba/fo}", "fooforbaz"),
    ("${str//ba/fo}", "fooforfoz"),
    # POSIX-style trimming on paths
    ("${file#*/}", "home/tux/book/book.tar.bz2"),
    ("${file##*/}", "book.tar.bz2"),
    ("${file%.*}", "/home/tux/book/book.tar"),
    ("${file%%.*}", "/home/tux/book/book"),
    ("${file/tux/wilber}", "/home/wilber/book/book.tar.bz2"),
    ("${str#zzz}", "foobarbaz"),
    ("${str%?}", "foobarba"),
    ("${str#\\*}", "foobarbaz"),
    ("${UNSET#x}", ""),
    ("${str//a/}", "foobrbz"),
    ("${str/o*a/-}", "f-z"),
])
def test_pattern_modifiers(word, want):
    assert expand(word, ENV) == want


@pytest.mark.parametrize("word,want", [
    ("$PWD", "/home"),
    ("${PWD}", "/home"),
    ("${PWD}x", "/homex"),
    ("$PWDx", ""),
    ("he${UNSET}llo", "hello"),
    ("${UNSET:-def}", "def"),
    ("${NULL:-def}", "def"),
    ("${NULL-def}", ""),
    ("${UNSET-def}", "def"),
    ("${PWD:-def}", "/home"),
    ("${UNSET:+alt}", ""),
    ("${NULL:+alt}", ""),
    ("${NULL+alt}", "alt"),
    ("${PWD:+alt}", "alt"),
    ("${PWD?}", "/home"),
    ("${NULL?}", ""),
    ("${UNSET:-${PWD}}", "/home"),
    ("${UNSET:-${ALSO:-deep}}", "deep"),
    ("${PWD:+${SHELL}-x}", "bash-x"),
    ("${UNSET:-\"q u\"}", "q u"),
    ("${UNSET:-'$PWD'}", "$PWD"),
    ("$", "$"),
    ("$.", "$."),
    ("a$1b", "ab"),
    ("$$", ""),
])
def test_variables_and_defaults(word, want):
    assert expand(word, ENV) == want


@pytest.mark.parametrize("word,want", [
    ("'$PWD'", "$PWD"),
    ("'a\\b'", "a\\b"),
    ('"$PWD"', "/home"),
    ('"a\\"b"', 'a"b'),
    ('"a\\$PWD"', "a$PWD"),
    ('"a\\tb"', "a\\tb"),
    ("\\$PWD", "$PWD"),
    ("\\${PWD}", "${PWD}"),
    ("a\\ b", "a b"),
    ("hello\\", "hello"),
    ("he'll'o", "hello"),
    ('"it\'s"', "it's"),
    ("${PWD}'${PWD}'", "/home${PWD}"),
])
def test_quoting(word, want):
    assert expand(word, ENV) == want


def test_backtick_escape():
    assert expand("`$PWD", ENV, escape="`") == "$PWD"
    assert expand('"a`"b"', ENV, escape="`") == 'a"b'
    # with ` as the escape, \ is an ordinary character (Windows paths)
    assert expand("C:\\dir\\$X", ENV, escape="`") == "C:\\dir\\x"


@pytest.mark.parametrize("word,reason", [
    ("'open", "single-quote"),
    ('"open', "double-quote"),
    ("${PWD", "missing '}'"),
    ("${}", "bad substitution"),
    ("${:x}", "bad substitution"),
    ("${PWD:=x}", "unsupported modifier (:=)"),
    ("${PWD:#x}", "unsupported modifier (:#)"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${NULL:?}", "NULL: is not allowed to be empty"),
    ("${UNSET:?custom $X msg}", "UNSET: custom x msg"),
    ("${str/a", "missing '/'"),
    ("${str#\\x}", "invalid escape"),
])
def test_errors(word, reason):
    with pytest.raises(OCIError) as e:
        expand(word, ENV)
    assert reason in str(e.value)
    assert str(e.value).startswith("failed to process ")


@pytest.mark.parametrize("text,want", [
    ("a b  c", ["a", "b", "c"]),
    ("x${SP}y", ["xa", "b", "y"]),
    ('x"${SP}"y', ["xa  b y"]),
    ("'a b' c", ["a b", "c"]),
    ("a\\ b c", ["a b", "c"]),
    ("", []),
    ("${UNSET}", []),
    ('""', [""]),
    ("80/tcp ${X}", ["80/tcp", "x"]),
])
def test_expand_words(text, want):
    assert expand_words(text, ENV) == want


def test_raw_words_keep_quotes_and_variables():
    assert raw_words("COPY <<'EOF' \"a b\" $X") == ["COPY", "<<'EOF'", '"a b"', "$X"]
    assert unquote("'E'\"O\"F") == "EOF"


def test_expand_is_pure():
    env = {"A": "1"}
    expand("${A:-2}${B:-3}", env)
    assert env == {"A": "1"}
