"""Per-credential token buckets: how many requests a credential may make per second.

Rules:

1. Each key (a credential's hash, never the secret) has a bucket of ``burst`` tokens that
   refills at ``rate`` tokens per second, up to ``burst``. A request takes one token; with
   less than one token left it is refused and told how long until one is there.
2. The clock is passed in (``take(key, now)``), so the arithmetic is tested without sleeping.
3. Only authenticated credentials get a bucket (the caller checks credentials first), so the
   number of buckets is bounded by the credentials that exist; full buckets (idle for
   ``burst / rate`` seconds) are dropped when there are more than ``prune_above``, so a
   rotated-away credential costs nothing for long.
4. A bucket is per process: with N relay workers (or N relays) behind one address, a
   credential may get up to N times ``rate`` in total. A shared credential (a client-side
   id used by every browser of an environment) has one bucket for all its users.
"""

from __future__ import annotations

__all__ = ["TokenBuckets"]


class TokenBuckets:
    """Token buckets by key (rules above). Not thread-safe; one per event loop."""

    __slots__ = ("_buckets", "_idle", "burst", "prune_above", "rate")

    def __init__(self, rate: float, burst: int, *, prune_above: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.prune_above = prune_above
        self._idle = self.burst / rate  # seconds after which any bucket is full again
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take one token for ``key`` at time ``now`` (seconds, monotonic).

        Returns 0.0 if the request may go ahead, else the seconds until a token is available.
        """
        held = self._buckets.get(key)
        if held is None:
            if len(self._buckets) >= self.prune_above:
                self._prune(now)
            tokens = self.burst
        else:
            tokens, at = held
            tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        idle = self._idle
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < idle}
