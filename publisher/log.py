"""The record log the outbox forwarder writes to: the ``RecordLog`` protocol and its Kafka producer.

Guarantees a ``RecordLog`` gives the forwarder:

- **Durability.** ``send`` returns only once the record is durably acknowledged (Kafka:
  ``acks=all``, i.e. by every in-sync replica); if it raises, the record may or may not have
  been written (the caller sends it again: at-least-once).
- **Order.** Records whose ``send`` calls *started* in a given order and target the same
  partition are appended in that order, even when the calls run concurrently (the forwarder
  pipelines a batch of sends). The Kafka implementation enqueues under a FIFO lock into an
  idempotent producer (``enable_idempotence=True``), which keeps per-partition order across
  its internal retries and never duplicates a record it retried itself.
- **Partitioning.** The partition is ``protocol.keys.partition_for(partition_env, partitions())``,
  set explicitly on every record: every record of one environment lands in one partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from protocol.keys import partition_for

__all__ = ["KafkaRecordLog", "RecordLog", "ensure_topic"]

_log = logging.getLogger("flagstream.publisher.log")

_TOPIC_ALREADY_EXISTS = 36
_RECONNECT_COOLDOWN = 1.0  # seconds


class RecordLog(Protocol):
    """An append-only, partitioned log of records (see the module docstring for guarantees)."""

    async def start(self) -> None:
        """Connect (creating the topic if the implementation owns that); raise if unreachable."""

    async def stop(self) -> None:
        """Flush what can be flushed and disconnect."""

    async def partitions(self) -> int:
        """The topic's partition count."""

    async def send(self, partition_env: str, key: bytes, value: bytes) -> None:
        """Append one record to ``partition_env``'s partition; return once durably acknowledged."""


async def ensure_topic(
    bootstrap: str,
    topic: str,
    *,
    partitions: int,
    replication_factor: int,
    timeout_ms: int = 10_000,
) -> bool:
    """Create ``topic`` compacted with ``partitions`` partitions if missing; True if created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        if topic in await admin.list_topics():
            return False
        response: Any = await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    # Compaction keeps the latest record of every item forever: the topic is
                    # the state, not a history. Deletes are versioned tombstones (a normal
                    # record), so compaction never removes an item's deletion.
                    topic_configs={"cleanup.policy": "compact"},
                )
            ],
            timeout_ms=timeout_ms,
        )
        for entry in getattr(response, "topic_errors", []):
            code = entry[1]
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic!r}: Kafka error code {code}")
        _log.info("created topic %s with %d partitions (compacted)", topic, partitions)
        return True
    finally:
        await admin.close()


class KafkaRecordLog:
    """``RecordLog`` on an idempotent aiokafka producer with ``acks="all"``.

    ``start`` creates the topic (compacted) if it is missing. After a failed send the producer
    is replaced before the next send: an idempotent producer whose batch expired may have a
    broken sequence, and a fresh producer id is the simple way back to a clean state.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        create_partitions: int = 6,
        replication_factor: int = 1,
        request_timeout_ms: int = 10_000,
        max_request_size: int = 2 * 1024 * 1024,
        linger_ms: int = 2,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._create_partitions = create_partitions
        self._replication_factor = replication_factor
        self._request_timeout_ms = request_timeout_ms
        self._max_request_size = max_request_size
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._broken = False
        self._restart_failed_at = -_RECONNECT_COOLDOWN
        self._partitions: int | None = None
        # FIFO: asyncio.Lock wakes waiters in arrival order, so enqueue order = call order.
        self._enqueue = asyncio.Lock()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=self._request_timeout_ms,
            max_request_size=self._max_request_size,
            linger_ms=self._linger_ms,
        )

    async def start(self) -> None:
        await ensure_topic(
            self.bootstrap,
            self.topic,
            partitions=self._create_partitions,
            replication_factor=self._replication_factor,
            timeout_ms=self._request_timeout_ms,
        )
        producer = self._new_producer()
        try:
            await producer.start()
            parts = await producer.partitions_for(self.topic)
        except BaseException:
            await producer.stop()
            raise
        self._partitions = len(parts)
        self._producer = producer
        self._broken = False

    async def stop(self) -> None:
        """Stop the producer; bounded, as the broker may be down (unsent records stay in the
        outbox and are sent again by the next forwarder)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), self._request_timeout_ms / 1000)
            except TimeoutError:
                _log.warning("Kafka producer did not stop in time; abandoning it")

    async def partitions(self) -> int:
        if self._partitions is None:
            raise RuntimeError("KafkaRecordLog is not started")
        return self._partitions

    async def send(self, partition_env: str, key: bytes, value: bytes) -> None:
        async with self._enqueue:
            if self._producer is None or self._broken:
                # Fail fast after a failed reconnect: the other sends of the same batch must
                # not each wait a full connect timeout (the forwarder backs off and retries).
                if time.monotonic() - self._restart_failed_at < _RECONNECT_COOLDOWN:
                    raise KafkaConnectionError("Kafka is unreachable (reconnect failed)")
                try:
                    await self._restart()
                except Exception:
                    self._restart_failed_at = time.monotonic()
                    raise
            producer = self._producer
            assert producer is not None
            partition = partition_for(partition_env, await self.partitions())
            try:
                future = await producer.send(self.topic, value=value, key=key, partition=partition)
            except BaseException:
                self._broken = True
                raise
        try:
            await future
        except BaseException:
            if producer is self._producer:
                self._broken = True
            raise

    async def _restart(self) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            try:
                # Stopping flushes pending batches; bounded, as the broker may be down.
                await asyncio.wait_for(old.stop(), self._request_timeout_ms / 1000)
            except Exception:  # the old producer is being discarded anyway
                _log.debug("error stopping a broken producer", exc_info=True)
        await self.start()
