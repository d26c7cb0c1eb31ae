"""Transactions sent directly (``publisher.kafka_txn``) against the real Kafka broker: batches
split across requests keep their order and sequence numbers over many transactions, and a
fenced or failed producer is refused from then on."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from test_fencing import read_partition

from protocol.keys import partition_for
from publisher.kafka_txn import DirectTransactions, TransactionError, TransactionFenced
from publisher.log import KafkaRecordLog, LogNotReady, ensure_topic

pytestmark = pytest.mark.integration

ENVS = ["prod", "stage", "dev"]
PARTITIONS = 3


async def test_large_batches_keep_order_and_sequences_over_many_transactions(
    kafka_bootstrap: str, topic: str
) -> None:
    # 32 KB record batches: a 120-record transaction of one partition takes four Produce
    # requests one after the other, each continuing the partition's sequence numbers
    log = KafkaRecordLog(
        kafka_bootstrap,
        topic,
        create_partitions=PARTITIONS,
        request_timeout_ms=10_000,
        max_request_size=64 * 1024,
    )
    await log.start()
    sent: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    try:
        n = 0
        for size in (1, 120, 7, 300, 2):  # lone records and batches of many requests
            batch = []
            for i in range(size):
                env = ENVS[0] if size >= 120 else ENVS[i % len(ENVS)]
                value = b"%06d:" % n + b"x" * 1000
                batch.append((env, f"{env}/flag/f{n % 50}".encode(), value))
                sent[partition_for(env, PARTITIONS)].append(value)
                n += 1
            assert await log.send_batch(batch) == [None] * size
    finally:
        await log.stop()
    for partition, values in sent.items():
        read = [
            v for v, _ in await read_partition(kafka_bootstrap, topic, partition, "read_committed")
        ]
        assert read == values, partition


async def test_a_fenced_producer_is_refused_from_then_on(kafka_bootstrap: str, topic: str) -> None:
    await ensure_topic(
        kafka_bootstrap, topic, partitions=1, replication_factor=1, timeout_ms=10_000
    )
    txn_id = f"{topic}-direct"

    def producer() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            transactional_id=txn_id,
        )

    old, new = producer(), producer()
    await old.start()
    try:
        direct = DirectTransactions(old, topic, request_timeout_ms=5000, max_batch_bytes=1 << 20)
        await direct.commit([(0, [(b"k", b"1"), (b"k", b"2")])])
        await direct.commit([(0, [(b"k", b"3")])])
        await new.start()  # InitProducerId of the same id: the old producer is fenced
        with pytest.raises(TransactionFenced):
            await direct.commit([(0, [(b"k", b"stale")])])
        with pytest.raises(TransactionError, match="started again"):
            await direct.commit([(0, [(b"k", b"stale-again")])])
        fresh = DirectTransactions(new, topic, request_timeout_ms=5000, max_batch_bytes=1 << 20)
        await fresh.commit([(0, [(b"k", b"4")])])
    finally:
        await old.stop()
        await new.stop()
    for isolation in ("read_committed", "read_uncommitted"):
        values = [v for v, _ in await read_partition(kafka_bootstrap, topic, 0, isolation)]
        assert values == [b"1", b"2", b"3", b"4"], isolation


async def test_a_record_larger_than_a_batch_fails_the_batch_and_the_log_stays_down(
    kafka_bootstrap: str, topic: str
) -> None:
    log = KafkaRecordLog(
        kafka_bootstrap, topic, create_partitions=PARTITIONS, max_request_size=16 * 1024
    )
    await log.start()
    try:
        outcome = await log.send_batch(
            [("prod", b"prod/flag/a", b"small"), ("prod", b"prod/flag/b", b"x" * 20_000)]
        )
        assert [type(o) for o in outcome] == [ValueError, ValueError]
        assert not log.ready
        assert isinstance((await log.send_batch([("prod", b"prod/flag/a", b"a")]))[0], LogNotReady)
        await log.start()  # a new producer: sends again, nothing of the failed batch was read
        assert await log.send_batch([("prod", b"prod/flag/a", b"after")]) == [None]
    finally:
        await log.stop()
    part = partition_for("prod", PARTITIONS)
    values = [v for v, _ in await read_partition(kafka_bootstrap, topic, part, "read_uncommitted")]
    assert values == [b"after"]
