"""Shared helpers for the relay tests: records in the real wire format, the log they are
written to (a real Kafka topic, or the in-memory log of ``flagstream dev``), a relay served
over real HTTP on loopback, and an SSE client built on protocol.sse.

The integration tests are written against ``Backend`` (tests/relay/conftest.py parametrizes
the ``backend`` fixture over ``kafka`` and ``memory``), so the same assertions run on Kafka
and on ``flagstream.memlog.MemoryLog``: everything above the log is the same code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from flagstream.memlog import MemoryLog
from flagstream.stack.process import free_port as free_port
from protocol.envelope import Envelope, encode_envelope
from protocol.environment import CredentialHash, EnvironmentRecord, hash_secret
from protocol.keys import partition_for, record_key
from protocol.sse import SSEEvent, SSEParser
from relay.app import STATE_KEY, build_app
from relay.config import RelaySettings
from relay.metrics import RelayMetrics
from relay.source import KafkaSource, RecordSource
from relay.state import SourceRecord, State


def flag(
    key: str, version: int, *, on: bool = True, deleted: bool = False, **extra: Any
) -> dict[str, Any]:
    """A complete LaunchDarkly flag: variations [true, false], fallthrough true, off false."""
    item: dict[str, Any] = {
        "key": key,
        "version": version,
        "on": on,
        "variations": [True, False],
        "fallthrough": {"variation": 0},
        "offVariation": 1,
        "targets": [],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
        "salt": "salt",
        "trackEvents": False,
        "trackEventsFallthrough": False,
        "clientSideAvailability": {"usingMobileKey": False, "usingEnvironmentId": False},
        "deleted": deleted,
    }
    item.update(extra)
    return item


def segment(
    key: str, version: int, *, included: Iterable[str] = (), deleted: bool = False
) -> dict[str, Any]:
    return {
        "key": key,
        "version": version,
        "included": list(included),
        "excluded": [],
        "includedContexts": [],
        "excludedContexts": [],
        "rules": [],
        "salt": "salt",
        "deleted": deleted,
    }


def item_envelope(
    env: str, kind: str, item: Mapping[str, Any], *, published_ms: int | None = None
) -> Envelope:
    return Envelope(
        kind=kind,  # type: ignore[arg-type]
        env=env,
        key=str(item["key"]),
        version=int(item["version"]),
        published_ms=int(time.time() * 1000) if published_ms is None else published_ms,
        actor="test",
        item=json.dumps(item, separators=(",", ":")).encode(),
        deleted=bool(item.get("deleted", False)),
    )


def env_envelope(
    env: str,
    sdk_keys: Iterable[str | tuple[str, int | None]],
    *,
    version: int = 1,
    deleted: bool = False,
) -> Envelope:
    creds = []
    for k in sdk_keys:
        secret, expires = (k, None) if isinstance(k, str) else k
        creds.append(CredentialHash(hash_secret(secret), expires))
    record = EnvironmentRecord(
        key=env,
        name=f"Environment {env}",
        version=version,
        sdk_keys=tuple(creds),
        mobile_keys=(),
        client_side_id="0123456789abcdef01234567",
    )
    return Envelope(
        kind="env",
        env=env,
        key=env,
        version=version,
        published_ms=int(time.time() * 1000),
        actor="test",
        item=record.to_json(),
        deleted=deleted,
    )


class RecordLog:
    """Turns envelopes into SourceRecords with offsets, partitioned like the publisher."""

    def __init__(self, partitions: int = 3) -> None:
        self.partitions = partitions
        self.next: dict[int, int] = dict.fromkeys(range(partitions), 0)

    def record(self, e: Envelope, *, value: bytes | None = None) -> SourceRecord:
        p = partition_for(e.env, self.partitions)
        off = self.next[p]
        self.next[p] = off + 1
        return SourceRecord(
            partition=p,
            offset=off,
            key=record_key(e.env, e.kind, e.key),
            value=encode_envelope(e) if value is None else value,
        )


def new_state(partitions: int = 3, epoch: str = "0123456789ab") -> tuple[State, RelayMetrics]:
    metrics = RelayMetrics()
    state = State(metrics)
    state.set_layout(epoch, partitions)
    return state, metrics


def metric(metrics: RelayMetrics, name: str, labels: Mapping[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, dict(labels or {}))
    return 0.0 if value is None else value


# --- Kafka ---------------------------------------------------------------------------------


async def create_topic(
    bootstrap: str, topic: str, partitions: int = 3, configs: Mapping[str, str] | None = None
) -> None:
    """Create a compacted topic like the publisher does; raise if the broker refuses."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact", **(configs or {})},
                )
            ]
        )
        for entry in response.topic_errors:
            if entry[1] != 0:
                raise RuntimeError(f"create topic {topic}: error {entry[1]} {entry[2:]}")
    finally:
        await admin.close()


