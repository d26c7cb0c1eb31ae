"""``relay.source.KafkaSource`` against the real local Kafka: a topic deleted under a running
relay does not flood the log, and a failed start leaves no unclosed Kafka consumer behind."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from relay_support import create_topic, relay_settings, run_relay, wait_until

from relay.app import FOLLOWER_KEY
from relay.source import KafkaSource, SourceUnavailable, TopicMissing


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def delete_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def test_a_deleted_topic_does_not_flood_the_log(
    kafka_bootstrap: str, unique_name: str
) -> None:
    """QA saw ~33,000 ``Topic X not found in cluster metadata`` ERROR lines in 6 s."""
    await create_topic(kafka_bootstrap, unique_name, partitions=3)
    captured = Records()
    root = logging.getLogger()
    root.addHandler(captured)
    try:
        async with run_relay(relay_settings(kafka_bootstrap, unique_name)) as relay:
            await wait_until(lambda: relay.state.ready, 30)
            await delete_topic(kafka_bootstrap, unique_name)
            captured.records.clear()
            await asyncio.sleep(5)
            follower = relay.app[FOLLOWER_KEY]
            assert follower.last_error is not None and "TopicMissing" in follower.last_error
    finally:
        root.removeHandler(captured)
    missing = [r for r in captured.records if "not found in cluster metadata" in r.getMessage()]
    errors = [r for r in captured.records if r.levelno >= logging.WARNING]
    assert len(missing) <= 2, len(missing)
    assert len(errors) <= 6, [r.getMessage() for r in errors]


def catch_unclosed() -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    return reports


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:1", "http://x:y"])
async def test_a_failed_start_closes_its_consumer(bootstrap: str) -> None:
    """No ``Unclosed AIOKafkaConsumer`` after a start that failed (KafkaSource is also used
    directly, so it must cope with an address the settings would refuse)."""
    reports = catch_unclosed()
    source = KafkaSource(bootstrap, "t-nothing-here")
    for _ in range(2):
        with pytest.raises(SourceUnavailable):
            await source.start({})
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in reports if "Unclosed" in str(r.get("message"))], reports


async def test_a_start_cancelled_midway_closes_its_consumer() -> None:
    """A relay stopped while its source is connecting (a broker that accepts but never
    answers) leaves no consumer behind either."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reports = catch_unclosed()
    try:
        source = KafkaSource(f"127.0.0.1:{port}", "t-nothing-here", request_timeout_ms=30_000)
        task = asyncio.create_task(source.start({}))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del task
        gc.collect()
        await asyncio.sleep(0)
    finally:
        server.close()
    assert not [r for r in reports if "Unclosed" in str(r.get("message"))], reports


async def test_a_missing_topic_is_reported_as_such(kafka_bootstrap: str, unique_name: str) -> None:
    source = KafkaSource(kafka_bootstrap, unique_name)
    with pytest.raises(TopicMissing):
        await source.start({})
    await source.stop()
