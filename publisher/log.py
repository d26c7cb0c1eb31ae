"""The record log the outbox forwarder writes to: the ``RecordLog`` protocol and its Kafka producer.

Guarantees a ``RecordLog`` gives the forwarder:

- **Durability.** ``send`` returns only once the record is durably acknowledged (Kafka:
  ``acks=all``, i.e. by every in-sync replica); if it raises, the record may or may not have
  been written (the caller sends it again: at-least-once).
- **Order.** Records whose ``send`` calls *started* in a given order and target the same
  partition are appended in that order, even when the calls run concurrently (the forwarder
  pipelines a batch of sends). The Kafka implementation runs one transaction at a time under
  a FIFO lock, with an idempotent producer's id and sequence numbers
  (``publisher.kafka_txn``): a batch it sends again after a retriable error is kept once, in
  its place.
- **Partitioning.** The partition is ``protocol.keys.partition_for(partition_env, partitions())``,
  set explicitly on every record: every record of one environment lands in one partition.
- **Batches.** A log may also implement ``BatchRecordLog.send_batch``: the records of one
  forwarder batch, enqueued in order in one step, with one outcome per record. The Kafka log
  sends each batch as ONE transaction: the outcomes are all or nothing.
- **Fencing.** A log may also implement ``FencingRecordLog`` (the Kafka log does): every
  ``start`` fences every producer started before it by any publisher of the deployment (a
  shared Kafka ``transactional.id``), and after a failure the log stays not ``ready`` until
  the caller starts it again. The in-memory and SQLite logs (``flagstream.memlog``,
  ``flagstream.embedded.log``) have exactly one writer, the publisher in the same process,
  so there is no one to fence: they implement neither, and every batch is appended as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol, runtime_checkable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaTimeoutError

from flagstream.logs import rate_limit
from protocol.keys import partition_for
from publisher.kafka_txn import DirectTransactions, TransactionFenced

__all__ = [
    "FENCED_MESSAGE",
    "BatchRecordLog",
    "FencingRecordLog",
    "KafkaRecordLog",
    "LogFenced",
    "LogNotReady",
    "RecordLog",
    "TopicConfigError",
    "TopicCreationAware",
    "batch_sender",
    "check_topic_config",
    "default_transactional_id",
    "ensure_topic",
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


RecordBatch = Sequence[tuple[str, bytes, bytes]]
BatchSender = Callable[[RecordBatch], Awaitable[list[object]]]


def batch_sender(log: RecordLog) -> BatchSender:
    """How to send a batch to ``log``: its ``send_batch`` if it has one, else one ``send`` per
    record, pipelined. Decide once per log: an isinstance check against a runtime-checkable
    Protocol inspects every member, 8-16 µs a call."""
    if isinstance(log, BatchRecordLog):
        return log.send_batch
    return partial(_send_each, log)


async def _send_each(log: RecordLog, records: RecordBatch) -> list[object]:
    return list(
        await asyncio.gather(
            *(log.send(env, key, value) for env, key, value in records), return_exceptions=True
        )
    )


@runtime_checkable
class FencingRecordLog(Protocol):
    """A ``RecordLog`` whose ``start`` fences every earlier producer of the deployment.

    ``ready`` is False after any failed batch (fenced, broker gone, transaction aborted)
    until ``start`` is called again. A start is what fences the others, so the log never
    does it by itself: the forwarder starts it only while it holds the lease, and sends
    only records it read from the outbox *after* that start.
    """

    @property
    def ready(self) -> bool:
        """The producer of the last ``start`` can still commit."""


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


def default_transactional_id(topic: str) -> str:
    """The ``transactional.id`` every publisher of a deployment shares unless configured."""
    return f"flagstream-publisher.{topic}"


class LogNotReady(ConnectionError):
    """``send_batch`` on a log whose producer must be started again first (see ``ready``)."""


# How a fenced batch is reported (and logged by the forwarder; the chaos run counts it).
FENCED_MESSAGE = "fenced: another publisher started a producer"


class LogFenced(ConnectionError):
    """Another publisher started a producer with the same ``transactional.id``: this one was
    deposed, and Kafka refuses (and aborts) whatever it still tries to write."""


class KafkaRecordLog:
    """``RecordLog`` on a transactional aiokafka producer (``acks="all"``, idempotent).

    Fencing: every publisher of a deployment uses the same ``transactional_id`` (by default
    ``default_transactional_id(topic)``). Each ``start`` creates a producer whose
    ``InitProducerId`` bumps that id's epoch on the transaction coordinator, which aborts
    any transaction an earlier producer of the id left open and makes Kafka refuse every
    later request of those earlier producers (``ProducerFenced``). So once a new forwarder
    leader has started its log, a deposed one can never append again: its in-flight batch
    is aborted, and readers at ``read_committed`` (the relays) never see it.

    Each ``send_batch`` is one transaction, sent by ``publisher.kafka_txn.DirectTransactions``
    with the started producer's id and epoch: the records in order, then the commit. Its
    outcomes are all or nothing: every record is acknowledged (committed) or every record
    carries the failure. After any failure the log is not ``ready`` until ``start`` is
    called again; it never restarts by itself, because a start fences every other
    publisher: only the lease holder may do it, before it reads the outbox (a batch read
    before a start must never be sent by the started producer; ``publisher.forwarder``).
    ``start`` also creates the topic (compacted) if it is missing.
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
        transactional_id: str | None = None,
        # A transaction lives for milliseconds; a producer killed inside one leaves it open
        # until the next start of the id (the next leader) or this timeout aborts it.
        transaction_timeout_ms: int = 30_000,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.transactional_id = transactional_id or default_transactional_id(topic)
        self._create_partitions = create_partitions
        self._replication_factor = replication_factor
        self._request_timeout_ms = request_timeout_ms
        self._max_request_size = max_request_size
        self._transaction_timeout_ms = transaction_timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._transactions: DirectTransactions | None = None  # of the producer of ``start``
        self._broken = False
        self._partitions: int | None = None
        self._topic_created = False
        self.starts = 0  # producers started (each one fenced the ones before it)
        rate_limit("aiokafka.cluster")
        # FIFO: asyncio.Lock wakes waiters in arrival order, so transaction order = call order.
        self._enqueue = asyncio.Lock()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self._transaction_timeout_ms,
            request_timeout_ms=self._request_timeout_ms,
            max_request_size=self._max_request_size,
            retry_backoff_ms=_RETRY_BACKOFF_MS,
        )

    def take_topic_created(self) -> bool:
        created, self._topic_created = self._topic_created, False
        return created

    @property
    def ready(self) -> bool:
        """True while the producer of the last ``start`` can still commit transactions."""
        return self._producer is not None and not self._broken

    async def start(self) -> None:
        """(Re)start: create the topic if missing, then a new producer, fencing every earlier
        producer of ``transactional_id`` (this log's own included). Bounded in time."""
        async with self._enqueue:
            await self._close_producer()
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
                # aiokafka's start retries InitProducerId for as long as the coordinator is
                # unavailable: bound it; the forwarder backs off and starts again.
                await asyncio.wait_for(producer.start(), self._request_timeout_ms / 1000)
                parts = await producer.partitions_for(self.topic)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), self._request_timeout_ms / 1000)
                raise
            self._partitions = len(parts)
            self._producer = producer
            self._transactions = DirectTransactions(
                producer,
                self.topic,
                request_timeout_ms=self._request_timeout_ms,
                # One record batch may fill half a request: a bulk write of 1,000 ~1 KB items
                # goes to one partition in one or two Produce requests, not 60 of 16 KB.
                max_batch_bytes=self._max_request_size // 2,
            )
            self._broken = False
            self.starts += 1

    async def stop(self) -> None:
        """Stop the producer; bounded, as the broker may be down (unsent records stay in the
        outbox and are sent again by the next forwarder)."""
        await self._close_producer()

    async def _close_producer(self) -> None:
        self._transactions = None
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), self._request_timeout_ms / 1000)
            except Exception:  # TimeoutError (broker down) or a fenced producer's error
                _log.debug("Kafka producer did not stop cleanly; abandoning it", exc_info=True)

    async def partitions(self) -> int:
        if self._partitions is None:
            raise RuntimeError("KafkaRecordLog is not started")
        return self._partitions

    async def send(self, partition_env: str, key: bytes, value: bytes) -> None:
        """One record in a transaction of its own (the forwarder uses ``send_batch``)."""
        (result,) = await self.send_batch([(partition_env, key, value)])
        if isinstance(result, BaseException):
            raise result

    async def send_batch(self, records: Sequence[tuple[str, bytes, bytes]]) -> list[object]:
        """The records in order, as ONE transaction: all acknowledged, or all failed."""
        if not records:
            return []
        async with self._enqueue:
            transactions = self._transactions
            if transactions is None or self._broken:
                return [LogNotReady("the Kafka producer must be started again")] * len(records)
            batches = _by_partition(records, await self.partitions())
            try:
                # bounded: the forwarder then starts the log again (which re-creates a topic
                # deleted at runtime, and aborts whatever this transaction left open)
                async with asyncio.timeout(self._request_timeout_ms / 1000):
                    await transactions.commit(batches)
            except TimeoutError:
                self._broken = True
                stalled = KafkaTimeoutError(
                    f"the transaction was not committed within {self._request_timeout_ms} ms"
                )
                return [stalled] * len(records)
            except TransactionFenced as exc:
                self._broken = True
                fenced = LogFenced(
                    f"{FENCED_MESSAGE} with transactional.id {self.transactional_id!r}; "
                    f"this one can no longer write ({exc})"
                )
                return [fenced] * len(records)
            except Exception as exc:
                # Whatever failed (broker gone, a record refused), the transaction did not
                # commit: Kafka aborts it, or the next start of this id does.
                self._broken = True
                return [exc] * len(records)
        return [None] * len(records)


def _by_partition(
    records: Sequence[tuple[str, bytes, bytes]], partitions: int
) -> list[tuple[int, list[tuple[bytes, bytes]]]]:
    """The records grouped by partition, each group in the records' order."""
    groups: dict[int, list[tuple[bytes, bytes]]] = {}
    for env, key, value in records:
        groups.setdefault(partition_for(env, partitions), []).append((key, value))
    return list(groups.items())