class Producer:
    """Writes envelopes to a topic exactly as the publisher does (key, partition, value)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        from aiokafka import AIOKafkaProducer

        self.topic = topic
        self.partitions = partitions
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0
        )

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, e: Envelope, *, value: bytes | None = None) -> tuple[int, int]:
        """Send and wait for the ack; returns (partition, offset)."""
        p = partition_for(e.env, self.partitions)
        meta = await self._producer.send_and_wait(
            self.topic,
            key=record_key(e.env, e.kind, e.key),
            value=encode_envelope(e) if value is None else value,
            partition=p,
        )
        return meta.partition, meta.offset

    async def send_many(self, envelopes: Iterable[Envelope]) -> None:
        futures = []
        for e in envelopes:
            futures.append(
                await self._producer.send(
                    self.topic,
                    key=record_key(e.env, e.kind, e.key),
                    value=encode_envelope(e),
                    partition=partition_for(e.env, self.partitions),
                )
            )
        await asyncio.gather(*futures)


class RecordWriter(Protocol):
    """What the tests write records with: ``Producer`` (Kafka) or ``MemoryProducer``."""

    @property
    def partitions(self) -> int: ...

    async def __aenter__(self) -> RecordWriter: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def send(self, e: Envelope, *, value: bytes | None = None) -> tuple[int, int]:
        """Append and wait until it is durable; returns (partition, offset)."""
        ...

    async def send_many(self, envelopes: Iterable[Envelope]) -> None: ...


class MemoryProducer:
    """``Producer``'s interface over a ``MemoryLog``: same key, partition and value."""

    def __init__(self, log: MemoryLog) -> None:
        self.log = log

    @property
    def partitions(self) -> int:
        return len(self.log.high_watermarks())

    async def __aenter__(self) -> MemoryProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, e: Envelope, *, value: bytes | None = None) -> tuple[int, int]:
        partition = partition_for(e.env, self.partitions)
        offset = self.log.append(
            partition,
            record_key(e.env, e.kind, e.key),
            encode_envelope(e) if value is None else value,
        )
        return partition, offset

    async def send_many(self, envelopes: Iterable[Envelope]) -> None:
        for e in envelopes:
            await self.send(e)


# --- backends: where a test's records live ---------------------------------------------------


class Backend(Protocol):
    """One log for one test, and how to reach it: write records, read them as a relay.

    ``source()`` is a new reader each time (one per relay); every relay of a test reads the
    same log, so positions are comparable across them.
    """

    name: str

    @property
    def partitions(self) -> int: ...

    def settings(self, **overrides: Any) -> RelaySettings:
        """``relay_settings`` for this log (a memory backend points Kafka nowhere)."""
        ...

    def source(self) -> RecordSource: ...

    def producer(self) -> RecordWriter: ...

    async def send_raw(self, partition: int, key: bytes | None, value: bytes | None) -> int:
        """Append raw bytes (e.g. a poison record) to ``partition``; returns the offset."""
        ...

    async def recreate(self) -> None:
        """Delete the log and create it again, empty: a new incarnation (a new epoch)."""
        ...

    async def fresh(self, configs: Mapping[str, str] | None = None) -> Backend:
        """Another, new log of the same kind (Kafka: a topic with these extra configs)."""
        ...


@dataclass
class KafkaBackend:
    """A compacted topic on the shared local Kafka."""

    bootstrap: str
    topic: str
    partitions: int
    name: str = "kafka"

    async def create(self, configs: Mapping[str, str] | None = None) -> KafkaBackend:
        await create_topic(self.bootstrap, self.topic, self.partitions, configs)
        return self

    def settings(self, **overrides: Any) -> RelaySettings:
        return relay_settings(self.bootstrap, self.topic, **overrides)

    def source(self) -> RecordSource:
        return KafkaSource(self.bootstrap, self.topic, fetch_max_wait_ms=20)

    def producer(self) -> RecordWriter:
        return Producer(self.bootstrap, self.topic, self.partitions)

    async def send_raw(self, partition: int, key: bytes | None, value: bytes | None) -> int:
        from aiokafka import AIOKafkaProducer

        raw = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await raw.start()
        try:
            meta = await raw.send_and_wait(self.topic, value, key, partition)
            return int(meta.offset)
        finally:
            await raw.stop()

    async def recreate(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([self.topic])
        finally:
            await admin.close()
        for _ in range(40):  # deletion is asynchronous in the broker
            try:
                await create_topic(self.bootstrap, self.topic, self.partitions)
                return
            except RuntimeError:
                await asyncio.sleep(0.25)
        raise AssertionError(f"topic {self.topic} could not be re-created")

    async def fresh(self, configs: Mapping[str, str] | None = None) -> Backend:
        other = KafkaBackend(self.bootstrap, f"{self.topic}.2", self.partitions)
        return await other.create(configs)


# Nothing listens there: a relay of a memory test that fell back to Kafka never gets ready.
NO_KAFKA = "127.0.0.1:9"


@dataclass
class MemoryBackend:
    """A ``flagstream.memlog.MemoryLog``, what ``flagstream dev`` runs on."""

    log: MemoryLog
    name: str = "memory"

    @property
    def partitions(self) -> int:
        return len(self.log.high_watermarks())

    def settings(self, **overrides: Any) -> RelaySettings:
        return relay_settings(NO_KAFKA, "flagstream.memory", **overrides)

    def source(self) -> RecordSource:
        return self.log.source()

    def producer(self) -> RecordWriter:
        return MemoryProducer(self.log)

    async def send_raw(self, partition: int, key: bytes | None, value: bytes | None) -> int:
        return self.log.append(partition, key, value)

    async def recreate(self) -> None:
        self.log.recreate()

    async def fresh(self, configs: Mapping[str, str] | None = None) -> Backend:
        # Nothing is ever compacted in memory; topic configs have no counterpart.
        return MemoryBackend(MemoryLog(self.partitions))


# --- a relay on loopback ---------------------------------------------------------------------


@dataclass
class RunningRelay:
    url: str
    app: web.Application
    metrics: RelayMetrics
    runner: web.AppRunner

    @property
    def state(self) -> State:
        return self.app[STATE_KEY]


def relay_settings(bootstrap: str, topic: str, **overrides: Any) -> RelaySettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topic": topic,
        "host": "127.0.0.1",
        "port": 0,
        "workers": 1,
        "heartbeat_interval": 1.0,
        "stale_after": 2.0,
        "reconnect_backoff_max": 1.0,
        "catchup_wait": 5.0,
        "retry_after": 1,
    }
    values.update(overrides)
    return RelaySettings(**values)


