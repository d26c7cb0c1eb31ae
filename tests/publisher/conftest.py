"""Fixtures of the publisher tests: stores (Redis and in-memory), a Kafka log, a running app.

``api`` runs every API test on both backend combinations the product ships:
``[redis+kafka]`` (the Redis system of record and the real Kafka topic of the local stack)
and ``[memory]`` (``MemoryStore`` + ``flagstream.memlog.MemoryLog``, the embedded backend
of ``flagstream dev``, no external service).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from embedded_support import embedded_store
from publisher_support import (
    NO_KAFKA,
    PARTITIONS,
    Api,
    ApiFactory,
    forget_memory_log,
    remember_memory_log,
    settings_for,
)

from flagstream.memlog import MemoryLog
from publisher.app import build_app
from publisher.log import KafkaRecordLog, RecordLog
from publisher.memory_store import MemoryStore
from publisher.redis_store import RedisStore
from publisher.store import Store


async def _redis_store(request: pytest.FixtureRequest, *, lean_hot_path: bool) -> RedisStore:
    redis_url: str = request.getfixturevalue("redis_url")
    unique_name: str = request.getfixturevalue("unique_name")
    return RedisStore(redis_url, prefix=f"{unique_name}:", lean_hot_path=lean_hot_path)


async def _close(store: Store) -> None:
    if isinstance(store, RedisStore):
        await store.delete_all()
        await store.close()


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.integration),
        # the Redis store with redis-py for every command (a TLS URL's case)
        pytest.param("redis-py", marks=pytest.mark.integration),
        "memory",
        "sqlite",
    ]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Each store test runs on every Store implementation (same semantics)."""
    if request.param == "sqlite":  # flagstream.embedded (issue 17)
        async with embedded_store(request.getfixturevalue("tmp_path")) as sqlite_store:
            yield sqlite_store
        return
    if request.param == "memory":
        s: Store = MemoryStore()
    else:
        s = await _redis_store(request, lean_hot_path=request.param == "redis")
    try:
        yield s
    finally:
        await _close(s)


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
async def make_api(request: pytest.FixtureRequest, unique_name: str) -> AsyncIterator[ApiFactory]:
    """Build and start publisher apps; everything is torn down after the test.

    Without ``log`` an app writes to a new topic of the local Kafka; pass a ``MemoryLog`` to
    stay in memory (the shared stack is then not needed at all).
    """
    started: list[TestClient[web.Request, web.Application]] = []
    topics: list[str] = []

    async def factory(store: Store, log: RecordLog | None = None, **overrides: Any) -> Api:
        topic = overrides.pop("topic", f"{unique_name}.state")
        if isinstance(log, MemoryLog):
            # Nothing listens there: an app of a memory test that touched Kafka would fail.
            overrides.setdefault("kafka_bootstrap", NO_KAFKA)
            remember_memory_log(topic, log)
            topics.append(topic)
        elif "kafka_bootstrap" not in overrides:
            overrides["kafka_bootstrap"] = request.getfixturevalue("kafka_bootstrap")
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
    for topic in topics:
        forget_memory_log(topic)


@pytest.fixture(
    params=[pytest.param("redis+kafka", marks=pytest.mark.integration), "memory"],
)
async def api(request: pytest.FixtureRequest, make_api: ApiFactory) -> AsyncIterator[Api]:
    """A running publisher on Redis + Kafka, or on the in-memory store and log."""
    if request.param == "memory":
        yield await make_api(MemoryStore(), MemoryLog(PARTITIONS))
        return
    store = await _redis_store(request, lean_hot_path=True)
    try:
        yield await make_api(store)
    finally:
        await _close(store)
