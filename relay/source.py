"""Where a relay's records come from: the ``RecordSource`` Protocol, its Kafka implementation,
and the ``Follower`` that drives a source into the ``State``.

Rules:
- A relay reads **every partition** of the topic itself: no consumer group, no committed
  offsets. The first start seeks every partition to the beginning; a restart after an outage
  resumes at the state's next offsets, so the state is never rebuilt needlessly.
- Committed records only: the consumer reads at ``read_committed``. The publisher writes
  each batch as a Kafka transaction and fences a deposed leader by aborting its open one;
  an aborted record must never reach the state. ``high_watermarks`` are therefore the *last
  stable offsets* (what ``read_committed`` can read up to: before the first open
  transaction), and commit/abort markers occupy offsets that hold no record (positions
  simply skip them, like compaction gaps).
- Bootstrap: the high watermarks captured at the first successful start are the target; the
  relay is *ready* once every partition was consumed up to them.
- Tail: fetches wait at most ``fetch_max_wait_ms`` so a change reaches the state within
  milliseconds of its write.
- Outages: the follower never gives up. While the source fails, the state keeps serving
  and the relay is *stale* (``/status``, ``flagstream_relay_stale``); the source is
  restarted with a capped exponential backoff. A missing topic is an outage too: relays never
  create it.
- Epoch: the topic's identity (Kafka topic id + partition count, see ``make_epoch``). If it
  changes (the topic was recreated or repartitioned) the state is rebuilt from the beginning,
  and old positions stop matching (their clients get a full ``put``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any, ClassVar, Protocol

from flagstream.logs import rate_limit
from protocol.position import make_epoch
from relay.metrics import RelayMetrics
from relay.state import SourceRecord, State

log = logging.getLogger("flagstream.relay.source")

__all__ = [
    "DescribedSource",
    "Follower",
    "KafkaSource",
    "RecordSource",
    "SourceBatch",
    "SourceLayout",
    "SourceRecord",
    "SourceUnavailable",
    "TopicMissing",
]


class SourceUnavailable(Exception):
    """The log cannot be read right now (broker down, topic missing). Retry later."""


class TopicMissing(SourceUnavailable):
    """The broker answers but has no such topic (not created yet, or deleted)."""


@dataclass(frozen=True, slots=True)
class SourceLayout:
    """The identity of what is being read: ``epoch`` changes iff offsets stop being comparable."""

    topic_id: str
    partitions: int

    @property
    def epoch(self) -> str:
        return make_epoch(self.topic_id, self.partitions)


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """Records in per-partition offset order, and each partition's next offset after them."""

    records: list[SourceRecord]
    next_offsets: dict[int, int]


class RecordSource(Protocol):
    """A partitioned, append-only, compacted log read from the beginning, then tailed.

    Guarantees an implementation must give:
    - ``start`` returns the layout and positions every partition at ``from_offsets[p]`` (or
      the beginning of the partition if absent). It raises ``SourceUnavailable`` if the log or
      the topic cannot be reached; it may be called again after ``stop``.
    - ``fetch`` returns records of each partition in strictly increasing offset order, never
      one twice in a row of calls, and waits at most about ``timeout_ms`` when there is none.
      It raises ``SourceUnavailable`` (or returns nothing) while the log is unreachable.
    - ``high_watermarks`` is, in every partition, the offset up to which records can be read
      as of now (Kafka: the last stable offset, as the source reads committed records only).
    - Records are never re-ordered across calls within a partition; nothing is skipped except
      what compaction removed (a later record with the same key exists).
    """

    async def start(self, from_offsets: Mapping[int, int]) -> SourceLayout: ...

    async def stop(self) -> None: ...

    async def high_watermarks(self) -> dict[int, int]: ...

    async def fetch(self, timeout_ms: int) -> SourceBatch: ...


class DescribedSource(RecordSource, Protocol):
    """Optional extension: a source that can tell its current identity while tailing.

    ``layout`` is the log's identity as of now (the follower asks about once a second): if
    its epoch differs from what ``start`` returned, the log was re-created under the same
    name and the follower restarts (and so rebuilds from the beginning). A source without
    ``layout`` must instead fail ``fetch``/``high_watermarks`` when that happens.
    """

    async def layout(self) -> SourceLayout: ...


# --- Kafka implementation -----------------------------------------------------------------


