"""Per-key mutual exclusion for the writes of one publisher instance.

Rules:

1. Writes of one item (environment, kind, key) on one instance run one after the other, in
   arrival order: the second is built on the state the first committed instead of racing it
   into a compare-and-set conflict and a retry. Writes of different items never wait for
   each other.
2. Only this instance's writes are ordered: writes of other instances are still serialized by
   the store's compare-and-set, as before.
3. A lock exists only while someone holds or waits for it (memory is bounded by the writes in
   flight). Ownership passes directly to the oldest waiter on release, so no newcomer can
   overtake a waiter; a waiter cancelled after it was handed the lock passes it on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable

__all__ = ["KeyLocks"]


class KeyLocks:
    """FIFO locks by key, created on demand (see the module rules)."""

    def __init__(self) -> None:
        # key -> waiters of a held lock (an empty deque: held, nobody waiting)
        self._held: dict[Hashable, deque[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._held)

    async def acquire(self, key: Hashable) -> None:
        waiters = self._held.get(key)
        if waiters is None:
            self._held[key] = deque()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(key)  # handed over just before the cancellation: pass it on
            raise

    def release(self, key: Hashable) -> None:
        waiters = self._held[key]
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)  # ownership passes to the oldest live waiter
                return
        del self._held[key]
