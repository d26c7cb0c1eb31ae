"""protocol.jsoncodec gives exactly what the standard library's json gives, only faster."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import jsoncodec

# Every JSON value, with integers far beyond 64 bits and floats of every exponent.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 and 1.0 differ; -0.0 and 0.0 differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(json_values, st.sampled_from([{}, {"indent": 1}, {"ensure_ascii": False}]))
def test_loads_decodes_what_json_decodes(value: Any, style: dict[str, Any]) -> None:
    raw = json.dumps(value, **style).encode()
    assert _same(jsoncodec.loads(raw), json.loads(raw))


@given(json_values)
def test_dumps_reads_back_as_the_same_value(value: Any) -> None:
    out = jsoncodec.dumps(value)
    assert _same(json.loads(out), value)
    assert _same(json.loads(jsoncodec.dumps_strict(value)), value)


def test_dumps_is_compact_utf8_in_the_given_key_order() -> None:
    assert jsoncodec.dumps({"z": 1, "a": ["é", None, 2.5]}) == '{"z":1,"a":["é",null,2.5]}'.encode()
    assert jsoncodec.dumps_strict({"z": [1]}) == b'{"z":[1]}'


def test_integers_beyond_64_bits_stay_exact() -> None:
    big = 123456789012345678901234567890
    assert jsoncodec.loads(b'{"a": %d}' % big) == {"a": big}
    assert jsoncodec.dumps({"a": big}) == b'{"a":%d}' % big
    assert jsoncodec.dumps_strict([big, None]) == b"[%d,null]" % big


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": NaN}',
        b"[Infinity, -Infinity]",
        b'"\\ud800"',
        b"[1e400]",
        "[1]".encode("utf-16"),
        b"\xef\xbb\xbf[1]",  # a UTF-8 byte order mark
    ],
)
def test_what_orjson_refuses_json_still_decodes(raw: bytes) -> None:
    assert repr(jsoncodec.loads(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a": 1,}', b"[1] x", b"\xff"])
def test_malformed_documents_raise_what_json_raises(raw: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        jsoncodec.loads(raw)
    with pytest.raises(ValueError) as theirs:
        json.loads(raw)
    assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))


def test_dumps_strict_refuses_nan_and_infinities() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            jsoncodec.dumps_strict({"x": [1, bad]})


def test_what_is_not_json_raises_type_error() -> None:
    with pytest.raises(TypeError):
        jsoncodec.dumps({"x": object()})
    with pytest.raises(TypeError):
        jsoncodec.dumps_strict({"x": object()})


def test_non_string_keys_are_encoded_as_json_does() -> None:
    assert jsoncodec.dumps({1: "a"}) == b'{"1":"a"}'
