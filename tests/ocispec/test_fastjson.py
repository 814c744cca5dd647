"""ocispec.fastjson against the json module it stands in for."""

import json

import pytest

from ocispec import fastjson

DOCS = [
    {}, [], "", 0, -1, 1.5, 1e100, True, False, None, "ünïcødé \u2028 \"quoted\" \\ \n\t",
    {"a": [1, 2, {"b": None, "c": [True, False]}], "d": {"e": {}}, "f": []},
    {"ociVersion": "1.2.0", "process": {"args": ["sh", "-c", "echo $HOME"], "env": ["A=b"]},
     "linux": {"resources": {"memory": {"limit": 2 ** 63 - 1}}, "uidMappings": [{"hostID": 0}]}},
]


@pytest.mark.parametrize("doc", DOCS)
def test_round_trip_and_output_match_json(doc):
    assert fastjson.loads(json.dumps(doc)) == doc
    assert fastjson.loads(json.dumps(doc).encode()) == doc
    assert fastjson.dumps(doc) == json.dumps(doc, separators=(",", ":"))
    assert fastjson.dumps(doc, indent=2) == json.dumps(doc, indent=2)
    assert fastjson.dumps(doc, indent="\t") == json.dumps(doc, indent="\t")


@pytest.mark.parametrize("bad", ['{"a": 1, ', "", "   ", "[1,]", '{"a" 1}', "nul", "1 2", "{}x"])
def test_invalid_json_raises_json_decode_error(bad):
    with pytest.raises(json.JSONDecodeError) as e:
        fastjson.loads(bad)
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(bad)
    assert e.value.pos == want.value.pos


def test_whitespace_around_the_document():
    assert fastjson.loads(' \n\t{"a": 1}\r\n ') == {"a": 1}


def test_not_serializable():
    with pytest.raises(TypeError):
        fastjson.dumps({"a": object()})