@contextlib.asynccontextmanager
async def run_relay(
    settings: RelaySettings, source: RecordSource | None = None
) -> AsyncIterator[RunningRelay]:
    """A relay app served by aiohttp on 127.0.0.1 (real HTTP), torn down afterwards."""
    metrics = RelayMetrics()
    if source is None:
        source = KafkaSource(settings.kafka_bootstrap, settings.topic, fetch_max_wait_ms=20)
    app = build_app(settings, source, metrics=metrics)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield RunningRelay(f"http://127.0.0.1:{port}", app, metrics, runner)
    finally:
        await runner.cleanup()


async def wait_until(predicate: Any, within: float = 20.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


async def wait_ready(relay: RunningRelay, within: float = 30.0) -> None:
    await wait_until(lambda: relay.state.ready, within)


# --- an SSE client ---------------------------------------------------------------------------


@dataclass
class SSEClient:
    """Reads one SSE stream in the background; events accumulate in ``events``."""

    response: aiohttp.ClientResponse
    events: list[SSEEvent] = field(default_factory=list)
    comments: int = 0
    _task: asyncio.Task[None] | None = None
    parser: SSEParser = field(default_factory=SSEParser)

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
            async for chunk in self.response.content.iter_any():
                for ev in self.parser.feed(chunk):
                    if isinstance(ev, SSEEvent):
                        self.events.append(ev)
                    else:
                        self.comments += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.response.close()

    @property
    def last_event_id(self) -> str | None:
        return self.parser.last_event_id

    async def wait_events(self, n: int, within: float = 10.0) -> list[SSEEvent]:
        await wait_until(lambda: len(self.events) >= n, within)
        return self.events[:n]


@contextlib.asynccontextmanager
async def sse(
    session: aiohttp.ClientSession,
    url: str,
    sdk_key: str,
    *,
    last_event_id: str | None = None,
) -> AsyncIterator[SSEClient]:
    headers = {"Authorization": sdk_key, "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    response = await session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None))
    if response.status != 200:
        body = await response.text()
        response.close()
        raise AssertionError(f"stream refused: {response.status} {body}")
    client = SSEClient(response)
    client.start()
    try:
        yield client
    finally:
        await client.close()


def event_data(ev: SSEEvent) -> Any:
    return json.loads(ev.data)


class GatedSource:
    """A real ``RecordSource`` (Kafka or memory) whose fetches wait while the gate is closed.

    Lets a test hold a relay at a known point (behind the log) deterministically, with
    the records still coming from the real log.
    """

    def __init__(self, inner: RecordSource) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self._layout: Any = None

    async def start(self, from_offsets: Mapping[int, int]) -> Any:
        self._layout = await self.inner.start(from_offsets)
        return self._layout

    async def stop(self) -> None:
        await self.inner.stop()

    async def high_watermarks(self) -> dict[int, int]:
        return await self.inner.high_watermarks()

    async def layout(self) -> Any:
        # Only a DescribedSource (Kafka) can tell; the others fail fetch on a re-created log.
        describe = getattr(self.inner, "layout", None)
        return self._layout if describe is None else await describe()

    async def fetch(self, timeout_ms: int) -> Any:
        if not self.gate.is_set():
            # Idle like a source with nothing new, so the follower's loop keeps turning.
            await asyncio.sleep(timeout_ms / 1000)
            from relay.source import SourceBatch

            return SourceBatch([], {})
        return await self.inner.fetch(timeout_ms)
