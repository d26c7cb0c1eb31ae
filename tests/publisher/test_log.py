"""The Kafka ``RecordLog``: topic creation, explicit partitions, order of concurrent sends."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from protocol.keys import partition_for
from publisher.log import KafkaRecordLog, TopicConfigError, check_topic_config, ensure_topic

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
