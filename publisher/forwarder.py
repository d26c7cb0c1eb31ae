"""The outbox forwarder: moves committed records from the store's outbox to the record log.

Rules:

- **One active forwarder.** Every publisher instance runs a ``Forwarder``, but only the holder
  of the store's lease forwards. The lease is renewed every ``ttl/3``; a forwarder stops
  sending as soon as its last successful renewal is older than ``ttl/2``, so a deposed leader
  stops well before another instance can take over. Removal from the outbox is fenced: a
  deposed leader (stale fencing token) removes nothing.
- **Kafka fences a deposed leader.** Time alone cannot stop a leader that was paused (or cut
  from Redis) with a batch in flight. With a ``FencingRecordLog`` (Kafka: a transactional
  producer whose ``transactional.id`` all publishers share) every new lease term starts the
  log first, before reading the outbox: that start fences every producer any earlier leader
  started, so whatever a deposed leader still sends is refused, and its open transaction is
  aborted (relays read ``read_committed``: they never see it). The log is started again
  only by the lease holder, at the start of a step and never in the middle of one, so a
  producer only ever sends records read from the outbox after it was started: a batch read
  before a fence can never land after another leader's records.
- **Order.** The outbox is read oldest first, a batch at a time; the batch's sends are started
  in that order (``RecordLog`` keeps the order of started sends per partition), so each
  environment's records reach Kafka in commit order.
- **Removal only after acknowledgement.** After a batch, the writers of its longest
  acknowledged *prefix* are told at once, then that prefix is removed (with a transactional
  log a batch is all or nothing: a fenced or aborted transaction tells and removes nothing).
  A writer is answered as soon as Kafka committed its record, not a Redis round trip later:
  an answered write's entry may still be in the outbox for that long (a removal that fails
  leaves it there, and it is sent again: at-least-once, as below). If a send failed,
  everything from the first failure on is sent again after a backoff, in order, even records
  after it that were acknowledged: the log then ends with the right order for every item, at
  the cost of duplicates (at-least-once; relays and SDKs ignore a version they already hold).
- **Pipelined removal.** A committed batch is removed from the outbox while the next batch is
  read and sent: removals run one after the other in commit order, and a batch's removal
  waits for the one before it. The next read starts after the last entry sent in this lease
  term (outbox ids only grow), so it never returns an entry whose removal is still pending.
  If a removal fails, the removals after it are not attempted and the next step starts over
  from the oldest entry left in the outbox (sent again, in order: at-least-once), so the
  outbox never loses an older entry while keeping a newer one. A failed send and a new term
  also read from the oldest entry left (skipping the entries whose removal is pending).
- **Kafka down.** Sends fail or time out; the forwarder keeps retrying with exponential backoff
  (capped), never skipping, never reordering. Redis down: same, the lease is re-acquired after.
- **A topic the log created is filled first.** When the record log (re)creates the topic (at
  start, or after it was deleted at runtime), the store's whole state is appended to the
  outbox (``publisher.republish``) before the next batch is read, so the new topic converges
  to the store's state. Until that succeeded it is retried before any other step.
- **Configuration errors** (``TopicConfigError``: e.g. more replicas than brokers) are logged
  as errors naming the setting to change; retrying continues at the capped backoff.
- **One batch, one transaction.** A batch is handed to the record log as one
  ``batch_sender`` call (``BatchRecordLog.send_batch`` when the log has it), which the Kafka
  log sends as one transaction. Group-committed writes are adjacent in the outbox, so the
  records of one group usually travel in one batch.
- **Reading after the commit in flight.** With ``commits_settled`` (the publisher passes its
  group committer's ``settled``), a step waits for this instance's group commit in flight,
  if any, before it reads the outbox: the group being committed then travels in this batch
  instead of waiting out a whole transaction for the next one. Under load transactions get
  fewer and larger (less broker and producer work per record); a lone write is not delayed
  (its commit has returned before it kicks the forwarder). The wait is bounded by one store
  call; the lease is checked after the read as before.
- **Notification, not polling.** A commit on this instance kicks the forwarder at once; a
  batch that emptied the outbox is not followed by a re-read until the next kick (or the
  ``idle_poll`` fallback, which picks up entries committed by other instances). When a batch
  is acknowledged, the waiting writers of its entries are woken directly (their future is
  resolved; no task, no timer per write).
- **Waiting writers.** ``wait_delivered(entry_id)`` resolves when the entry left the outbox,
  by that local notification (this instance forwarded it) or by polling the store (another
  instance did: every ``waiter_poll`` on a non-leader, every ten on the leader, which only
  needs it if it lost the lease mid-wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from publisher.log import (
    FencingRecordLog,
    LogFenced,
    RecordLog,
    TopicConfigError,
    TopicCreationAware,
    batch_sender,
)
from publisher.metrics import PublisherMetrics
from publisher.republish import republish_state
from publisher.store import OutboxEntry, Store, StoreUnavailable

__all__ = ["Forwarder"]

_log = logging.getLogger("flagstream.publisher.forwarder")


class Forwarder:
    """Forwards the outbox to the record log while holding the lease (see module docstring)."""

    def __init__(
        self,
        store: Store,
        log: RecordLog,
        metrics: PublisherMetrics,
        *,
        owner: str | None = None,
        lease_ttl: float = 10.0,
        batch_size: int = 500,
        idle_poll: float = 0.1,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        waiter_poll: float = 0.1,
        stall_after: float = 5.0,
        commits_settled: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._commits_settled = commits_settled
        self._log = log
        # What the log can do is decided once: an isinstance check against a runtime-checkable
        # Protocol inspects every member on each call, tens of µs a step on the hot path.
        self._fencing_log = log if isinstance(log, FencingRecordLog) else None
        self._topic_aware_log = log if isinstance(log, TopicCreationAware) else None
        self._send_batch = batch_sender(log)
        self._metrics = metrics
        self.owner = owner or f"publisher-{uuid.uuid4().hex[:12]}"
        self._ttl = lease_ttl
        self._batch = batch_size
        self._idle_poll = idle_poll
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._waiter_poll = waiter_poll
        self._stall_after = stall_after
        self._depth_at = 0.0  # monotonic time of the last outbox depth update
        self._kicked = False  # a kick arrived since the last outbox read
        self._kick_waiter: asyncio.Future[bool] | None = None
        self._stopping = asyncio.Event()
        # entry id -> future: True once delivered, False when the waiter's poll timer fired
        self._waiters: dict[str, asyncio.Future[bool]] = {}
        self._drained = False  # the last batch emptied the outbox: wait for a kick
        self._fence: int | None = None
        self._renewed_at = 0.0  # monotonic time of the last successful lease renewal
        self._log_started = False
        self._log_term: int | None = None  # the lease term in which the log was last started
        # Committed batches whose removal from the outbox is pending, oldest first: the
        # last removal task (each awaits the one before it) and the ids not yet removed.
        self._removing: asyncio.Task[None] | None = None
        self._unremoved: set[str] = set()
        # (term, id): the last entry sent in that lease term; the next read starts after it.
        self._sent_up_to: tuple[int, str] | None = None
        self._republish_pending = False
        self.kafka_ok = False  # last Kafka operation succeeded (for /readyz detail)
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._lease_loop(), name="forwarder-lease"),
            asyncio.create_task(self._forward_loop(), name="forwarder"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        self.kick()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        with contextlib.suppress(Exception):  # a committed batch's removal, bounded
            await asyncio.wait_for(self._settle_removals(), 5.0)
        if self._fence is not None:
            with contextlib.suppress(Exception):
                await self._store.release_lease(self.owner)
        self._fence = None
        self._metrics.forwarder_leader.set(0)
        if self._log_started:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._log.stop(), 15.0)
            self._log_started = False
            self._log_term = None

    @property
    def is_leader(self) -> bool:
        return self._fence is not None and self._lease_fresh()

    def kick(self) -> None:
        """A new entry was committed: look at the outbox now rather than at the next poll."""
        self._drained = False
        self._kicked = True
        if self._kick_waiter is not None:
            _resolve(self._kick_waiter, True)

    # -- waiting writers ---------------------------------------------------------------
    async def wait_delivered(self, entry_id: str, within: float) -> bool:
        """True once ``entry_id`` was acknowledged by the log, False after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                # The leader notifies its own waiters; polling the store is the fallback for
                # entries another instance forwards (or a leadership change mid-wait).
                poll = self._waiter_poll * (10 if self.is_leader else 1)
                future: asyncio.Future[bool] = loop.create_future()
                self._waiters[entry_id] = future
                timer = loop.call_later(min(remaining, poll), _resolve, future, False)
                try:
                    if await future:
                        return True
                finally:
                    timer.cancel()
                try:
                    if not await self._store.outbox_contains(entry_id):
                        return True  # another instance forwarded it (or we did, just now)
                except StoreUnavailable:
                    pass  # cannot tell; keep waiting for a local notification
        finally:
            self._waiters.pop(entry_id, None)

    def _notify(self, entries: list[OutboxEntry]) -> None:
        waiters = self._waiters
        if not waiters:
            return
        for entry in entries:
            future = waiters.get(entry.id)
            if future is not None:
                _resolve(future, True)

    # -- lease -------------------------------------------------------------------------
    def _lease_fresh(self) -> bool:
        return time.monotonic() - self._renewed_at < self._ttl / 2

    async def _lease_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                fence = await self._store.acquire_lease(self.owner, int(self._ttl * 1000))
            except StoreUnavailable:
                fence = None
                self._metrics.store_errors.inc()
            except Exception:
                _log.exception("lease renewal failed")
                fence = None
            if fence is not None:
                if fence != self._fence:
                    _log.info("forwarder lease acquired (term %d) by %s", fence, self.owner)
                    self.kick()
                self._fence = fence
                self._renewed_at = time.monotonic()
            elif self._fence is not None:
                _log.info("forwarder lease lost by %s", self.owner)
                self._fence = None
            self._metrics.forwarder_leader.set(1 if self._fence is not None else 0)
            await self._sleep(self._ttl / 3)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- forwarding --------------------------------------------------------------------
    async def _forward_loop(self) -> None:
        backoff = self._backoff_initial
        while not self._stopping.is_set():
            try:
                progressed = await self._step()
                backoff = self._backoff_initial
                if not progressed or self._drained:
                    await self._wait_kick(self._idle_poll)
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                self._metrics.store_errors.inc()
                _log.warning("forwarder: %s; retrying in %.1fs", exc, backoff)
            except TopicConfigError as exc:
                self.kafka_ok = False
                self._metrics.kafka_errors.inc()
                _log.error("forwarder: configuration error: %s; retrying in %.1fs", exc, backoff)
            except Exception as exc:
                self.kafka_ok = False
                self._metrics.kafka_errors.inc()
                _log.warning(
                    "forwarder: Kafka error (%s: %s); retrying in %.1fs",
                    type(exc).__name__,
                    exc,
                    backoff,
                )
            else:
                continue
            await self._sleep(backoff)  # only after a failed step
            backoff = min(backoff * 2, self._backoff_max)

    async def _wait_kick(self, seconds: float) -> None:
        """Until the next kick, at most ``seconds`` (the idle poll); no task, one timer."""
        if not self._kicked:
            loop = asyncio.get_running_loop()
            self._kick_waiter = woken = loop.create_future()
            timer = loop.call_later(seconds, _resolve, woken, False)
            try:
                await woken
            finally:
                timer.cancel()
                self._kick_waiter = None
        self._kicked = False
        self._drained = False

    async def _send_all(self, entries: list[OutboxEntry]) -> list[object]:
        """Send a batch in order; count a Kafka error for every ``stall_after`` without an ack.

        The producer retries on its own while the broker is away, so a send may neither
        succeed nor fail for a long time: that stall is what operators need to see.
        """
        batch = asyncio.ensure_future(
            self._send_batch([(e.record.env, e.record.key, e.record.value) for e in entries])
        )
        while True:
            done, _ = await asyncio.wait({batch}, timeout=self._stall_after)
            if done:
                return list(batch.result())
            self.kafka_ok = False
            self._metrics.kafka_errors.inc()
            _log.warning(
                "forwarder: Kafka has not acknowledged %d record(s) for %.0fs; still retrying",
                len(entries),
                self._stall_after,
            )

    def _check_topic_created(self) -> None:
        if self._topic_aware_log is not None and self._topic_aware_log.take_topic_created():
            self._republish_pending = True

    def _log_needs_start(self, fence: int) -> bool:
        if not self._log_started:
            return True
        if self._fencing_log is not None:
            # A new term starts with a start (fencing every earlier leader's producer), and a
            # failed transaction leaves the log unusable until started again.
            return self._log_term != fence or not self._fencing_log.ready
        return False

    async def _step(self) -> bool:
        """Forward one batch; True if it made progress. Raises on store or log failure."""
        self._check_removals()
        fence = self._fence
        if fence is None or not self._lease_fresh():
            await self._settle_removals()
            self._metrics.outbox_depth.set(await self._store.outbox_depth())
            return False
        if self._log_needs_start(fence):
            # The gauge must follow the outbox even while Kafka is unreachable.
            self._metrics.outbox_depth.set(await self._store.outbox_depth())
            # Nothing read before this start may be sent by the producer it creates.
            await self._settle_removals()
            await self._log.start()
            self._log_started = True
            self._log_term = fence
            self.kafka_ok = True
            if not self._lease_fresh() or fence != self._fence:
                return False  # deposed while starting: the next step sees it
        self._check_topic_created()
        if self._republish_pending:
            await self._settle_removals()
            await republish_state(self._store)
            self._republish_pending = False
        if self._commits_settled is not None:
            await self._commits_settled()  # before un-kicking: its writers kick as it returns
        self._kicked = False  # a commit from now on kicks again: it may miss this read
        entries = await self._read(fence)
        if not entries:
            if not self._unremoved:
                self._metrics.outbox_depth.set(0)
            return False
        if fence != self._fence or not self._lease_fresh():
            return False  # lost the lease while reading: the new leader sends these
        results = await self._send_all(entries)
        self._check_topic_created()
        acked: list[OutboxEntry] = []
        failure: BaseException | None = None
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                failure = result
                break
            acked.append(entry)
        # Everything up to the batch's last entry was sent this term: the next read starts
        # after it. After a failure the next read starts from the oldest entry left.
        self._sent_up_to = (fence, entries[-1].id) if failure is None else None
        if acked:
            self.kafka_ok = True
            self._notify(acked)  # committed in Kafka: what a 200/201 means
            self._unremoved.update(e.id for e in acked)
            self._removing = asyncio.create_task(
                self._remove(self._removing, acked, fence), name="forwarder-remove"
            )
        now = time.monotonic()
        if failure is not None or now - self._depth_at > 0.5:
            # one XLEN per half second is plenty for a gauge, and keeps the hot path short
            self._depth_at = now
            self._metrics.outbox_depth.set(await self._store.outbox_depth())
        if failure is not None:
            await self._settle_removals()
            if isinstance(failure, LogFenced):
                _log.warning(
                    "forwarder %s: %s; nothing of the batch was written, it stays in the outbox",
                    self.owner,
                    failure,
                )
            raise failure
        # A short batch emptied the outbox (as far as this instance can tell): wait for the
        # next kick instead of reading an empty outbox again.
        self._drained = len(entries) < self._batch and not self._kicked
        return True

    async def _remove(
        self, before: asyncio.Task[None] | None, acked: list[OutboxEntry], fence: int
    ) -> None:
        """Remove a committed batch (its writers were answered) after the batch before it was
        removed. Raises (and so fails the removals after it) if any removal failed."""
        if before is not None:
            await before
        ids = [e.id for e in acked]
        now_ms = time.time() * 1000
        await self._store.outbox_remove(ids, owner=self.owner, fence=fence)
        self._unremoved.difference_update(ids)
        observe = self._metrics.forward_latency.observe
        for entry in acked:
            observe(max(0.0, (now_ms - entry.enqueued_ms) / 1000))
        self._metrics.records_forwarded.inc(len(acked))

    async def _read(self, fence: int) -> list[OutboxEntry]:
        """The next batch: the entries after the last one sent this term, or from the oldest
        entry without those whose removal is pending."""
        sent = self._sent_up_to
        if sent is not None and sent[0] == fence:  # pending removals are all before it
            return await self._store.outbox_read(self._batch, after=sent[1])
        # A copy: a removal finishing during the read must not make its entries look new.
        pending = frozenset(self._unremoved)
        rows = await self._store.outbox_read(self._batch + len(pending))
        return [e for e in rows if e.id not in pending][: self._batch] if pending else rows

    async def removals_done(self) -> None:
        """Return once every batch whose writers were answered so far has been removed from
        the outbox (or its removal failed: then it is sent again). Changes nothing."""
        task = self._removing
        if task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(task)

    def _check_removals(self) -> None:
        """Raise the failure of a finished removal (the next step starts over)."""
        task = self._removing
        if task is not None and task.done():
            self._removing = None
            if not task.cancelled() and task.exception() is not None:
                self._forget_unremoved()  # not removed: read again and sent again, in order
                raise task.exception()  # type: ignore[misc]

    async def _settle_removals(self) -> None:
        """Wait for the pending removals; on failure forget them (they are read again)."""
        task, self._removing = self._removing, None
        if task is None:
            return
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            self._forget_unremoved()
        except Exception:
            self._forget_unremoved()
            _log.debug("outbox removal failed; the entries will be sent again", exc_info=True)

    def _forget_unremoved(self) -> None:
        """Removals failed: their entries are read (and sent) again, from the oldest left."""
        self._unremoved.clear()
        self._sent_up_to = None


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
