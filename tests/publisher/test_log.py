"""The Kafka ``RecordLog``: topic creation, explicit partitions, order of concurrent sends."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from protocol.keys import partition_for
from publisher.log import KafkaRecordLog, ensure_topic

pytestmark = pytest.mark.integration


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


async def test_concurrent_sends_keep_order_in_the_environment_partition(
    kafka_bootstrap: str, topic: str
) -> None:
    log = KafkaRecordLog(kafka_bootstrap, topic, create_partitions=3)
    await log.start()
    try:
        assert await log.partitions() == 3
        envs = ["prod", "stage", "dev"]
        # started in this order, all at once, interleaving environments
        await asyncio.gather(
            *(
                log.send(envs[i % 3], f"{envs[i % 3]}/flag/k".encode(), str(i).encode())
                for i in range(300)
            )
        )
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
