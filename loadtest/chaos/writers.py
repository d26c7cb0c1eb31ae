"""The writers: If-Match writes to the flags of every environment for the whole fault phase,
logging every acknowledged write with the version the publisher gave it.

Rules:
- Each writer is a task with its own HTTP session and random stream (seeded from the run's
  seed); it picks a flag at random and writes it with ``If-Match: <version it believes is
  current>``: a PATCH toggling ``on`` (most), a PUT of the whole flag with new variation
  values, a DELETE (a versioned tombstone), or, for a deleted flag, a PUT that recreates it.
- A 200/201/202 is *acknowledged*: logged as ``AckedWrite`` with the version in the answer,
  and the writer remembers that version. A 412 tells the current version
  (``currentVersion``), which the writer takes for its next try. Anything else (timeout,
  refused connection, 503, 409) is not acknowledged, so it promises nothing; the writer
  moves on to the other publisher.
- Writers pace themselves to ``rate`` writes per second in total, so the load is the same
  whatever the faults do to latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["AckedWrite", "WriterPool", "flag_body"]

ItemId = tuple[str, str]  # (env, flag key)


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """A write the publisher acknowledged (200, 201 or 202) with the version it assigned."""

    sent: float  # time.monotonic() when the request was sent
    acked: float
    writer: int
    publisher: int
    env: str
    key: str
    version: int
    status: int
    deleted: bool


def flag_body(key: str, salt: int, pad: int) -> dict[str, Any]:
    """A valid flag whose variations carry ``pad`` characters (bigger events, fuller buffers)."""
    filler = f"{salt:08x}" * (pad // 8 + 1)
    return {
        "key": key,
        "on": salt % 2 == 0,
        "variations": [f"a-{filler[:pad]}", f"b-{filler[:pad]}"],
        "fallthrough": {"variation": 0},
        "offVariation": 1,
    }


@dataclass
class WriterPool:
    """``count`` writers against ``publishers`` (URLs), for ``items`` known at ``versions``."""

    publishers: list[str]
    token: str
    items: list[ItemId]
    versions: dict[ItemId, int]
    deleted: set[ItemId]
    seed: int
    count: int = 8
    rate: float = 40.0
    pad: int = 600
    timeout: float = 10.0
    acked: list[AckedWrite] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [asyncio.create_task(self._writer(i)) for i in range(self.count)]

    def stop_soon(self) -> None:
        """No new write starts after this (writes under way finish)."""
        self._stop.set()

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _writer(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        interval = self.count / self.rate
        target = rng.randrange(len(self.publishers))
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        headers = {"Authorization": f"Bearer {self.token}", "X-Change-Comment": "chaos"}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            next_at = time.monotonic()
            while not self._stop.is_set():
                next_at += interval * rng.uniform(0.5, 1.5)
                delay = next_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)
                    if self._stop.is_set():
                        break
                else:
                    next_at = time.monotonic()  # late (a slow answer): do not burst to catch up
                item = rng.choice(self.items)
                ok = await self._write(session, rng, index, target, item)
                if not ok:
                    target = (target + 1) % len(self.publishers)

    async def _write(
        self,
        session: aiohttp.ClientSession,
        rng: random.Random,
        index: int,
        target: int,
        item: ItemId,
    ) -> bool:
        """One write; False if the publisher did not answer usefully (try the other one)."""
        env, key = item
        version = self.versions.get(item, 0)
        url = f"{self.publishers[target]}/api/v1/environments/{env}/flags/{key}"
        headers = {"If-Match": str(version)}
        roll = rng.random()
        if item in self.deleted:
            method, body = "PUT", flag_body(key, rng.getrandbits(31), self.pad)
        elif roll < 0.75:
            method, body = "PATCH", {"on": rng.random() < 0.5}
        elif roll < 0.95:
            method, body = "PUT", flag_body(key, rng.getrandbits(31), self.pad)
        else:
            method, body = "DELETE", None
        sent = time.monotonic()
        try:
            async with session.request(method, url, json=body, headers=headers) as resp:
                status = resp.status
                payload = await resp.json(content_type=None) if status < 500 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.outcomes[f"no answer ({type(exc).__name__})"] += 1
            return False
        acked = time.monotonic()
        self.outcomes[str(status)] += 1
        if status in (200, 201, 202) and isinstance(payload, dict):
            stored = payload.get("item", payload) if status == 202 else payload
            new_version = int(stored["version"])
            deleted = bool(stored.get("deleted"))
            self.acked.append(
                AckedWrite(sent, acked, index, target, env, key, new_version, status, deleted)
            )
            self.versions[item] = max(self.versions.get(item, 0), new_version)
            (self.deleted.add if deleted else self.deleted.discard)(item)
            return True
        if status == 412 and isinstance(payload, dict) and "currentVersion" in payload:
            self.versions[item] = int(payload["currentVersion"])
            return True
        if status == 404 and method == "PATCH":
            self.deleted.add(item)  # deleted by another writer: recreate it next time
            return True
        return status < 500 and status not in (409, 429)
