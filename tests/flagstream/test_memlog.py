"""The in-memory log: the publisher's RecordLog side, the relay's RecordSource side, and a
relay State fed through the real Follower from it."""

from __future__ import annotations

import asyncio

import pytest

from flagstream.memlog import LogUnavailable, MemoryLog, MemorySource
from protocol.envelope import Envelope, encode_envelope
from protocol.keys import partition_for, record_key
from publisher.log import RecordLog
from relay.metrics import RelayMetrics
from relay.source import Follower, RecordSource, SourceUnavailable
from relay.state import State

pytestmark = pytest.mark.unit


def _as_record_log(log: MemoryLog) -> RecordLog:
    return log  # mypy checks that MemoryLog satisfies the publisher's Protocol


def _as_record_source(source: MemorySource) -> RecordSource:
    return source  # ... and that its readers satisfy the relay's


async def test_send_appends_to_the_environments_partition_in_order() -> None:
    log = _as_record_log(MemoryLog(partitions=4))
    await log.start()
    assert await log.partitions() == 4
    for i in range(3):
        await log.send("prod", b"prod/flag/a", b"v%d" % i)
    await log.send("staging", b"staging/flag/a", b"s")
    assert isinstance(log, MemoryLog)
    part = partition_for("prod", 4)
    assert [(r.offset, r.value) for r in log.records(part)][:3] == [
        (0, b"v0"),
        (1, b"v1"),
        (2, b"v2"),
    ]
    assert log.records(partition_for("staging", 4))[-1].value == b"s"
    marks = log.high_watermarks()
    assert sum(marks.values()) == 4
    assert marks[part] >= 3
    await log.stop()


async def test_reader_reads_from_the_beginning_then_tails() -> None:
    log = MemoryLog(partitions=2)
    log.append(0, b"k0", b"a")
    log.append(1, b"k1", b"b")
    source = _as_record_source(log.source())
    layout = await source.start({})
    assert layout.partitions == 2
    assert layout.topic_id == log.topic_id
    assert await source.high_watermarks() == {0: 1, 1: 1}
    batch = await source.fetch(0)
    assert sorted((r.partition, r.offset, r.value) for r in batch.records) == [
        (0, 0, b"a"),
        (1, 0, b"b"),
    ]
    assert batch.next_offsets == {0: 1, 1: 1}
    # Nothing new: an empty batch after the timeout, the positions unchanged.
    empty = await source.fetch(10)
    assert empty.records == []
    assert empty.next_offsets == {0: 1, 1: 1}
    await source.stop()


async def test_start_resumes_at_given_offsets_and_clamps_past_the_end() -> None:
    log = MemoryLog(partitions=2)
    for i in range(5):
        log.append(0, b"k", b"%d" % i)
    source = log.source()
    await source.start({0: 3, 1: 99})
    batch = await source.fetch(0)
    assert [r.offset for r in batch.records] == [3, 4]
    assert batch.next_offsets == {0: 5, 1: 0}


async def test_waiting_fetch_wakes_on_append() -> None:
    log = MemoryLog(partitions=3)
    source = log.source()
    await source.start({})
    # A one-minute fetch timeout: only the wakeup can make this finish within the bound.
    fetch = asyncio.create_task(source.fetch(60_000))
    await asyncio.sleep(0)
    assert not fetch.done()
    await log.send("prod", b"prod/flag/x", b"payload")
    batch = await asyncio.wait_for(fetch, 5)
    assert [r.value for r in batch.records] == [b"payload"]


async def test_each_reader_has_its_own_positions() -> None:
    log = MemoryLog(partitions=1)
    log.append(0, b"k", b"a")
    first, second = log.source(), log.source()
    await first.start({})
    await second.start({})
    assert len((await first.fetch(0)).records) == 1
    assert len((await second.fetch(0)).records) == 1
    assert (await first.fetch(0)).records == []


