"""The broker is a real Kafka: idempotent writes, compaction, manual-assignment reads,
and a private broker that survives stop/kill + restart with its data."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest
from stack_support import (
    create_topic,
    end_offsets,
    idempotent_producer,
    read_all,
    read_to_end,
)

from flagstream.stack import cds, kafka_probe, process
from flagstream.stack.jars import ensure_jars
from flagstream.stack.kafka import KafkaBroker, _cluster_id

pytestmark = pytest.mark.integration


async def test_idempotent_producer_and_manual_assignment_read_back_in_order(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, 3, {"cleanup.policy": "compact"})
    producer = idempotent_producer(kafka_bootstrap)
    await producer.start()
    sent: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
    partition_of_key: dict[bytes, int] = {}
    try:
        for i in range(60):
            key = f"env{i % 7}/flag/f{i % 11}".encode()
            value = f"v{i}".encode()
            meta = await producer.send_and_wait(topic, value, key=key)
            sent[meta.partition].append((meta.offset, key, value))
            # The default partitioner is a pure function of the key.
            assert partition_of_key.setdefault(key, meta.partition) == meta.partition
    finally:
        await producer.stop()

    assert set(sent) == {0, 1, 2}, "60 keyed records should spread over all 3 partitions"
    records = await read_all(kafka_bootstrap, topic, 3, expected=60)
    got: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
    for partition, offset, key, value in records:
        got[partition].append((offset, key, value))
    assert dict(got) == dict(sent)  # every record, each partition in the order written


async def test_compaction_keeps_the_latest_value_per_key(
    kafka_bootstrap: str, unique_name: str
) -> None:
    """The stack's cleaner settings make compaction happen within seconds, so tests of
    'a relay reading a compacted log holds the exact state' can observe it."""
    topic = unique_name
    await create_topic(
        kafka_bootstrap,
        topic,
        1,
        {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"},
    )
    producer = idempotent_producer(kafka_bootstrap)
    await producer.start()
    try:
        for i in range(40):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i % 4}".encode())
        deadline = time.monotonic() + 90
        while True:
            # A new record after segment.ms rolls the segment; only closed ones are cleaned.
            await asyncio.sleep(0.3)
            await producer.send_and_wait(topic, b"tick", key=b"tick")
            end = (await end_offsets(kafka_bootstrap, topic, 1))[0]
            # Read to the end offset: a read cut short by a slow broker would look compacted.
            records = await read_to_end(kafka_bootstrap, topic, end)
            if len(records) < end or time.monotonic() > deadline:
                break
    finally:
        await producer.stop()
    assert len(records) < end, "the log cleaner never compacted the topic"
    latest = {key: value for _, _, key, value in records}
    assert {k: latest[k] for k in (b"k0", b"k1", b"k2", b"k3")} == {
        b"k0": b"v36",
        b"k1": b"v37",
        b"k2": b"v38",
        b"k3": b"v39",
    }


def test_probe_lists_the_shared_broker(kafka_bootstrap: str) -> None:
    host, port = kafka_bootstrap.rsplit(":", 1)
    assert kafka_probe.metadata_brokers(host, int(port)) == [(1, host, int(port))]


def test_probe_is_false_where_no_kafka_listens(redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    assert kafka_probe.is_ready("127.0.0.1", port, timeout=1.0) is False  # redis, not kafka


def test_cluster_ids_are_kafka_uuids() -> None:
    for _ in range(200):
        cid = _cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")


def _archive_exists(version: str) -> bool:
    return any(ensure_jars(version).glob("kafka-cds-*.jsa"))


async def _write(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = idempotent_producer(bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def test_private_broker_keeps_its_data_across_stop_and_kill(
    private_kafka: KafkaBroker, unique_name: str
) -> None:
    broker = private_kafka
    first_pid = broker.pid
    assert first_pid is not None and broker.is_ready()
    if cds.enabled() and await asyncio.to_thread(_archive_exists, broker.version):
        cmdline = await asyncio.to_thread(Path(f"/proc/{first_pid}/cmdline").read_bytes)
        assert b"-XX:SharedArchiveFile=" in cmdline
    # start() of a running broker of the same directory reuses it.
    twin = KafkaBroker(broker.data_dir, broker.port, broker.controller_port)
    await asyncio.to_thread(twin.start, 30)
    assert twin.pid == first_pid
    await create_topic(broker.bootstrap, unique_name, 1)
    await _write(broker.bootstrap, unique_name, [b"a", b"b"])

    await asyncio.to_thread(broker.stop)
    assert broker.pid is None and not broker.is_ready()
    assert not kafka_probe.is_ready("127.0.0.1", broker.port, timeout=0.5)

    await asyncio.to_thread(broker.start)
    assert broker.pid not in (None, first_pid)
    await _write(broker.bootstrap, unique_name, [b"c"])

    await asyncio.to_thread(broker.kill)
    assert broker.pid is None
    await asyncio.to_thread(broker.restart)
    records = await read_all(broker.bootstrap, unique_name, 1, expected=3)
    assert [value for *_, value in records] == [b"a", b"b", b"c"]


def test_stop_finds_a_broker_whose_pidfile_was_lost(private_kafka: KafkaBroker) -> None:
    pid = private_kafka.pid
    assert pid is not None
    private_kafka.pidfile.unlink()
    stranger = KafkaBroker(private_kafka.data_dir, private_kafka.port, 1)  # no Popen handle
    assert stranger.pid is None
    stranger.stop()
    assert not process.is_running(pid, [])
