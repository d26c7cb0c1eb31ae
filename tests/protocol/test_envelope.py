import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.envelope import SCHEMA_VERSION, Envelope, decode_envelope, encode_envelope
from protocol.errors import EnvelopeError

pytestmark = pytest.mark.unit

# Bounded so the whole protocol suite stays fast on a shared machine; raise locally to dig.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

envelopes = st.builds(
    Envelope,
    kind=st.sampled_from(["flag", "segment", "env"]),
    env=st.text(max_size=40),
    key=st.text(max_size=40),
    version=st.integers(min_value=0, max_value=2**63 - 1),
    published_ms=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    actor=st.text(max_size=40),
    item=st.binary(max_size=200),
    deleted=st.booleans(),
)


def sample() -> Envelope:
    return Envelope(
        kind="flag",
        env="prod",
        key="my-flag",
        version=3,
        published_ms=1_763_773_200_000,
        actor="alice@example.com",
        item=b'{"key":"my-flag","version":3}',
    )


def fields(**override: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "s": SCHEMA_VERSION,
        "kind": "flag",
        "env": "prod",
        "key": "f",
        "v": 1,
        "ts": 5,
        "actor": "a",
        "item": b"{}",
        "del": False,
    }
    base.update(override)
    return {k: v for k, v in base.items() if v is not ...}


def pack(obj: object) -> bytes:
    data = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def test_round_trip_sample() -> None:
    e = sample()
    assert decode_envelope(encode_envelope(e)) == e
    assert decode_envelope(encode_envelope(e)).deleted is False


def test_wire_format_is_a_documented_msgpack_map() -> None:
    obj = msgpack.unpackb(encode_envelope(sample()), raw=False)
    assert obj == {
        "s": 1,
        "kind": "flag",
        "env": "prod",
        "key": "my-flag",
        "v": 3,
        "ts": 1_763_773_200_000,
        "actor": "alice@example.com",
        "item": b'{"key":"my-flag","version":3}',
        "del": False,
    }


@FAST
@given(envelopes)
def test_round_trip(e: Envelope) -> None:
    assert decode_envelope(encode_envelope(e)) == e


def test_extra_fields_are_ignored() -> None:
    e = decode_envelope(pack(fields(future="x")))
    assert e.key == "f"


@pytest.mark.parametrize(
    "data",
    [
        None,
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\x92\x01",  # truncated array
        pack([1, 2]),
        pack("text"),
        pack({1: 2}),  # non-string map key
        pack(fields()) + b"\x00",  # trailing data
        pack(fields(s=2)),
        pack(fields(s=True)),
        pack(fields(s=...)),
        pack(fields(kind="user")),
        pack(fields(kind=1)),
        pack(fields(v=-1)),
        pack(fields(v=True)),
        pack(fields(v=1.0)),
        pack(fields(env=b"prod")),
        pack(fields(key=...)),
        pack(fields(ts="now")),
        pack(fields(actor=None)),
        pack(fields(item="{}")),
        pack(fields(**{"del": 0})),
        b"\xa2\xff\xfe",  # invalid UTF-8 in a str
    ],
)
def test_malformed_records_raise_envelope_error(data: bytes | None) -> None:
    with pytest.raises(EnvelopeError):
        decode_envelope(data)


def test_oversized_record_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="too large"):
        decode_envelope(b"\x00" * (64 * 1024 * 1024 + 1))


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_envelope_error(data: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        decode_envelope(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@FAST
@given(st.dictionaries(st.sampled_from(list(fields())), msgpack_values))
def test_arbitrary_maps_raise_only_envelope_error(obj: dict[str, Any]) -> None:
    try:
        e = decode_envelope(pack(obj))
    except EnvelopeError:
        return
    assert e == decode_envelope(encode_envelope(e))
