"""The forwarder's rules without Kafka: pipelined removal, a failed removal, a fenced log,
reading after the group commit in flight.

On the in-memory store and log (the embedded backend's own implementations); Kafka's
fencing itself is tested in ``test_fencing.py`` and by the chaos suite's zombie.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from test_store import env_record

from flagstream.memlog import MemoryLog
from protocol.keys import partition_for
from publisher.forwarder import Forwarder
from publisher.groupcommit import GroupCommitter
from publisher.log import LogFenced
from publisher.memory_store import MemoryStore
from publisher.metrics import PublisherMetrics
from publisher.store import ItemWrite, KafkaRecord, OutboxEntry, StoreUnavailable, WriteOutcome

pytestmark = pytest.mark.unit

ENVS = ["prod", "stage", "dev"]
PARTITIONS = 3


def record(i: int) -> KafkaRecord:
    env = ENVS[i % len(ENVS)]
    return KafkaRecord(env=env, key=f"{env}/flag/f{i % 7}".encode(), value=str(i).encode())


def forwarder(store: MemoryStore, log: object, **options: object) -> Forwarder:
    return Forwarder(
        store,
        log,  # type: ignore[arg-type]
        PublisherMetrics(),
        lease_ttl=2.0,
        batch_size=50,
        idle_poll=0.01,
        backoff_initial=0.01,
        backoff_max=0.05,
        **options,  # type: ignore[arg-type]
    )


async def drained(store: MemoryStore, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while await store.outbox_depth():  # noqa: ASYNC110 - polling the store is the point
            await asyncio.sleep(0.01)


def sent_values(log: MemoryLog) -> dict[int, list[int]]:
    return {p: [int(r.value or b"") for r in log.records(p)] for p in range(PARTITIONS)}


async def append_burst(store: MemoryStore, fwd: Forwarder, burst: int, size: int) -> None:
    """Append the ``burst``-th run of ``size`` records and kick the forwarder."""
    await store.outbox_append(
        [record(i) for i in range(burst * size, (burst + 1) * size)], now_ms=1
    )
    fwd.kick()


def expected(count: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    for i in range(count):
        out[partition_for(ENVS[i % len(ENVS)], PARTITIONS)].append(i)
    return out


async def test_pipelined_removal_sends_every_entry_once_in_order() -> None:
    store, log = MemoryStore(), MemoryLog(PARTITIONS)
    fwd = forwarder(store, log)
    fwd.start()
    try:
        for burst in range(20):  # bursts while batches are in flight and being removed
            await append_burst(store, fwd, burst, 37)
            await asyncio.sleep(0)
        await drained(store)
    finally:
        await fwd.stop()
    assert sent_values(log) == expected(20 * 37)  # no duplicate, no gap, commit order


class FlakyRemoval(MemoryStore):
    """Fails the ``failures`` next removals (Redis went away after the commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    async def outbox_remove(self, ids: list[str], *, owner: str, fence: int) -> int:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("redis is gone")
        return await super().outbox_remove(ids, owner=owner, fence=fence)


async def test_a_failed_removal_sends_again_from_the_oldest_entry_left() -> None:
    store, log = FlakyRemoval(), MemoryLog(PARTITIONS)
    fwd = forwarder(store, log)
    fwd.start()
    try:
        await store.outbox_append([record(i) for i in range(60)], now_ms=1)
        store.failures = 2
        fwd.kick()
        await store.outbox_append([record(i) for i in range(60, 300)], now_ms=1)
        fwd.kick()
        await drained(store)
    finally:
        await fwd.stop()
    want = expected(300)
    for partition, values in sent_values(log).items():
        # at-least-once: duplicates of a failed removal's batch, but every entry, and the
        # last occurrence of each entry in order (so the last record of every key is newest)
        assert set(values) == set(want[partition])
        last = {v: i for i, v in enumerate(values)}
        assert sorted(want[partition], key=last.__getitem__) == want[partition]


class SlowRemoval(MemoryStore):
    """Removals wait at ``gate``; every read is recorded: (after, ids returned)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.reads: list[tuple[str | None, list[str]]] = []

    async def outbox_remove(self, ids: list[str], *, owner: str, fence: int) -> int:
        await self.gate.wait()
        return await super().outbox_remove(ids, owner=owner, fence=fence)

    async def outbox_read(self, count: int, *, after: str | None = None) -> list[OutboxEntry]:
        rows = await super().outbox_read(count, after=after)
        self.reads.append((after, [e.id for e in rows]))
        return rows


async def test_a_read_starts_after_the_last_entry_sent_not_at_pending_removals() -> None:
    store, log = SlowRemoval(), MemoryLog(PARTITIONS)
    fwd = forwarder(store, log)
    fwd.start()
    try:
        for burst in range(5):  # every batch is sent while the removals before it wait
            await append_burst(store, fwd, burst, 30)
            async with asyncio.timeout(5):
                while sum(map(len, sent_values(log).values())) < (burst + 1) * 30:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
        assert await store.outbox_depth() == 150  # nothing removed yet
        store.gate.set()
        await drained(store)
    finally:
        store.gate.set()
        await fwd.stop()
    assert sent_values(log) == expected(150)
    returned = [ids for _, ids in store.reads if ids]
    assert len(returned) == 5 and all(len(ids) == 30 for ids in returned)  # never a pending one
    assert [after for after, ids in store.reads if ids] == [None] + [
        ids[-1] for ids in returned[:-1]
    ]


class FencingMemoryLog(MemoryLog):
    """A ``FencingRecordLog`` on the in-memory log: ``fence()`` is another leader starting."""

    def __init__(self) -> None:
        super().__init__(PARTITIONS)
        self.starts = 0
        self._broken = True
        self.outbox_reads_before_start: list[int] = []

    @property
    def ready(self) -> bool:
        return not self._broken

    async def start(self) -> None:
        self.starts += 1
        self._broken = False

    def fence(self) -> None:
        self._broken = True
        self.fenced_pending = True

    async def send_batch(self, records: Sequence[tuple[str, bytes, bytes]]) -> list[object]:
        if self._broken:
            return [LogFenced("fenced: another publisher started a producer")] * len(records)
        for env, key, value in records:
            await self.send(env, key, value)
        return [None] * len(records)


async def test_a_fenced_log_is_started_again_by_the_leader_before_it_reads() -> None:
    store, log = MemoryStore(), FencingMemoryLog()
    reads: list[int] = []
    read = store.outbox_read

    async def recording_read(count: int, *, after: str | None = None) -> list:  # type: ignore[type-arg]
        reads.append(log.starts)  # which start the read came after
        return await read(count, after=after)

    store.outbox_read = recording_read  # type: ignore[method-assign]
    fwd = forwarder(store, log)
    fwd.start()
    try:
        await store.outbox_append([record(i) for i in range(40)], now_ms=1)
        fwd.kick()
        await drained(store)
        assert log.starts == 1  # the first term started the log once, before reading
        assert reads and min(reads) >= 1
        log.fence()  # another producer of the id started: the next batch is refused
        await store.outbox_append([record(i) for i in range(40, 80)], now_ms=1)
        fwd.kick()
        await drained(store)
    finally:
        await fwd.stop()
    assert log.starts == 2  # started again, by the forwarder, before the next read
    assert sent_values(log) == expected(80)  # the refused batch was sent again, once


class GatedStore(MemoryStore):
    """Item writes wait for ``gate``: a group commit stays in flight until the test opens it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def write_items(self, *args: Any, **kwargs: Any) -> list[WriteOutcome]:
        await self.gate.wait()
        return await super().write_items(*args, **kwargs)


class BatchLog(MemoryLog):
    """The in-memory log with a batch send, as the Kafka log has; keeps each batch's values."""

    def __init__(self) -> None:
        super().__init__(PARTITIONS)
        self.batches: list[list[bytes]] = []

    async def send_batch(self, records: Sequence[tuple[str, bytes, bytes]]) -> list[object]:
        self.batches.append([value for _, _, value in records])
        for env, key, value in records:
            await self.send(env, key, value)
        return [None] * len(records)


@pytest.mark.parametrize("settle", [True, False], ids=["settled-first", "without"])
async def test_a_step_reads_after_the_group_commit_in_flight(settle: bool) -> None:
    store, log = GatedStore(), BatchLog()
    await store.write_environment(
        env_record("prod"), expected_version=0, outbox=record(0), audit=b"{}", now_ms=1
    )
    committer = GroupCommitter(store)
    asked = asyncio.Event()

    async def settled() -> None:
        asked.set()
        await committer.settled()

    fwd = forwarder(store, log, **({"commits_settled": settled} if settle else {}))
    write = ItemWrite(
        "prod", "flag", "k", b"{}", 1, 0, KafkaRecord("prod", b"prod/flag/k", b"1"), b"{}"
    )
    commit = asyncio.create_task(committer.commit(write))
    await asyncio.sleep(0)  # the group commit is in flight, its store call held at the gate
    fwd.start()
    try:
        fwd.kick()  # the environment's record is in the outbox already
        async with asyncio.timeout(5):
            if settle:
                await asked.wait()
                await asyncio.sleep(0.05)  # room to misbehave: nothing may be sent meanwhile
                assert log.batches == []
            else:
                while not log.batches:  # noqa: ASYNC110 - the forwarder's own pace
                    await asyncio.sleep(0.005)
                assert log.batches == [[b"0"]]  # read without waiting: the commit missed it
        store.gate.set()
        assert isinstance(await commit, str)  # committed: its outbox entry id
        fwd.kick()  # what the writer does next
        await drained(store)
    finally:
        await fwd.stop()
    # settled first: the committing write travels with the entry that was waiting
    assert log.batches == ([[b"0", b"1"]] if settle else [[b"0"], [b"1"]])
