"""Delivery bookkeeping: which change was accepted when, which stream received it when.

Receipts are recorded raw (change id, stream id, receive time) and turned into delays only
at the end, because a stream can receive a change before the driver has learnt its version
from the publisher's answer. All times are ``time.perf_counter()`` seconds of this process:
driver and swarm run in the same process, so no clock skew enters a delay.

Delays are measured from the moment the write was **sent** (request written / record handed
to the producer). The acknowledgement ("accepted": the publisher's 200, the broker's ack)
is kept too, but it is no reference point: the publisher answers after Kafka acknowledged,
and relays often deliver before that answer is back, which would give negative delays.

Decoding a payload is cached by its text: a broadcast is the same bytes for every stream, so
each distinct payload is parsed once, not once per stream.
"""

from __future__ import annotations

import json
import math
from array import array
from dataclasses import dataclass
from typing import Any

__all__ = ["ChangeStats", "DeliveryRecorder"]

_ChangeKey = tuple[str, str, int]  # env, flag key, version


@dataclass(frozen=True, slots=True)
class ChangeStats:
    """One change: when it was sent/accepted and when the first/last stream received it."""

    env: str
    key: str
    version: int
    sent: float
    accepted: float
    receivers: int
    first: float
    last: float


class DeliveryRecorder:
    """Shared by the driver (``accepted``) and every stream of the swarm (``on_event``)."""

    def __init__(self, *, cache_limit: int = 4096) -> None:
        self._ids: dict[_ChangeKey, int] = {}
        self._keys: list[_ChangeKey] = []
        self._sent: dict[int, float] = {}
        self._accepted: dict[int, float] = {}
        self.receipt_change = array("i")
        self.receipt_stream = array("i")
        self.receipt_time = array("d")
        self.puts = 0
        self.patches = 0
        self.deletes = 0
        self.other_events = 0
        self.decode_errors = 0
        # Highest version of ``watch`` (env, key) seen per stream id, from puts and patches.
        self.watch: tuple[str, str] | None = None
        self.watch_version: dict[int, int] = {}
        self.watch_time: dict[int, float] = {}
        self._cache: dict[str, Any] = {}
        self._cache_limit = cache_limit

    # --- driver side ------------------------------------------------------------------
    def _id(self, key: _ChangeKey) -> int:
        cid = self._ids.get(key)
        if cid is None:
            cid = self._ids[key] = len(self._keys)
            self._keys.append(key)
        return cid

    def accepted(self, env: str, key: str, version: int, *, sent: float, accepted: float) -> None:
        """The driver's write of ``env/key`` became ``version``: sent and acknowledged at."""
        cid = self._id((env, key, version))
        self._sent[cid] = sent
        self._accepted[cid] = accepted

    def final_version(self, env: str, key: str) -> int:
        """The highest version the driver has written of ``env/key`` (0 if none)."""
        return max(
            (self._keys[cid][2] for cid in self._accepted if self._keys[cid][:2] == (env, key)),
            default=0,
        )

    @property
    def accepted_count(self) -> int:
        return len(self._accepted)

    # --- swarm side -------------------------------------------------------------------
    def _decode(self, data: str) -> Any:
        cached = self._cache.get(data)
        if cached is None:
            if len(self._cache) >= self._cache_limit:
                self._cache.clear()
            try:
                cached = json.loads(data)
            except ValueError:
                cached = False
            self._cache[data] = cached
        return cached

    def on_event(self, stream: int, env: str, event: str, data: str, now: float) -> None:
        """A stream of ``env`` received an SSE event (LaunchDarkly ``put``/``patch``/...)."""
        if event == "patch":
            self.patches += 1
            obj = self._decode(data)
            try:
                path: str = obj["path"]
                version = int(obj["data"]["version"])
            except (TypeError, KeyError, ValueError):
                self.decode_errors += 1
                return
            key = path.rpartition("/")[2]
            self._receipt(stream, (env, key, version), now)
        elif event == "put":
            self.puts += 1
            if self.watch is not None and self.watch[0] == env:
                obj = self._decode(data)
                try:
                    flag = obj["data"]["flags"].get(self.watch[1])
                except (TypeError, KeyError, AttributeError):
                    self.decode_errors += 1
                    return
                if flag is not None:
                    self._watch(stream, int(flag.get("version", 0)), now)
        elif event == "delete":
            self.deletes += 1
        else:
            self.other_events += 1

    def _receipt(self, stream: int, key: _ChangeKey, now: float) -> None:
        self.receipt_change.append(self._id(key))
        self.receipt_stream.append(stream)
        self.receipt_time.append(now)
        if self.watch is not None and (key[0], key[1]) == self.watch:
            self._watch(stream, key[2], now)

    def _watch(self, stream: int, version: int, now: float) -> None:
        if version > self.watch_version.get(stream, 0):
            self.watch_version[stream] = version
            self.watch_time[stream] = now

    # --- results ----------------------------------------------------------------------
    def changes(self) -> list[ChangeStats]:
        """Every accepted change, with first/last receipt (NaN if nobody received it)."""
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        count: dict[int, int] = {}
        for cid, t in zip(self.receipt_change, self.receipt_time, strict=True):
            if t < first.get(cid, math.inf):
                first[cid] = t
            if t > last.get(cid, -math.inf):
                last[cid] = t
            count[cid] = count.get(cid, 0) + 1
        out = []
        for cid, acc in sorted(self._accepted.items(), key=lambda kv: kv[1]):
            env, key, version = self._keys[cid]
            out.append(
                ChangeStats(
                    env=env,
                    key=key,
                    version=version,
                    sent=self._sent[cid],
                    accepted=acc,
                    receivers=count.get(cid, 0),
                    first=first.get(cid, math.nan),
                    last=last.get(cid, math.nan),
                )
            )
        return out

    def delays(self, *, since: float = -math.inf, until: float = math.inf) -> list[float]:
        """Seconds from sending the write to receipt, for every receipt of an accepted change.

        ``since``/``until`` select changes by send time (for one step of a ramp).
        """
        sent = self._sent
        out = []
        for cid, t in zip(self.receipt_change, self.receipt_time, strict=True):
            a = sent.get(cid)
            if a is not None and since <= a < until:
                out.append(t - a)
        return out

    def write_latencies(self) -> list[float]:
        """Seconds from sending each write to its acknowledgement."""
        return [self._accepted[c] - self._sent[c] for c in self._accepted]

    def lagging_streams(self, streams_by_env: dict[str, list[int]]) -> int:
        """Streams that do not hold the last accepted version of every flag written in
        their environment (0 = converged). Versions a relay coalesced away are not missed:
        only the final one counts, as for a real SDK."""
        final: dict[tuple[str, str], int] = {}
        for cid in self._accepted:
            env, key, version = self._keys[cid]
            if version > final.get((env, key), 0):
                final[(env, key)] = version
        held: dict[tuple[int, str], int] = {}
        for cid, stream in zip(self.receipt_change, self.receipt_stream, strict=True):
            env, key, version = self._keys[cid]
            if version > held.get((stream, key), 0):
                held[(stream, key)] = version
        lagging = 0
        for env, streams in streams_by_env.items():
            wanted = [(k, v) for (e, k), v in final.items() if e == env]
            for s in streams:
                if any(held.get((s, k), 0) < v for k, v in wanted):
                    lagging += 1
        return lagging

    def receipts_of_unknown_changes(self) -> int:
        """Receipts of versions the driver never wrote (seed data, other writers)."""
        return sum(1 for cid in self.receipt_change if cid not in self._accepted)
