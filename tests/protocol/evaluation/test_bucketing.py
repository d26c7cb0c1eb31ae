"""Bucketing against LaunchDarkly's published test vectors."""

from __future__ import annotations

import pytest

from protocol.evaluation.bucketing import bucket, flag_prefix

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
