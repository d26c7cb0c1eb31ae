"""A topic the publisher (re)creates is refilled with the store's whole state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from publisher_support import ApiFactory, read_topic, wait_outbox_empty

from protocol.envelope import decode_envelope
from publisher.auth import Principal
from publisher.log import KafkaRecordLog
from publisher.memory_store import MemoryStore
from publisher.redis_store import RedisStore
from publisher.republish import republish_state
from publisher.service import Publisher
from publisher.store import KafkaRecord

ENV = "/api/v1/environments"


def flag(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "on": True,
        "variations": [True, False],
        "fallthrough": {"variation": 0},
        "offVariation": 1,
    }


async def _topic_exists(bootstrap: str, topic: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return topic in await admin.list_topics()
    finally:
        await admin.close()


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    for _ in range(100):  # deletion completes asynchronously
        if not await _topic_exists(bootstrap, topic):
            return
        await asyncio.sleep(0.1)


@pytest.mark.integration
@pytest.mark.slow
async def test_topic_deleted_at_runtime_is_recreated_with_the_full_state(
    kafka_bootstrap: str,
    redis_store: RedisStore,
    make_api: ApiFactory,
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = f"{unique_name}.state"
    log = KafkaRecordLog(kafka_bootstrap, topic, create_partitions=3, request_timeout_ms=3000)
    api = await make_api(redis_store, log, topic=topic, ack_timeout=1.0)
    assert (await api.call("POST", ENV, {"key": "prod"}))[0] in (201, 202)
    for key in ("f1", "f2", "f3"):
        assert (await api.call("PUT", f"{ENV}/prod/flags/{key}", flag(key)))[0] in (200, 201)
    assert (await api.call("PATCH", f"{ENV}/prod/flags/f1", {"on": False}))[0] == 200
    assert (await api.call("DELETE", f"{ENV}/prod/flags/f3"))[0] == 200  # tombstone, v2
    assert (await api.call("PUT", f"{ENV}/prod/segments/s1", {"key": "s1"}))[0] == 201
    await wait_outbox_empty(api.app, redis_store)

    caplog.set_level(logging.ERROR, logger="aiokafka.cluster")
    await _delete_topic(kafka_bootstrap, topic)
    status, _, _ = await api.call("PATCH", f"{ENV}/prod/flags/f2", {"salt": "new"})
    assert status in (200, 202)  # 202 while the producer notices the topic is gone
    await wait_outbox_empty(api.app, redis_store, seconds=90)

    records = await read_topic(kafka_bootstrap, topic, "prod", expect=6)
    latest: dict[tuple[str, str], tuple[int, bool]] = {}
    for e in records:  # the last record of every key is what a compacted topic keeps
        latest[(e.kind, e.key)] = (e.version, e.deleted)
    assert latest == {
        ("env", "prod"): (1, False),
        ("flag", "f1"): (2, False),
        ("flag", "f2"): (2, False),
        ("flag", "f3"): (2, True),
        ("segment", "s1"): (1, False),
    }
    # bounded logging while the topic was missing (it was ~6,000 lines a second)
    missing = [r for r in caplog.records if "not found in cluster metadata" in r.getMessage()]
    assert len(missing) <= 10


ADMIN_P = Principal(name="admin", token_id=None, scopes=frozenset({"admin"}), environments=None)


class RacingStore(MemoryStore):
    """Commits a write between republish's read of the state and its append (a race)."""

    def __init__(self) -> None:
        super().__init__()
        self.before_first_append: Callable[[], Awaitable[None]] | None = None

    async def outbox_append(self, records: Sequence[KafkaRecord], *, now_ms: int) -> list[str]:
        hook, self.before_first_append = self.before_first_append, None
        if hook is not None:
            await hook()
        return await super().outbox_append(records, now_ms=now_ms)


async def _drain(store: MemoryStore) -> None:
    fence = await store.acquire_lease("t", 10_000)
    assert fence is not None
    await store.outbox_remove([e.id for e in await store.outbox_read(1000)], owner="t", fence=fence)


