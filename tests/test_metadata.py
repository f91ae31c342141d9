"""twilbert.metadata: any decode, type or schema problem of a JSON file is the caller's error, in one
line naming the file; never a UnicodeDecodeError, TypeError or KeyError."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twilbert.config import check
from twilbert.metadata import MetadataError, fields, parse_json, read_json, validate


class OwnError(RuntimeError):
    pass


@dataclass(frozen=True)
class Shape:
    n: int
    name: str = "x"

    def __post_init__(self):
        check(self.n > 0, "n", "must be > 0")


def one_line(exc: BaseException, path) -> str:
    message = str(exc)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\xff\xfe{}", "not UTF-8 text (byte 0xff at offset 0)"),
        (b"", "empty"),
        (b'{"a": 1', "not valid JSON (line 1 column"),
        (b"123", "expected a JSON object, got integer 123"),
        (b"[1, 2]", "expected a JSON object, got array"),
        (b'"text"', "expected a JSON object, got string"),
        (b"null", "expected a JSON object, got null"),
        (b"true", "expected a JSON object, got boolean"),
        (b'{"a": NaN}', "NaN is not allowed here"),
        (b'{"a": -Infinity}', "-Infinity is not allowed here"),
        (b"[" * 100000, "recursion"),
    ],
)
def test_decode_and_type_problems_are_one_line(tmp_path, raw, fragment):
    path = tmp_path / "meta.json"
    path.write_bytes(raw)
    with pytest.raises(OwnError) as info:
        read_json(path, error=OwnError)
    assert fragment in one_line(info.value, path).lower() or fragment in str(info.value)


def test_nan_when_allowed_and_other_kinds(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"a": NaN}')
    assert math.isnan(read_json(path, allow_nan=True)["a"])
    path.write_text("[1, 2]")
    assert read_json(path, kind=list) == [1, 2]


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(MetadataError, match=r"absent.json: cannot read \(No such file or directory\)"):
        read_json(tmp_path / "absent.json")
    with pytest.raises(MetadataError, match="cannot read"):
        read_json(tmp_path)


def test_dataclass_schema(tmp_path):
    path = tmp_path / "shape.json"
    path.write_text('{"n": 2}')
    assert read_json(path, schema=Shape) == {"n": 2}
    for text, fragment in [('{"n": 0}', "n: must be > 0"), ('{"name": "y"}', "n: required key is missing"),
                           ('{"n": "2"}', "n: expected int"), ('{"n": 2, "m": 1}', "m: unknown key")]:
        path.write_text(text)
        with pytest.raises(OwnError) as info:
            read_json(path, schema=Shape, error=OwnError)
        assert fragment in one_line(info.value, path)


def test_fields_schema():
    schema = fields(required={"a": int, "b": (str, None)}, optional={"c": float, "d": bool})
    validate({"a": 1, "b": None, "c": 2, "d": True, "other": []}, "w", schema)  # an int is a float; extra keys allowed
    for data, fragment in [({"b": "x"}, "a: required key is missing"), ({"a": True, "b": "x"}, "a: expected an integer, got boolean"),
                           ({"a": 1, "b": 3}, "b: expected a string or null, got integer"), ({"a": 1, "b": "", "d": 1}, "d: expected true/false")]:
        with pytest.raises(MetadataError, match=fragment):
            validate(data, "w", schema)
    with pytest.raises(MetadataError, match="z: unknown key"):
        validate({"z": 1}, "w", fields(optional={"a": int}, extra=False))


def test_a_callable_schema_raising_anything_usual_is_one_line():
    def schema(d):
        return d["x"]["y"] + 1

    for data in ({}, {"x": 1}, {"x": {"y": "s"}}, {"x": []}):
        with pytest.raises(OwnError) as info:
            parse_json(json.dumps(data), "where", schema=schema, error=OwnError)
        one_line(info.value, "where")


def test_non_text_input():
    with pytest.raises(MetadataError, match="expected JSON text, got NoneType"):
        parse_json(None, "w")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode),
                     st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                                  lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                                  max_leaves=8).map(lambda v: json.dumps(v).encode())))
def test_any_bytes_give_a_dict_or_the_callers_error(raw):
    schema = fields(optional={"a": int, "b": str})
    try:
        data = parse_json(raw, "f.json", schema=schema, error=OwnError)
    except OwnError as exc:
        one_line(exc, "f.json")
    else:
        assert isinstance(data, dict)
