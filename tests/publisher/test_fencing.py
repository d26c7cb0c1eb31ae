"""Fencing on the real Kafka: a publisher whose log was started after another's makes Kafka
refuse and abort whatever the older one still sends; relays read committed records only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from protocol.keys import partition_for
from publisher.log import (
    FencingRecordLog,
    KafkaRecordLog,
    LogFenced,
    LogNotReady,
    default_transactional_id,
)
from relay.source import KafkaSource

pytestmark = pytest.mark.integration

ENV = "prod"


async def read_partition(
    bootstrap: str, topic: str, partition: int, isolation: str
) -> list[tuple[bytes, int]]:
    """Every ``(value, offset)`` of one partition readable at ``isolation``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[tuple[bytes, int]] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=2000)
            out.extend((r.value, r.offset) for r in batch.get(tp, []) if r.value is not None)
        return out
    finally:
        await consumer.stop()


def records(*values: str) -> list[tuple[str, bytes, bytes]]:
    return [(ENV, f"{ENV}/flag/f".encode(), v.encode()) for v in values]


async def test_the_log_started_last_fences_the_one_before(kafka_bootstrap: str, topic: str) -> None:
    old = KafkaRecordLog(kafka_bootstrap, topic, create_partitions=3, request_timeout_ms=5000)
    new = KafkaRecordLog(kafka_bootstrap, topic, create_partitions=3, request_timeout_ms=5000)
    assert isinstance(old, FencingRecordLog)
    assert old.transactional_id == new.transactional_id == default_transactional_id(topic)
    await old.start()
    try:
        assert await old.send_batch(records("1", "2")) == [None, None]
        await new.start()  # the new leader: its InitProducerId fences the old producer
        assert await new.send_batch(records("3")) == [None]
        outcome = await old.send_batch(records("stale"))
        assert isinstance(outcome[0], LogFenced), outcome
        assert "transactional.id" in str(outcome[0])
        assert not old.ready  # never restarts by itself (a start would fence the new one)
        again = await old.send_batch(records("stale-again"))
        assert isinstance(again[0], LogNotReady)
        assert await new.send_batch(records("4")) == [None]
    finally:
        await old.stop()
        await new.stop()
    part = partition_for(ENV, 3)
    for isolation in ("read_committed", "read_uncommitted"):
        values = [v for v, _ in await read_partition(kafka_bootstrap, topic, part, isolation)]
        assert values == [b"1", b"2", b"3", b"4"], (isolation, values)


async def test_an_open_transaction_of_a_deposed_leader_is_aborted_and_never_read(
    kafka_bootstrap: str, topic: str
) -> None:
    """The zombie: a leader's batch is on the broker, uncommitted, when the new leader starts."""
    new = KafkaRecordLog(kafka_bootstrap, topic, create_partitions=3, request_timeout_ms=5000)
    await new.start()  # creates the topic
    zombie = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=default_transactional_id(topic)
    )
    await zombie.start()  # fences ``new``'s first producer, as a leader started later would
    part = partition_for(ENV, 3)
    try:
        await zombie.begin_transaction()
        sent = [
            await zombie.send(topic, key=b"prod/flag/f", value=b"held", partition=part)
            for _ in range(3)
        ]
        await asyncio.gather(*sent)  # on the broker, in the log, not committed
        await new.start()  # the new leader: aborts the zombie's open transaction
        assert await new.send_batch(records("5", "6")) == [None, None]
        with pytest.raises(KafkaError):  # the zombie's commit is refused: fenced
            await zombie.commit_transaction()
    finally:
        await new.stop()
        await zombie.stop()

    committed = await read_partition(kafka_bootstrap, topic, part, "read_committed")
    assert [v for v, _ in committed] == [b"5", b"6"]
    everything = await read_partition(kafka_bootstrap, topic, part, "read_uncommitted")
    assert [v for v, _ in everything] == [b"held"] * 3 + [b"5", b"6"]  # aborted, still there

    # A relay's source reads committed records only, and its bootstrap target (the last
    # stable offset) is reached although markers occupy offsets after the last record.
    source = KafkaSource(kafka_bootstrap, topic)
    await source.start({})
    try:
        targets = await source.high_watermarks()
        seen: list[Any] = []
        positions: dict[int, int] = {}
        for _ in range(50):
            batch = await source.fetch(200)
            seen.extend(batch.records)
            positions.update(batch.next_offsets)
            if all(positions.get(p, 0) >= t for p, t in targets.items()):
                break
        assert all(positions.get(p, 0) >= t for p, t in targets.items()), (positions, targets)
        assert [r.value for r in seen] == [b"5", b"6"]
        assert targets[part] > committed[-1][1] + 1  # a commit marker took an offset
    finally:
        await source.stop()