class KafkaSource:
    """``RecordSource`` over one Kafka topic with aiokafka, manual assignment, no group."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        fetch_max_wait_ms: int = 20,
        request_timeout_ms: int = 10_000,
        client_id: str = "flagstream-relay",
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.request_timeout_ms = request_timeout_ms
        self.client_id = client_id
        self._consumer: Any = None
        self._tps: list[Any] = []
        self._layout: SourceLayout | None = None
        self._fallback = False
        rate_limit("aiokafka.cluster")

    async def start(self, from_offsets: Mapping[int, int]) -> SourceLayout:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        await self.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=100,
            metadata_max_age_ms=30_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            connections_max_idle_ms=540_000,
        )
        try:
            await consumer.start()
            # The consumer's own metadata only tracks assigned topics: ask for all of them.
            cluster = await consumer._client.fetch_all_metadata()
            if self.topic not in cluster.topics():
                raise TopicMissing(f"topic {self.topic!r} does not exist (yet)")
            parts = cluster.partitions_for_topic(self.topic)
            if not parts:
                raise SourceUnavailable(f"topic {self.topic!r} has no partitions yet")
            described = await _describe_topic(consumer._client, self.topic)
            if described is None:
                if not self._fallback:
                    log.warning(
                        "could not read the topic id of %r; the epoch falls back to the topic "
                        "name and will not notice a re-created topic",
                        self.topic,
                    )
                self._fallback = True
                topic_id = f"name:{self.topic}"
            else:
                self._fallback = False
                topic_id = described[0]
            self._tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(self._tps)
            for tp in self._tps:
                if tp.partition in from_offsets:
                    consumer.seek(tp, from_offsets[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
        except SourceUnavailable:
            await _quiet_stop(consumer)
            raise
        except (TimeoutError, KafkaError, OSError, ValueError) as exc:
            # ValueError: aiokafka could not parse a bootstrap address.
            await _quiet_stop(consumer)
            raise SourceUnavailable(f"Kafka unavailable: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            # Cancelled (shutdown) or anything unexpected: never leave an unclosed consumer.
            await _quiet_stop(consumer)
            raise
        self._consumer = consumer
        self._layout = SourceLayout(topic_id=topic_id, partitions=len(self._tps))
        return self._layout

    async def layout(self) -> SourceLayout:
        if self._consumer is None or self._layout is None:
            raise SourceUnavailable("not started")
        if self._fallback:
            return self._layout
        described = await _describe_topic(self._consumer._client, self.topic)
        if described is None:
            return self._layout
        return SourceLayout(topic_id=described[0], partitions=described[1])

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await _quiet_stop(consumer)

    async def high_watermarks(self) -> dict[int, int]:
        from aiokafka.errors import KafkaError

        if self._consumer is None:
            raise SourceUnavailable("not started")
        try:
            ends = await self._consumer.end_offsets(self._tps)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise SourceUnavailable(f"Kafka unavailable: {type(exc).__name__}") from exc
        return {tp.partition: int(off) for tp, off in ends.items()}

    async def fetch(self, timeout_ms: int) -> SourceBatch:
        from aiokafka.errors import KafkaError

        if self._consumer is None:
            raise SourceUnavailable("not started")
        try:
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        except (KafkaError, OSError) as exc:
            raise SourceUnavailable(f"fetch failed: {type(exc).__name__}") from exc
        records: list[SourceRecord] = []
        nxt: dict[int, int] = {}
        for tp, msgs in batches.items():
            for m in msgs:
                records.append(SourceRecord(tp.partition, m.offset, m.key, m.value))
            if msgs:
                nxt[tp.partition] = msgs[-1].offset + 1
        # Positions can be past the last record (control records, compaction gaps); the
        # subscription state knows, and reading it does not wait when a position is valid.
        # (aiokafka internals: if they change shape, fall back to the records' offsets.)
        with contextlib.suppress(Exception):
            assignment = self._consumer._subscription.subscription.assignment
            for tp in self._tps:
                state = assignment.state_value(tp)
                if state is not None and state.has_valid_position:
                    nxt[tp.partition] = max(nxt.get(tp.partition, 0), int(state.position))
        return SourceBatch(records, nxt)


async def _quiet_stop(consumer: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(consumer.stop(), 10)


# Kafka's topic id (a UUID, new on every re-creation of a topic) is in Metadata responses
# since v10. aiokafka 0.14 speaks Metadata up to v5 only, so this module sends its own v12
# request over aiokafka's connection. If the broker or aiokafka does not cooperate, the epoch
# falls back to the topic name: positions then survive a re-creation of the topic unnoticed,
# which is logged loudly.


def _build_metadata_v12() -> tuple[Any, Any]:
    from aiokafka.protocol.abstract import AbstractType
    from aiokafka.protocol.api import Request, RequestStruct, Response
    from aiokafka.protocol.types import (
        Boolean,
        CompactArray,
        CompactString,
        Int16,
        Int32,
        Schema,
        TaggedFields,
    )

    class Uuid(AbstractType[bytes]):  # type: ignore[misc]
        @classmethod
        def encode(cls, value: bytes) -> bytes:
            return value

        @classmethod
        def decode(cls, data: BytesIO) -> bytes:
            raw = data.read(16)
            if len(raw) != 16:
                raise ValueError("buffer underrun decoding uuid")
            return raw

    class MetadataResponseV12(Response):  # type: ignore[misc]
        API_KEY = 3
        API_VERSION = 12
        SCHEMA = Schema(
            ("throttle_time_ms", Int32),
            (
                "brokers",
                CompactArray(
                    ("node_id", Int32),
                    ("host", CompactString("utf-8")),
                    ("port", Int32),
                    ("rack", CompactString("utf-8")),
                    ("tags", TaggedFields),
                ),
            ),
            ("cluster_id", CompactString("utf-8")),
            ("controller_id", Int32),
            (
                "topics",
                CompactArray(
                    ("error_code", Int16),
                    ("name", CompactString("utf-8")),
                    ("topic_id", Uuid),
                    ("is_internal", Boolean),
                    (
                        "partitions",
                        CompactArray(
                            ("error_code", Int16),
                            ("partition_index", Int32),
                            ("leader_id", Int32),
                            ("leader_epoch", Int32),
                            ("replica_nodes", CompactArray(Int32)),
                            ("isr_nodes", CompactArray(Int32)),
                            ("offline_replicas", CompactArray(Int32)),
                            ("tags", TaggedFields),
                        ),
                    ),
                    ("topic_authorized_operations", Int32),
                    ("tags", TaggedFields),
                ),
            ),
            ("tags", TaggedFields),
        )

    class MetadataRequestV12(RequestStruct):  # type: ignore[misc]
        FLEXIBLE_VERSION = True
        API_KEY = 3
        API_VERSION = 12
        RESPONSE_TYPE = MetadataResponseV12
        SCHEMA = Schema(
            (
                "topics",
                CompactArray(
                    ("topic_id", Uuid),
                    ("name", CompactString("utf-8")),
                    ("tags", TaggedFields),
                ),
            ),
            ("allow_auto_topic_creation", Boolean),
            ("include_topic_authorized_operations", Boolean),
            ("tags", TaggedFields),
        )

    class TopicIdRequest(Request[MetadataRequestV12]):  # type: ignore[misc]
        API_KEY = 3
        _CLASSES: ClassVar[Any] = (MetadataRequestV12,)

        def __init__(self, topic: str) -> None:
            self._topic = topic

        def build(self, request_struct_class: type[MetadataRequestV12]) -> MetadataRequestV12:
            return request_struct_class([(bytes(16), self._topic, {})], False, False, {})

    return TopicIdRequest, MetadataResponseV12


_METADATA_V12: tuple[Any, Any] | None = None


async def _describe_topic(client: Any, topic: str) -> tuple[str, int] | None:
    """``(topic id, partition count)`` of ``topic``; None if the broker or client cannot say.

    Raises SourceUnavailable when the broker is unreachable or the topic does not exist.
    """
    from aiokafka.errors import (
        KafkaConnectionError,
        NodeNotReadyError,
        RequestTimedOutError,
    )

    global _METADATA_V12
    try:
        if _METADATA_V12 is None:
            _METADATA_V12 = _build_metadata_v12()
        node_id = client.get_random_node()
        if node_id is None:
            raise SourceUnavailable("no broker known")
        request = _METADATA_V12[0](topic)
        response = await asyncio.wait_for(client.send(node_id, request), 10)
    except SourceUnavailable:
        raise
    except (
        KafkaConnectionError,
        NodeNotReadyError,
        RequestTimedOutError,
        OSError,
        TimeoutError,
    ) as exc:
        raise SourceUnavailable(f"Kafka unavailable: {type(exc).__name__}") from exc
    except Exception as exc:  # the broker does not speak Metadata v12, or aiokafka changed
        log.debug("Metadata v12 request failed: %s: %s", type(exc).__name__, exc)
        return None
    for t in response.topics:
        error, name, raw_id, partitions = t[0], t[1], t[2], t[4]
        if name != topic:
            continue
        if error == 3:  # UNKNOWN_TOPIC_OR_PARTITION
            raise TopicMissing(f"topic {topic!r} does not exist (yet)")
        if error != 0:
            raise SourceUnavailable(f"metadata error {error} for topic {topic!r}")
        if raw_id == bytes(16):
            return None
        return str(uuid.UUID(bytes=raw_id)), len(partitions)
    raise SourceUnavailable(f"topic {topic!r} missing from the metadata response")


# --- driving a source into the state ------------------------------------------------------


class Follower:
    """Runs a ``RecordSource`` into a ``State`` forever: bootstrap, tail, outages, restarts.

    ``stale`` is true while the source has not been reached for ``stale_after`` seconds (or
    has never been reached); the state keeps being served meanwhile.
    """

    def __init__(
        self,
        source: RecordSource,
        state: State,
        metrics: RelayMetrics,
        *,
        fetch_timeout_ms: int = 200,
        probe_interval: float | None = None,
        stale_after: float = 10.0,
        backoff_max: float = 5.0,
    ) -> None:
        self.source = source
        self.state = state
        self.metrics = metrics
        self.fetch_timeout_ms = fetch_timeout_ms
        # Probe often enough that a healthy idle source never looks stale.
        self.probe_interval = (
            probe_interval if probe_interval is not None else min(1.0, stale_after / 4)
        )
        self.stale_after = stale_after
        self.backoff_max = backoff_max
        self._last_contact: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self._reported_error: str | None = None
        self._session_reached = False
        self.connected = False
        # Evaluated at scrape time, so the gauge is right even while a fetch is hanging.
        metrics.stale.set_function(lambda: 1.0 if self.stale else 0.0)

    @property
    def stale(self) -> bool:
        if self._last_contact is None:
            return True
        return time.monotonic() - self._last_contact > self.stale_after

    def _contact(self) -> None:
        self._last_contact = time.monotonic()
        self.last_error = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="relay-follower")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # Cancel until it is really done: a cancellation can be lost inside library code
            # (asyncio.wait_for on 3.11), and one lost cancel must not hang shutdown.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.source.stop()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            failure: BaseException
            try:
                await self._session()
                continue  # a session only ends by raising
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                # The Kafka client cancels its own futures when a connection dies; that
                # must not end the follower.
                failure = exc
            except Exception as exc:  # SourceUnavailable, or anything the client threw
                failure = exc
            self.connected = False
            error = f"{type(failure).__name__}: {failure}"
            # One warning per distinct failure, not one per retry.
            level = logging.DEBUG if error == self._reported_error else logging.WARNING
            log.log(level, "record source unavailable (%s); retrying", error)
            self.last_error = self._reported_error = error
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self.source.stop()
            # Reset the backoff once a session reached the source, else grow it: a missing
            # topic or an unreachable broker is retried ever more slowly, up to backoff_max.
            if self._session_reached:
                backoff = 0.1
            await asyncio.sleep(backoff)
            if not self._session_reached:
                backoff = min(self.backoff_max, backoff * 2)

    async def _session(self) -> None:
        """One connected period: start, bootstrap/tail until the source looks dead."""
        self.metrics.source_reconnects_total.inc()
        self._session_reached = False
        from_offsets = dict(self.state.next_offsets) if self.state.epoch is not None else {}
        layout = await self.source.start(from_offsets)
        if not self.state.set_layout(layout.epoch, layout.partitions):
            # Re-created topic: positions of the old incarnation mean nothing here.
            await self.source.stop()
            layout = await self.source.start({})
        hw = await self.source.high_watermarks()
        self.state.set_bootstrap_targets(hw)
        self._session_reached = True
        self.connected = True
        self._contact()
        self._reported_error = None
        log.info(
            "reading %d partitions (epoch %s), %d records behind",
            layout.partitions,
            layout.epoch,
            self.state.lag(),
        )
        next_probe = time.monotonic() + self.probe_interval
        while True:
            batch = await self.source.fetch(self.fetch_timeout_ms)
            if batch.records:
                self._contact()
            self.state.apply_batch(batch.records, batch.next_offsets)
            now = time.monotonic()
            if now >= next_probe:
                next_probe = now + self.probe_interval
                try:
                    probe_timeout = max(1.0, self.stale_after / 2)
                    # Identity first: a deleted topic makes the offsets request hang (and
                    # the Kafka client spin on metadata), so notice it before that.
                    describe = getattr(self.source, "layout", None)
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                    # cancellation that lands as the awaited call finishes, and stop() hangs.
                    async with asyncio.timeout(probe_timeout):
                        current = await describe() if describe is not None else layout
                    async with asyncio.timeout(probe_timeout):
                        hw = await self.source.high_watermarks()
                except TopicMissing:
                    # Deleted under our feet: let go of it now; restarts wait with backoff.
                    raise
                except (SourceUnavailable, TimeoutError) as exc:
                    self.connected = False
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    if self.stale:
                        # The client library reconnects by itself, but a fresh client after
                        # a long outage recovers from more failure modes (new broker ids).
                        raise SourceUnavailable(self.last_error) from exc
                    continue
                self.connected = True
                self._contact()
                if current.epoch != layout.epoch:
                    # Deleted and re-created (or repartitioned) under our feet: offsets of
                    # the old incarnation mean nothing now. Restart; start() rebuilds.
                    raise SourceUnavailable(
                        f"topic changed (epoch {layout.epoch} -> {current.epoch})"
                    )
                self.state.observe_high_watermarks(hw)
