"""Bucketing against LaunchDarkly's published test vectors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.evaluation.bucketing import bucket, digest_cut, flag_prefix, prefix_hasher, utf8

pytestmark = pytest.mark.unit

SALTY = flag_prefix("hashKey", "saltyA", None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("userKeyA", 0.42157587),
        ("userKeyB", 0.6708485),
        ("userKeyC", 0.10343106),
        (33333, 0.54771423),
        ("33333", 0.54771423),
        (33333.0, 0.54771423),  # a whole float buckets as the integer (Go, JS)
    ],
)
def test_published_vectors(value: object, expected: float) -> None:
    assert bucket(SALTY, value) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(
    ("key", "expected"),
    [("userKeyA", 0.09801207), ("userKeyB", 0.14483777), ("userKeyC", 0.9242641)],
)
def test_seed_replaces_key_and_salt(key: str, expected: float) -> None:
    assert flag_prefix("hashKey", "saltyA", 61) == "61."
    assert bucket(flag_prefix("hashKey", "saltyA", 61), key) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(
    "value", [999.999, True, False, None, [1], {"a": 1}, 2.0**60, float("nan")]
)
def test_unbucketable_values_bucket_at_zero(value: object) -> None:
    assert bucket(SALTY, value) == 0.0


def test_lone_surrogate_is_hashed_not_raised() -> None:
    assert 0.0 <= bucket(SALTY, "\ud800") < 1.0


@given(
    st.text(max_size=40),
    st.integers(min_value=0, max_value=100000).map(lambda w: w / 100000.0),
)
@settings(max_examples=500, deadline=None)
def test_digest_cut_orders_digests_as_buckets(key: str, threshold: float) -> None:
    # The rollout fast path compares digests with cuts instead of floats: it must agree.
    hasher = prefix_hasher(SALTY).copy()
    hasher.update(utf8(key))
    assert (hasher.digest() >= digest_cut(threshold)) == (bucket(SALTY, key) >= threshold)


def test_digest_cut_edges() -> None:
    assert digest_cut(0.0) == b"\x00" * 8  # every bucket reaches 0
    # The very top digests bucket at 1.0 (float rounding, as in LaunchDarkly's SDKs).
    assert digest_cut(1.0) == (((1 << 60) - 2**6) << 4).to_bytes(8, "big")
    never = digest_cut(1.5)  # weights summing past 100000: no bucket reaches it
    assert never > b"\xff" * 20
    assert digest_cut(float("nan")) == never
    assert utf8("\ud800") == "\ud800".encode("utf-8", "surrogatepass")
