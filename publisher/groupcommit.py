"""Group commit: item writes that arrive together are committed in one store call.

Rules, in the order a write meets them:

1. **No timer.** A write arriving while no commit is in flight is sent at once, alone: a
   lone writer never waits for company (latency at concurrency 1 is one store call).
2. **Batching by arrival.** Writes arriving while a commit is in flight queue up; as soon as
   it returns, everything queued (at most ``max_writes``) is sent as ONE
   ``Store.write_items(..., atomic=False)`` call — one Lua script on Redis — in arrival order.
3. **Each write keeps its own check and its own answer.** The store checks every write's
   compare-and-set (its ``expected_version``: If-Match and version bumps) on its own, against
   the state the writes before it left; one write's conflict never fails another. Each caller
   gets its own outcome: the outbox entry id, or the ``VersionConflict`` /
   ``UnknownEnvironment`` / ``PolicyChanged`` (its governance policy revision is no longer
   the environment's) it would have got alone.
4. **Order.** Outbox entries are appended in the batch's order, and batches are committed one
   after the other, so the outbox order is the order in which writes were committed, and
   records of one batch are forwarded together (one Kafka batch).
5. **Failure.** If the store call raises (``StoreUnavailable``), every write of that batch
   gets that exception, exactly as a lone ``write_item`` would; later batches are still tried.
6. **Settling.** ``settled()`` returns once the store call in flight when it was called (if
   any) has returned, its writers' outcomes set; at once when none is. It waits for no write
   queued after that call, so it is bounded by one store call (itself bounded by the store's
   timeout). The forwarder awaits it before reading the outbox: under load, the group being
   committed then travels in the next Kafka transaction instead of the one after it (fewer,
   larger transactions); a lone write is never delayed by it (its commit has returned before
   its writer kicks the forwarder).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from publisher.store import ItemWrite, Store, WriteOutcome

__all__ = ["GroupCommitter"]

_Pending = tuple[ItemWrite, "asyncio.Future[WriteOutcome]"]


class GroupCommitter:
    """Commits item writes in groups (see the module rules)."""

    def __init__(self, store: Store, *, max_writes: int = 256) -> None:
        self._store = store
        self._max = max(1, max_writes)
        self._queue: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._in_flight = False  # a store call has been made and has not returned
        self._settle_waiters: list[asyncio.Future[None]] = []
        self.batches = 0  # store calls made (for tests and metrics)
        self.writes = 0

    async def commit(self, write: ItemWrite) -> WriteOutcome:
        """Commit ``write`` (possibly with others); its outcome. Raises what the store raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[WriteOutcome] = loop.create_future()
        self._queue.append((write, future))
        if self._task is None:
            self._task = loop.create_task(self._run())
        return await future

    async def settled(self) -> None:
        """Return once the store call in flight now (if any) has returned (rule 6)."""
        if not self._in_flight:
            return
        # Its own future: a cancelled waiter cancels nothing the committer needs (and, unlike
        # a shield around one shared future, it wakes one event-loop turn sooner).
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settle_waiters.append(waiter)
        await waiter

    async def _run(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max]
                del self._queue[: self._max]
                await self._commit_batch(batch)
        finally:
            self._task = None

    async def _commit_batch(self, batch: Sequence[_Pending]) -> None:
        self.batches += 1
        self.writes += len(batch)
        self._in_flight = True
        try:
            outcomes = await self._store.write_items(
                [w for w, _ in batch], atomic=False, now_ms=int(time.time() * 1000)
            )
        except Exception as exc:  # every writer of the batch gets the store's error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
        finally:
            self._in_flight = False
            waiters, self._settle_waiters = self._settle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
