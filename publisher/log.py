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
- **Batches.** A log may also implement ``BatchRecordLog.send_batch``: the records of one
  forwarder batch, enqueued in order in one step, with one outcome per record. One batch is
  the unit a transactional producer would commit as one transaction (begin before the first
  record, commit after the last); the outcomes then become all-or-nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from flagstream.logs import rate_limit
from protocol.keys import partition_for

__all__ = [
    "BatchRecordLog",
    "KafkaRecordLog",
    "RecordLog",
    "TopicConfigError",
    "TopicCreationAware",
    "check_topic_config",
    "ensure_topic",
    "send_records",
]

_log = logging.getLogger("flagstream.publisher.log")

_TOPIC_ALREADY_EXISTS = 36
# CreateTopics errors that retrying cannot fix: the request itself is wrong for this cluster.
_CONFIG_ERRORS = {
    37: "INVALID_PARTITIONS",
    38: "INVALID_REPLICATION_FACTOR",
    39: "INVALID_REPLICA_ASSIGNMENT",
    40: "INVALID_CONFIG",
    17: "INVALID_TOPIC_EXCEPTION",
}
_RECONNECT_COOLDOWN = 1.0  # seconds
# While the topic is missing, aiokafka refreshes metadata every ``retry_backoff_ms`` and logs
# an ERROR each time: back off more than its 100 ms default, and rate-limit that logger.
_RETRY_BACKOFF_MS = 500


class TopicConfigError(RuntimeError):
    """The topic cannot be created as configured (e.g. more replicas than brokers).

    A configuration error, not an outage: retrying does not help, the operator must change a
    setting (the message names it).
    """


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


@runtime_checkable
class BatchRecordLog(Protocol):
    """A ``RecordLog`` that sends a whole batch in one call (see the module docstring)."""

    async def send_batch(self, records: Sequence[tuple[str, bytes, bytes]]) -> list[object]:
        """Send ``(partition_env, key, value)`` records in order; wait for every outcome.

        Returns one entry per record, in order: None once durably acknowledged, else the
        exception of its failure (the record may or may not have been written). Never raises
        for a record's failure.
        """


async def send_records(log: RecordLog, records: Sequence[tuple[str, bytes, bytes]]) -> list[object]:
    """``log.send_batch(records)`` if the log has it, else one ``send`` per record, pipelined."""
    if isinstance(log, BatchRecordLog):
        return await log.send_batch(records)
    return list(
        await asyncio.gather(
            *(log.send(env, key, value) for env, key, value in records), return_exceptions=True
        )
    )


@runtime_checkable
class TopicCreationAware(Protocol):
    """A ``RecordLog`` that creates its topic when missing and says when it did.

    A topic created while records already exist in the store (deleted at runtime, or a new
    cluster) is empty: the forwarder then republishes the store's whole state into it.
    """

    def take_topic_created(self) -> bool:
        """True once after each creation of the topic by this log (then False until the next)."""


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
            if code in (0, _TOPIC_ALREADY_EXISTS):
                continue
            if code == 38:
                brokers = len((await admin.describe_cluster()).get("brokers", []))
                raise _replication_error(topic, replication_factor, brokers)
            if code in _CONFIG_ERRORS:
                message = entry[2] if len(entry) > 2 and entry[2] else ""
                raise TopicConfigError(
                    f"cannot create topic {topic!r}: {_CONFIG_ERRORS[code]} (Kafka error code "
                    f"{code}){': ' + message if message else ''}; check FLAGSTREAM_TOPIC, "
                    "FLAGSTREAM_TOPIC_PARTITIONS and FLAGSTREAM_PUBLISHER_TOPIC_REPLICATION_FACTOR"
                )
            raise RuntimeError(f"cannot create topic {topic!r}: Kafka error code {code}")
        _log.info("created topic %s with %d partitions (compacted)", topic, partitions)
        return True
    finally:
        await admin.close()


def _replication_error(topic: str, replication_factor: int, brokers: int) -> TopicConfigError:
    return TopicConfigError(
        f"cannot create topic {topic!r}: INVALID_REPLICATION_FACTOR (Kafka error code 38): "
        f"replication factor {replication_factor} but the cluster has {brokers} broker(s); set "
        f"FLAGSTREAM_PUBLISHER_TOPIC_REPLICATION_FACTOR to at most {brokers} (or create the "
        "topic yourself)"
    )


async def check_topic_config(
    bootstrap: str, topic: str, *, replication_factor: int, timeout_ms: int = 5_000
) -> None:
    """Raise ``TopicConfigError`` if ``topic`` is missing and cannot be created as configured.

    A start-up check (the forwarder creates the topic later): only configuration errors are
    raised; if Kafka cannot be reached this returns, as the publisher must start anyway.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await asyncio.wait_for(admin.start(), timeout_ms / 1000)
        if topic in await admin.list_topics():
            return
        brokers = len((await admin.describe_cluster()).get("brokers", []))
    except Exception:  # unreachable or slow: not a configuration error, checked again later
        _log.debug("topic check skipped: Kafka unreachable", exc_info=True)
        return
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    if brokers and replication_factor > brokers:
        raise _replication_error(topic, replication_factor, brokers)


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
        # The forwarder hands over a whole batch in one event-loop turn, so the producer has
        # nothing to wait for: lingering would only add its time to every write's latency.
        linger_ms: int = 0,
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
        self._topic_created = False
        rate_limit("aiokafka.cluster")
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
            retry_backoff_ms=_RETRY_BACKOFF_MS,
        )

    def take_topic_created(self) -> bool:
        created, self._topic_created = self._topic_created, False
        return created

    async def start(self) -> None:
        if await ensure_topic(
            self.bootstrap,
            self.topic,
            partitions=self._create_partitions,
            replication_factor=self._replication_factor,
            timeout_ms=self._request_timeout_ms,
        ):
            self._topic_created = True
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
            producer = await self._usable_producer()
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

    async def send_batch(self, records: Sequence[tuple[str, bytes, bytes]]) -> list[object]:
        """Enqueue every record under the FIFO lock (one acquisition, in order), then wait."""
        results: list[object] = [None] * len(records)
        futures: list[tuple[int, asyncio.Future[Any]]] = []
        async with self._enqueue:
            producer = None
            for i, (env, key, value) in enumerate(records):
                if producer is None:
                    try:
                        producer = await self._usable_producer()
                        count = await self.partitions()
                    except Exception as exc:
                        results[i:] = [exc] * (len(records) - i)
                        break
                try:
                    future = await producer.send(
                        self.topic, value=value, key=key, partition=partition_for(env, count)
                    )
                except Exception as exc:
                    self._broken = True
                    # Later records must not overtake this one: fail them too (sent again).
                    results[i:] = [exc] * (len(records) - i)
                    break
                futures.append((i, future))
        for i, future in futures:
            try:
                await future
            except Exception as exc:
                results[i] = exc
                if producer is self._producer:
                    self._broken = True
        return results

    async def _usable_producer(self) -> AIOKafkaProducer:
        """The producer, restarted first if the last send broke it (call under the lock)."""
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
        assert self._producer is not None
        return self._producer

    async def _restart(self) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            try:
                # Stopping flushes pending batches; bounded, as the broker may be down.
                await asyncio.wait_for(old.stop(), self._request_timeout_ms / 1000)
            except Exception:  # the old producer is being discarded anyway
                _log.debug("error stopping a broken producer", exc_info=True)
        await self.start()
