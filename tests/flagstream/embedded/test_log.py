"""The SQLite record log: the publisher's RecordLog side, the relay's RecordSource side, a relay
State fed through the real Follower from it, and what a restart keeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

from embedded_support import embedded

from flagstream.embedded import SQLiteLog, SQLiteSource
from protocol.envelope import Envelope, encode_envelope
from protocol.keys import partition_for, record_key
from publisher.log import RecordLog
from relay.metrics import RelayMetrics
from relay.source import Follower, RecordSource
from relay.state import State


def _as_record_log(log: SQLiteLog) -> RecordLog:
    return log  # mypy checks that SQLiteLog satisfies the publisher's Protocol


def _as_record_source(source: SQLiteSource) -> RecordSource:
    return source  # ... and that its readers satisfy the relay's


def flag_record(env: str, key: str, version: int) -> tuple[bytes, bytes]:
    envelope = Envelope(
        kind="flag",
        env=env,
        key=key,
        version=version,
        published_ms=1,
        actor="test",
        item=b'{"key":"%s","version":%d,"on":true}' % (key.encode(), version),
        deleted=False,
    )
    return record_key(env, "flag", key), encode_envelope(envelope)


async def test_send_appends_in_order_to_the_environments_partition(tmp_path: Path) -> None:
    async with embedded(tmp_path / "d", partitions=4) as backends:
        log = _as_record_log(backends.log)
        await log.start()
        assert await log.partitions() == 4
        for i in range(3):
            await log.send("prod", b"prod/flag/a", b"v%d" % i)
        await log.send("staging", b"staging/flag/a", b"s")
        source = backends.log.source()
        await source.start({})
        batch = await source.fetch(0)
        part = partition_for("prod", 4)
        assert [(r.offset, r.value) for r in batch.records if r.partition == part][:3] == [
            (0, b"v0"),
            (1, b"v1"),
            (2, b"v2"),
        ]
        marks = await source.high_watermarks()
        assert sum(marks.values()) == 4 and marks[part] >= 3
        await log.stop()


async def test_concurrent_sends_keep_the_order_they_were_started_in(tmp_path: Path) -> None:
    async with embedded(tmp_path / "d", partitions=2) as backends:
        await asyncio.gather(*(backends.log.send("e", b"e/flag/k", b"%d" % i) for i in range(40)))
        source = backends.log.source()
        await source.start({})
        batch = await source.fetch(0)
        assert [r.value for r in batch.records] == [b"%d" % i for i in range(40)]


async def test_reader_tails_wakes_on_append_and_clamps_past_the_end(tmp_path: Path) -> None:
    async with embedded(tmp_path / "d", partitions=2) as backends:
        log = backends.log
        source = _as_record_source(log.source())
        await source.start({0: 99})
        assert (await source.fetch(10)).records == []
        waiting = asyncio.ensure_future(source.fetch(10_000))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await log.send("prod", b"prod/flag/a", b"x")
        batch = await asyncio.wait_for(waiting, 5)
        assert [r.value for r in batch.records] == [b"x"]
        part = partition_for("prod", 2)
        assert batch.next_offsets[part] == 1


async def test_fetch_is_sliced_and_never_returns_a_record_twice(tmp_path: Path) -> None:
    from flagstream.embedded import log as log_module

    async with embedded(tmp_path / "d", partitions=1) as backends:
        for i in range(25):
            await backends.log.send("e", b"e/flag/%d" % i, b"%d" % i)
        source = backends.log.source()
        await source.start({})
        saved, log_module.MAX_FETCH_RECORDS = log_module.MAX_FETCH_RECORDS, 10
        try:
            seen = []
            for _ in range(4):
                seen += [r.offset for r in (await source.fetch(0)).records]
        finally:
            log_module.MAX_FETCH_RECORDS = saved
        assert seen == list(range(25))


async def test_restart_keeps_the_epoch_and_offsets_and_compacts(tmp_path: Path) -> None:
    path = tmp_path / "d"
    async with embedded(path, partitions=3) as backends:
        first_layout = backends.log.layout()
        for version in (1, 2, 3):
            await backends.log.send("prod", *flag_record("prod", "a", version))
        await backends.log.send("prod", *flag_record("prod", "b", 1))
    # Reopened with another partition count: the file's layout wins.
    async with embedded(path, partitions=8) as backends:
        assert backends.log.layout() == first_layout
        assert first_layout.partitions == 3
        source = backends.log.source()
        await source.start({})
        batch = await source.fetch(0)
        # a@v1 and a@v2 were compacted away; offsets are unchanged, with a gap.
        assert [r.offset for r in batch.records] == [2, 3]
        part = partition_for("prod", 3)
        assert batch.next_offsets[part] == 4
        await backends.log.send("prod", *flag_record("prod", "a", 4))
        assert (await source.high_watermarks())[part] == 5  # offsets are never reused


async def test_follower_builds_the_state_and_resumes_from_a_compaction_gap(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d"
    async with embedded(path, partitions=2) as backends:
        for version in (1, 2, 3):
            await backends.log.send("prod", *flag_record("prod", "a", version))
        metrics = RelayMetrics()
        state = State(metrics)
        follower = Follower(backends.log.source(), state, metrics, stale_after=5)
        follower.start()
        try:
            await asyncio.wait_for(state.ready_event.wait(), 10)
            await backends.log.send("prod", *flag_record("prod", "a", 4))
            for _ in range(200):
                if state.lag() == 0 and state.consumed(partition_for("prod", 2)) >= 3:
                    break
                await asyncio.sleep(0.01)
            assert state.consumed(partition_for("prod", 2)) >= 3
            assert not follower.stale
        finally:
            await follower.stop()
