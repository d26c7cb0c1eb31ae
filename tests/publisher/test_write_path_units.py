"""Pure units of the write path: per-key locks, remembered items, the principal cache."""

from __future__ import annotations

import asyncio
import time

import pytest

from publisher.auth import Principal
from publisher.keylocks import KeyLocks
from publisher.recent import RecentItem, RecentItems
from publisher.tokencache import PrincipalCache

pytestmark = pytest.mark.unit


async def test_key_locks_are_fifo_per_key_and_independent_across_keys() -> None:
    locks = KeyLocks()
    order: list[str] = []

    async def task(key: str, name: str, hold: float) -> None:
        await locks.acquire(key)
        try:
            order.append(f"{name}+")
            await asyncio.sleep(hold)
            order.append(f"{name}-")
        finally:
            locks.release(key)

    await asyncio.gather(
        task("a", "a1", 0.02), task("a", "a2", 0), task("b", "b1", 0), task("a", "a3", 0)
    )
    a_events = [e for e in order if e.startswith("a")]
    assert a_events == ["a1+", "a1-", "a2+", "a2-", "a3+", "a3-"]
    assert order.index("b1+") < order.index("a1-")  # b did not wait for a
    assert len(locks) == 0  # nothing left once nobody holds or waits


async def test_a_cancelled_waiter_does_not_keep_the_lock() -> None:
    locks = KeyLocks()
    await locks.acquire("k")
    waiter = asyncio.ensure_future(locks.acquire("k"))
    await asyncio.sleep(0)
    waiter.cancel()
    locks.release("k")
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.wait_for(locks.acquire("k"), 1)  # free again
    locks.release("k")
    assert len(locks) == 0


def test_recent_items_are_bounded_lru() -> None:
    recent = RecentItems(capacity=2)
    for n in range(3):
        recent.put(("e", "flag", f"k{n}"), RecentItem(1, b"{}", {}))
    assert recent.get(("e", "flag", "k0")) is None and len(recent) == 2
    assert recent.get(("e", "flag", "k1")) is not None
    recent.put(("e", "flag", "k3"), RecentItem(1, b"{}", {}))
    assert recent.get(("e", "flag", "k1")) is not None  # used recently, kept
    assert recent.get(("e", "flag", "k2")) is None
    recent.forget(("e", "flag", "k1"))
    assert recent.get(("e", "flag", "k1")) is None
    off = RecentItems(capacity=0)
    off.put(("e", "flag", "k"), RecentItem(1, b"{}", {}))
    assert off.get(("e", "flag", "k")) is None


def _principal(token_id: str) -> Principal:
    return Principal("ci", token_id, frozenset({"write"}), None)


def test_principal_cache_expires_revokes_and_is_bounded() -> None:
    # A ttl far beyond the test for what must still be remembered (a 50 ms one could lapse
    # between a put and its get on a loaded machine); a 50 ms cache of its own for expiry.
    cache = PrincipalCache(ttl=60, max_entries=2)
    cache.put("h1", _principal("t1"))
    cache.put("h1b", _principal("t1"))
    assert cache.get("h1") == _principal("t1")
    cache.revoke("t1")
    assert cache.get("h1") is None and cache.get("h1b") is None
    short = PrincipalCache(ttl=0.05)
    short.put("h2", _principal("t2"))
    time.sleep(0.06)
    assert short.get("h2") is None  # expired after ttl
    for n in range(3):
        cache.put(f"x{n}", _principal(f"t{n}"))
    assert cache.get("x0") is None and cache.get("x2") is not None
    disabled = PrincipalCache(ttl=0)
    disabled.put("h", _principal("t"))
    assert disabled.get("h") is None
