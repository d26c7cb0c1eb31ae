"""Nearest-rank percentiles and summaries."""

from __future__ import annotations

import math

import pytest

from loadtest.stats import percentile, summarize

pytestmark = pytest.mark.unit


def test_percentiles_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def test_summarize_scales_and_handles_empty() -> None:
    s = summarize([0.003, 0.001, 0.002], scale=1000)
    assert s["count"] == 3
    assert s["min"] == pytest.approx(1)
    assert s["p50"] == pytest.approx(2)
    assert s["max"] == pytest.approx(3)
    assert s["mean"] == pytest.approx(2)
    empty = summarize([])
    assert empty["count"] == 0
    assert math.isnan(float(empty["p99"]))
