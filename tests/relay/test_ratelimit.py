"""relay.ratelimit: token buckets by credential, with the clock passed in."""

from __future__ import annotations

import pytest

from relay.ratelimit import TokenBuckets

pytestmark = pytest.mark.unit


def test_burst_then_refill_at_the_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert buckets.take("a", 0.25) == pytest.approx(0.25)  # refused: still waiting
    assert buckets.take("a", 0.5) == 0.0
    assert buckets.take("b", 0.5) == 0.0  # every key has its own bucket
    assert buckets.take("a", 100.0) == 0.0  # refills up to the burst, not beyond
    assert [buckets.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_idle_full_buckets_are_pruned_only_when_many() -> None:
    buckets = TokenBuckets(rate=1.0, burst=2, prune_above=3)
    for key in "abc":
        buckets.take(key, 0.0)
    assert len(buckets) == 3
    buckets.take("c", 1.5)
    buckets.take("d", 1.5)  # a and b idle for 1.5 s < 2 s (burst / rate): kept
    assert len(buckets) == 4
    buckets.take("e", 3.0)  # now a and b are full again: dropped; c, d are recent
    assert len(buckets) == 3
    assert buckets.take("a", 3.0) == 0.0  # a dropped bucket starts full


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBuckets(rate=0, burst=1)
    with pytest.raises(ValueError, match="burst"):
        TokenBuckets(rate=1, burst=0)
