"""The Kafka ``RecordLog``: topic creation, explicit partitions, order of concurrent sends."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from protocol.keys import partition_for
from publisher.log import (
    KafkaRecordLog,
    LogNotReady,
    TopicConfigError,
    batch_sender,
    check_topic_config,
    ensure_topic,
)

pytestmark = pytest.mark.integration


class _PlainLog:
    """A RecordLog without send_batch: ``batch_sender`` falls back to pipelined sends."""

    def __init__(self, log: KafkaRecordLog) -> None:
        self._log = log

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions(self) -> int:
        return await self._log.partitions()

    async def send(self, partition_env: str, key: bytes, value: bytes) -> None:
        await self._log.send(partition_env, key, value)


async def test_ensure_topic_creates_a_compacted_topic_once(
    kafka_bootstrap: str, topic: str
) -> None:
    assert await ensure_topic(kafka_bootstrap, topic, partitions=3, replication_factor=1) is True
    assert await ensure_topic(kafka_bootstrap, topic, partitions=5, replication_factor=1) is False
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        assert len(described["partitions"]) == 3  # an existing topic is left as it is
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})]
        )
        configs = {
            entry[0]: entry[1]
            for response in responses
            for resource in response.resources
            for entry in resource[4]
        }
        assert configs["cleanup.policy"] == "compact"
    finally:
        await admin.delete_topics([topic])
        await admin.close()


@pytest.mark.parametrize("how", ["send", "send_batch", "batch_sender"])
async def test_concurrent_sends_keep_order_in_the_environment_partition(
    kafka_bootstrap: str, topic: str, how: str
) -> None:
    log = KafkaRecordLog(kafka_bootstrap, topic, create_partitions=3)
    await log.start()
    try:
        assert await log.partitions() == 3
        envs = ["prod", "stage", "dev"]
        records = [
            (envs[i % 3], f"{envs[i % 3]}/flag/k".encode(), str(i).encode()) for i in range(300)
        ]
        if how == "send":
            # started in this order, all at once, interleaving environments
            await asyncio.gather(*(log.send(*record) for record in records))
        elif how == "send_batch":
            # one batch call, then a second one racing the first: order is still call order
            first, second = await asyncio.gather(
                log.send_batch(records[:150]), log.send_batch(records[150:])
            )
            assert first + second == [None] * 300
        else:
            assert await batch_sender(_PlainLog(log))(records) == [None] * 300
    finally:
        await log.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        for n, env in enumerate(envs):
            tp = TopicPartition(topic, partition_for(env, 3))
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            values: list[int] = []
            while len(values) < 100:
                batch = await consumer.getmany(tp, timeout_ms=2000)
                if not batch:
                    break
                for records in batch.values():
                    values.extend(
                        int(r.value) for r in records if r.key == f"{env}/flag/k".encode()
                    )
            assert values == list(range(n, 300, 3)), env
    finally:
        await consumer.stop()


async def test_impossible_replication_factor_is_a_named_configuration_error(
    kafka_bootstrap: str, topic: str
) -> None:
    with pytest.raises(TopicConfigError) as caught:
        await ensure_topic(kafka_bootstrap, topic, partitions=1, replication_factor=3)
    message = str(caught.value)
    assert "INVALID_REPLICATION_FACTOR" in message
    assert "FLAGSTREAM_PUBLISHER_TOPIC_REPLICATION_FACTOR" in message
    assert "1 broker(s)" in message and "at most 1" in message
    with pytest.raises(TopicConfigError, match="INVALID_REPLICATION_FACTOR"):
        await check_topic_config(kafka_bootstrap, topic, replication_factor=3)
    await check_topic_config(kafka_bootstrap, topic, replication_factor=1)  # fine
    await check_topic_config("127.0.0.1:1", topic, replication_factor=3, timeout_ms=500)


async def test_send_batch_reports_each_failure_instead_of_raising(topic: str) -> None:
    log = KafkaRecordLog("127.0.0.1:9", topic, request_timeout_ms=1000)  # nothing listens
    with pytest.raises(Exception):  # noqa: B017 - whatever aiokafka raises for a refused connect
        await log.start()
    assert not log.ready
    # Never (re)connects by itself: a start fences the other publishers, only the forwarder
    # holding the lease may do it. Every record of the batch gets the failure, at once.
    results = await asyncio.wait_for(
        log.send_batch([("prod", b"prod/flag/a", b"1"), ("prod", b"prod/flag/b", b"2")]), 0.5
    )
    assert len(results) == 2 and all(isinstance(r, LogNotReady) for r in results)
    await log.stop()
