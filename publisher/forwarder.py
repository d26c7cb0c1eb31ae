"""The outbox forwarder: moves committed records from the store's outbox to the record log.

Rules:

- **One active forwarder.** Every publisher instance runs a ``Forwarder``, but only the holder
  of the store's lease forwards. The lease is renewed every ``ttl/3``; a forwarder stops
  sending as soon as its last successful renewal is older than ``ttl/2``, so a deposed leader
  stops well before another instance can take over. Removal from the outbox is fenced: a
  deposed leader (stale fencing token) removes nothing.
- **Order.** The outbox is read oldest first, a batch at a time; the batch's sends are started
  in that order (``RecordLog`` keeps the order of started sends per partition), so each
  environment's records reach Kafka in commit order.
- **Removal only after acknowledgement.** After a batch, the longest acknowledged *prefix* is
  removed, then its writers are told. If a send failed, everything from the first failure on
  is sent again after a backoff, in order, even records after it that were acknowledged: the
  log then ends with the right order for every item, at the cost of duplicates
  (at-least-once; relays and SDKs ignore a version they already hold).
- **Kafka down.** Sends fail or time out; the forwarder keeps retrying with exponential backoff
  (capped), never skipping, never reordering. Redis down: same, the lease is re-acquired after.
- **A topic the log created is filled first.** When the record log (re)creates the topic (at
  start, or after it was deleted at runtime), the store's whole state is appended to the
  outbox (``publisher.republish``) before the next batch is read, so the new topic converges
  to the store's state. Until that succeeded it is retried before any other step.
- **Configuration errors** (``TopicConfigError``: e.g. more replicas than brokers) are logged
  as errors naming the setting to change; retrying continues at the capped backoff.
- **One batch, one send.** A batch is handed to the record log as one ``send_records`` call
  (``BatchRecordLog.send_batch`` when the log has it): one lock acquisition, the records
  enqueued in outbox order, one outcome per record. A batch is therefore the natural unit of
  a Kafka transaction. Group-committed writes are adjacent in the outbox, so the records of
  one group usually travel in one batch.
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

from publisher.log import RecordLog, TopicConfigError, TopicCreationAware, send_records
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
    ) -> None:
        self._store = store
        self._log = log
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
        if self._fence is not None:
            with contextlib.suppress(Exception):
                await self._store.release_lease(self.owner)
        self._fence = None
        self._metrics.forwarder_leader.set(0)
        if self._log_started:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._log.stop(), 15.0)
            self._log_started = False

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
            send_records(self._log, [(e.record.env, e.record.key, e.record.value) for e in entries])
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
        if isinstance(self._log, TopicCreationAware) and self._log.take_topic_created():
            self._republish_pending = True

    async def _step(self) -> bool:
        """Forward one batch; True if it made progress. Raises on store or log failure."""
        fence = self._fence
        if fence is None or not self._lease_fresh():
            self._metrics.outbox_depth.set(await self._store.outbox_depth())
            return False
        if not self._log_started:
            # The gauge must follow the outbox even while Kafka is unreachable.
            self._metrics.outbox_depth.set(await self._store.outbox_depth())
            await self._log.start()
            self._log_started = True
            self.kafka_ok = True
        self._check_topic_created()
        if self._republish_pending:
            await republish_state(self._store)
            self._republish_pending = False
        self._kicked = False  # a commit from now on kicks again: it may miss this read
        entries = await self._store.outbox_read(self._batch)
        if not entries:
            self._metrics.outbox_depth.set(0)
            return False
        if fence != self._fence or not self._lease_fresh():
            return False  # lost the lease while reading: the new leader sends these
        results = await self._send_all(entries)
        self._check_topic_created()  # a failed send reconnects, which may create the topic
        acked: list[OutboxEntry] = []
        failure: BaseException | None = None
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                failure = result
                break
            acked.append(entry)
        if acked:
            now_ms = time.time() * 1000
            # Removed first, then their writers answered: a 200/201 also means the record has
            # left the outbox (what operators and tests see in the outbox depth).
            await self._store.outbox_remove([e.id for e in acked], owner=self.owner, fence=fence)
            self._notify(acked)
            self.kafka_ok = True
            observe = self._metrics.forward_latency.observe
            for entry in acked:
                observe(max(0.0, (now_ms - entry.enqueued_ms) / 1000))
            self._metrics.records_forwarded.inc(len(acked))
        now = time.monotonic()
        if failure is not None or now - self._depth_at > 0.5:
            # one XLEN per half second is plenty for a gauge, and keeps the hot path short
            self._depth_at = now
            self._metrics.outbox_depth.set(await self._store.outbox_depth())
        if failure is not None:
            raise failure
        # A short batch emptied the outbox (as far as this instance can tell): wait for the
        # next kick instead of reading an empty outbox again.
        self._drained = len(entries) < self._batch and not self._kicked
        return True


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
