"""Small aiokafka helpers for the stack's own tests (topic creation, bounded reads)."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def create_topic(
    bootstrap: str, name: str, partitions: int, configs: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=configs)]
        )
    finally:
        await admin.close()


def idempotent_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)


def _reader(bootstrap: str) -> AIOKafkaConsumer:
    """A consumer without a group that starts from the earliest offset (assign it manually)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def read_all(
    bootstrap: str, topic: str, partitions: int, expected: int, within: float = 60.0
) -> list[tuple[int, int, bytes, bytes]]:
    """``(partition, offset, key, value)`` of records read from the beginning of every
    partition by manual assignment (no consumer group) until ``expected`` were read or
    ``within`` seconds passed (then returns what it has)."""
    consumer = _reader(bootstrap)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        records: list[tuple[int, int, bytes, bytes]] = []
        deadline = time.monotonic() + within
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                records += [(tp.partition, m.offset, m.key, m.value) for m in messages]
        return records
    finally:
        await consumer.stop()


async def read_to_end(
    bootstrap: str, topic: str, end: int, within: float = 60.0
) -> list[tuple[int, int, bytes, bytes]]:
    """Like ``read_all`` for partition 0, but read until the consumer's position reaches
    ``end`` (offsets compaction removed are skipped), so a slow read is never mistaken for a
    compacted log; AssertionError after ``within`` seconds."""
    consumer = _reader(bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[tuple[int, int, bytes, bytes]] = []
        deadline = time.monotonic() + within
        while await consumer.position(tp) < end:
            assert time.monotonic() < deadline, f"{topic}: offset {end} not reached"
            batch = await consumer.getmany(tp, timeout_ms=500)
            records += [(0, m.offset, m.key, m.value) for m in batch.get(tp, [])]
        return records
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()