async def test_unavailable_log_fails_sends_and_reads_then_recovers() -> None:
    log = MemoryLog(partitions=1)
    source = log.source()
    await source.start({})
    log.available = False
    with pytest.raises(LogUnavailable):
        await log.send("prod", b"k", b"v")
    with pytest.raises(SourceUnavailable):
        await source.fetch(0)
    with pytest.raises(SourceUnavailable):
        await source.high_watermarks()
    with pytest.raises(SourceUnavailable):
        await log.source().start({})
    log.available = True
    await log.send("prod", b"k", b"v")
    assert [r.value for r in (await source.fetch(0)).records] == [b"v"]


async def test_recreate_changes_the_epoch_and_fails_old_readers() -> None:
    log = MemoryLog(partitions=2)
    source = log.source()
    old = await source.start({})
    log.append(0, b"k", b"v")
    log.recreate()
    with pytest.raises(SourceUnavailable):
        await source.fetch(0)
    new = await source.start({})
    assert new.epoch != old.epoch
    assert (await source.fetch(0)).records == []


def _env_record(env: str, version: int, item: bytes, kind: str = "flag", key: str = "f") -> bytes:
    return encode_envelope(
        Envelope(
            kind=kind,  # type: ignore[arg-type]
            env=env,
            key=key,
            version=version,
            published_ms=1,
            actor="test",
            item=item,
        )
    )


async def test_relay_follower_bootstraps_and_tails_from_the_memory_log() -> None:
    log = MemoryLog(partitions=3)
    item1 = b'{"key":"f","version":1,"on":true}'
    await log.send("prod", record_key("prod", "flag", "f"), _env_record("prod", 1, item1))
    metrics = RelayMetrics()
    state = State(metrics)
    follower = Follower(log.source(), state, metrics, fetch_timeout_ms=50)
    follower.start()
    try:
        await asyncio.wait_for(state.ready_event.wait(), 10)
        environment = state.environments["prod"]
        assert environment.items[("flag", "f")].version == 1
        item2 = b'{"key":"f","version":2,"on":false}'
        await log.send("prod", record_key("prod", "flag", "f"), _env_record("prod", 2, item2))
        for _ in range(500):
            if environment.items[("flag", "f")].version == 2:
                break
            await asyncio.sleep(0.01)
        assert environment.items[("flag", "f")].item == item2
        assert environment.offset == 1
    finally:
        await follower.stop()


async def test_relay_app_serves_records_of_the_memory_producer() -> None:
    """The seam the relay integration tests can be parametrized over (memory_backends)."""
    import aiohttp
    from aiohttp.test_utils import TestServer
    from memory_backends import MemoryProducer

    from protocol.environment import CredentialHash, EnvironmentRecord, hash_secret
    from relay.app import STATE_KEY, build_app
    from relay.config import RelaySettings

    key = "sdk-11111111-2222-3333-4444-555555555555"
    record = EnvironmentRecord(
        key="prod",
        name="prod",
        version=1,
        sdk_keys=(CredentialHash(hash_secret(key), None),),
        mobile_keys=(),
        client_side_id="0123456789abcdef01234567",
    )
    log = MemoryLog(partitions=3)
    async with MemoryProducer(log) as producer:
        await producer.send(
            Envelope(
                kind="env",
                env="prod",
                key="prod",
                version=1,
                published_ms=1,
                actor="t",
                item=record.to_json(),
            )
        )
        partition, offset = await producer.send(
            Envelope(
                kind="flag",
                env="prod",
                key="f",
                version=3,
                published_ms=1,
                actor="t",
                item=b'{"key":"f","version":3,"on":true}',
            )
        )
    assert (partition, offset) == (partition_for("prod", 3), 1)
    app = build_app(RelaySettings(workers=1), log.source())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        await asyncio.wait_for(app[STATE_KEY].ready_event.wait(), 10)
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.make_url("/sdk/latest-all"), headers={"Authorization": key}) as r,
        ):
            assert r.status == 200
            assert (await r.json())["flags"]["f"]["version"] == 3
    finally:
        await server.close()