async def test_republish_appends_the_state_per_environment_and_ends_with_current_versions() -> None:
    store = RacingStore()
    pub = Publisher(store)
    for env in ("prod", "stage"):
        await pub.create_environment({"key": env}, actor=ADMIN_P, comment_header=None)
        await pub.put_item(
            env, "flag", "f1", flag("f1"), if_match=None, actor=ADMIN_P, comment_header=None
        )
    await pub.delete_item("prod", "flag", "f1", if_match=None, actor=ADMIN_P, comment_header=None)
    await pub.put_item(
        "prod", "segment", "s1", {"key": "s1"}, if_match=None, actor=ADMIN_P, comment_header=None
    )
    await _drain(store)

    async def racing_write() -> None:  # f1 of stage moves to v2 after republish read v1
        await pub.patch_item(
            "stage", "flag", "f1", {"on": False}, if_match=None, actor=ADMIN_P, comment_header=None
        )

    store.before_first_append = racing_write
    await republish_state(store)

    entries = [decode_envelope(e.record.value) for e in await store.outbox_read(1000)]
    per_env: dict[str, list[tuple[str, str, int, bool]]] = {}
    for e in entries:
        per_env.setdefault(e.env, []).append((e.kind, e.key, e.version, e.deleted))
    assert per_env["prod"] == [
        ("env", "prod", 1, False),
        ("flag", "f1", 2, True),
        ("segment", "s1", 1, False),
    ]
    # the racing write's own entry, the republished v1, then v2 again: v2 is last
    assert per_env["stage"] == [
        ("flag", "f1", 2, False),
        ("env", "stage", 1, False),
        ("flag", "f1", 1, False),
        ("flag", "f1", 2, False),
    ]


async def test_republish_of_an_empty_store_queues_nothing() -> None:
    store = MemoryStore()
    assert await republish_state(store) == 0
    assert await store.outbox_depth() == 0


async def test_republish_skips_keys_whose_current_version_is_already_queued() -> None:
    store = MemoryStore()
    pub = Publisher(store)
    await pub.create_environment({"key": "prod"}, actor=ADMIN_P, comment_header=None)
    await pub.put_item(
        "prod", "flag", "f1", flag("f1"), if_match=None, actor=ADMIN_P, comment_header=None
    )
    assert await republish_state(store) == 0  # writes made before the topic existed
    assert await store.outbox_depth() == 2


async def test_rate_limit_filter_bounds_the_missing_topic_flood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    KafkaRecordLog("127.0.0.1:9", "t")  # installs the filter on aiokafka's cluster logger
    caplog.set_level(logging.ERROR, logger="aiokafka.cluster")
    logger = logging.getLogger("aiokafka.cluster")
    for _ in range(5000):
        logger.error("Topic %s not found in cluster metadata", "t")
    assert len([r for r in caplog.records if r.name == "aiokafka.cluster"]) <= 1


@pytest.mark.integration
async def test_topic_created_at_start_over_a_non_empty_store_gets_the_state(
    kafka_bootstrap: str, redis_store: RedisStore, make_api: ApiFactory, unique_name: str
) -> None:
    first = await make_api(redis_store, topic=f"{unique_name}.old")
    assert (await first.call("POST", ENV, {"key": "prod"}))[0] == 201
    assert (await first.call("PUT", f"{ENV}/prod/flags/f1", flag("f1")))[0] == 201
    assert (await first.call("PATCH", f"{ENV}/prod/flags/f1", {"on": False}))[0] == 200
    await first.client.close()  # e.g. the publisher restarted against a new, empty cluster

    topic = f"{unique_name}.new"
    second = await make_api(redis_store, topic=topic)
    await wait_outbox_empty(second.app, redis_store)
    for _ in range(100):
        records = await read_topic(kafka_bootstrap, topic, "prod", expect=2)
        if len(records) >= 2:
            break
        await asyncio.sleep(0.1)
    assert [(e.kind, e.key, e.version) for e in records] == [
        ("env", "prod", 1),
        ("flag", "f1", 2),
    ]
