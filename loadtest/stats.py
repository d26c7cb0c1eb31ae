"""Summary statistics of latency samples: nearest-rank percentiles, no numpy needed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["percentile", "summarize"]

PERCENTILES = (50, 90, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (``p`` in 0..100); NaN if empty."""
    if not sorted_values:
        return math.nan
    if p <= 0:
        return sorted_values[0]
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(values: Iterable[float], *, scale: float = 1.0) -> dict[str, float | int]:
    """``count, min, p50, p90, p99, max, mean`` of ``values`` multiplied by ``scale``.

    Empty input gives ``count: 0`` and NaN elsewhere (JSON-encoded as null by the report).
    """
    ordered = sorted(v * scale for v in values)
    out: dict[str, float | int] = {"count": len(ordered)}
    if not ordered:
        for name in ("min", "p50", "p90", "p99", "max", "mean"):
            out[name] = math.nan
        return out
    out["min"] = ordered[0]
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(ordered, p)
    out["max"] = ordered[-1]
    out["mean"] = math.fsum(ordered) / len(ordered)
    return out
