import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import EnvelopeError, ValidationError
from protocol.keys import (
    is_valid_key,
    murmur2,
    parse_record_key,
    partition_for,
    record_key,
    validate_key,
)

pytestmark = pytest.mark.unit

# Bounded so the whole protocol suite stays fast on a shared machine; raise locally to dig.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
keys = st.text(alphabet=KEY_ALPHABET, min_size=1, max_size=256)
kinds = st.sampled_from(["flag", "segment", "env"])


@pytest.mark.parametrize("key", ["a", "my-flag", "A.b_c-9", "x" * 256])
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key
    assert is_valid_key(key)


@pytest.mark.parametrize("key", ["", "x" * 257, "a/b", "a b", "é", "a\n", "flag!"])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_key(key, path="rules[0].clauses[1].values[2]")
    assert exc.value.path == "rules[0].clauses[1].values[2]"
    assert not is_valid_key(key)


@pytest.mark.parametrize("key", [None, 1, b"abc", ["a"]])
def test_non_string_key(key: object) -> None:
    with pytest.raises(ValidationError, match=r"^key: must be a string$"):
        validate_key(key)
    assert not is_valid_key(key)


def test_record_key_format() -> None:
    assert record_key("prod", "flag", "my-flag") == b"prod/flag/my-flag"
    assert parse_record_key(b"prod/segment/s1") == ("prod", "segment", "s1")


@FAST
@given(env=keys, kind=kinds, key=keys)
def test_record_key_round_trip(env: str, kind: str, key: str) -> None:
    assert parse_record_key(record_key(env, kind, key)) == (env, kind, key)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"prod/flag",
        b"prod/flag/a/b",
        b"prod/thing/a",
        b"/flag/a",
        b"prod/flag/",
        b"\xff/flag/a",
    ],
)
def test_malformed_record_keys(raw: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_record_key(raw)


def test_record_key_none_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError):
        parse_record_key(None)  # type: ignore[arg-type]


@FAST
@given(st.binary(max_size=80))
def test_parse_record_key_raises_only_envelope_error(raw: bytes) -> None:
    try:
        env, kind, key = parse_record_key(raw)
    except EnvelopeError:
        return
    assert record_key(env, kind, key) == raw


# Reference values from Apache Kafka's clients UtilsTest.testMurmur2 (Java int results).
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS)
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@FAST
@given(st.binary(max_size=64))
def test_murmur2_matches_aiokafka(data: bytes) -> None:
    # aiokafka (a port of kafka-python) returns the same hash as an unsigned int.
    assert murmur2(data) & 0xFFFFFFFF == aiokafka_murmur2(data)


def test_partition_for_known_values() -> None:
    # (murmur2 & 0x7fffffff) % n, computed from the Kafka vectors above.
    assert partition_for("21", 6) == (-973932308 & 0x7FFFFFFF) % 6
    assert partition_for("foobar", 12) == (-790332482 & 0x7FFFFFFF) % 12
    assert partition_for("anything", 1) == 0


@FAST
@given(env=keys, partitions=st.integers(min_value=1, max_value=1000))
def test_partition_in_range_and_stable(env: str, partitions: int) -> None:
    p = partition_for(env, partitions)
    assert 0 <= p < partitions
    assert p == partition_for(env, partitions)


def test_partition_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="partitions"):
        partition_for("prod", 0)
