"""Fixtures of the publisher tests: stores (Redis and in-memory), a Kafka log, a running app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from publisher_support import PARTITIONS, Api, ApiFactory, settings_for

from publisher.app import build_app
from publisher.log import KafkaRecordLog, RecordLog
from publisher.memory_store import MemoryStore
from publisher.redis_store import RedisStore
from publisher.store import Store


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.integration), "memory"])
async def store(request: pytest.FixtureRequest, unique_name: str) -> AsyncIterator[Store]:
    """Each API test runs on both Store implementations (same semantics)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    redis_url: str = request.getfixturevalue("redis_url")
    s = RedisStore(redis_url, prefix=f"{unique_name}:")
    try:
        yield s
    finally:
        await s.delete_all()
        await s.close()


@pytest.fixture
async def redis_store(redis_url: str, unique_name: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_url, prefix=f"{unique_name}:")
    try:
        yield s
    finally:
        await s.delete_all()
        await s.close()


@pytest.fixture
def topic(unique_name: str) -> str:
    return f"{unique_name}.state"


@pytest.fixture
def kafka_log(kafka_bootstrap: str, topic: str) -> KafkaRecordLog:
    return KafkaRecordLog(kafka_bootstrap, topic, create_partitions=PARTITIONS)


@pytest.fixture
async def make_api(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[ApiFactory]:
    """Build and start publisher apps; everything is torn down after the test."""
    started: list[TestClient[web.Request, web.Application]] = []

    async def factory(store: Store, log: RecordLog | None = None, **overrides: Any) -> Api:
        topic = overrides.pop("topic", f"{unique_name}.state")
        overrides.setdefault("kafka_bootstrap", kafka_bootstrap)
        settings = settings_for(topic=topic, **overrides)
        if log is None:
            log = KafkaRecordLog(settings.kafka_bootstrap, topic, create_partitions=PARTITIONS)
        app = build_app(settings, store, log)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        started.append(client)
        return Api(client, app, store, topic)

    yield factory
    for client in reversed(started):
        await client.close()


@pytest.fixture
async def api(store: Store, make_api: ApiFactory) -> Api:
    return await make_api(store)
