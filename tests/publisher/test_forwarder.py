"""The outbox forwarder under faults: a stopped Kafka broker, several publisher instances."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from publisher_support import Api, ApiFactory, read_topic, wait_outbox_empty

from flagstream.stack.kafka import KafkaBroker
from publisher.app import FORWARDER
from publisher.log import KafkaRecordLog
from publisher.redis_store import RedisStore

pytestmark = pytest.mark.integration

ENV = "/api/v1/environments"
FLAG: dict[str, Any] = {
    "key": "f1",
    "on": True,
    "variations": [True, False],
    "fallthrough": {"variation": 0},
    "offVariation": 1,
}


async def metric(api: Api, name: str) -> float:
    async with api.client.get("/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def first_occurrences(versions: list[int]) -> list[int]:
    seen: list[int] = []
    for v in versions:
        if v not in seen:
            seen.append(v)
    return seen


@pytest.mark.slow
async def test_kafka_down_writes_pending_then_delivered_in_order(
    private_kafka: KafkaBroker, redis_store: RedisStore, make_api: ApiFactory, unique_name: str
) -> None:
    topic = f"{unique_name}.state"
    log = KafkaRecordLog(
        private_kafka.bootstrap, topic, create_partitions=3, request_timeout_ms=3000
    )
    api = await make_api(
        redis_store, log, kafka_bootstrap=private_kafka.bootstrap, topic=topic, ack_timeout=1.0
    )
    status, _, _ = await api.call("POST", ENV, {"key": "prod"})
    assert status in (201, 202)  # 202 if creating the topic on the fresh broker is slow
    status, _, _ = await api.call("PUT", f"{ENV}/prod/flags/f1", FLAG)
    assert status in (201, 202)
    await wait_outbox_empty(api.app, redis_store)

    pending_before = await metric(api, 'flagstream_publisher_writes_total{result="pending"}')
    await asyncio.to_thread(private_kafka.stop)
    for i in range(5):
        status, body, _ = await api.call("PATCH", f"{ENV}/prod/flags/f1", {"salt": f"s{i}"})
        assert status == 202, body
        assert body["delivery"] == "pending" and body["item"]["version"] == i + 2
    status, body, _ = await api.call("PUT", f"{ENV}/prod/segments/s1", {"key": "s1"})
    assert status == 202
    assert await redis_store.outbox_depth() == 6  # durably queued, nothing lost
    status, body, _ = await api.call("GET", f"{ENV}/prod/flags/f1")
    assert body["version"] == 6 and body["salt"] == "s4"  # the store has it
    pending = await metric(api, 'flagstream_publisher_writes_total{result="pending"}')
    assert pending - pending_before == 6

    await asyncio.to_thread(private_kafka.start, 240.0)
    await wait_outbox_empty(api.app, redis_store, seconds=90)

    records = await read_topic(private_kafka.bootstrap, topic, "prod", expect=8)
    flags = [r for r in records if r.kind == "flag"]
    # at-least-once, in order: the first occurrences are 1..6 in order and the log ends
    # with the newest version (what a compacted topic keeps)
    assert first_occurrences([r.version for r in flags]) == [1, 2, 3, 4, 5, 6]
    assert flags[-1].version == 6 and json.loads(flags[-1].item)["salt"] == "s4"
    assert [r.kind for r in records].index("segment") > [r.version for r in flags].index(6)
    assert records[0].kind == "env"

    # Kafka is back: writes are acknowledged again
    status, body, _ = await api.call("PATCH", f"{ENV}/prod/flags/f1", {"on": False})
    assert status == 200 and body["version"] == 7
    assert await metric(api, "flagstream_publisher_kafka_errors_total") > 0


async def test_two_instances_one_forwarder_every_write_acknowledged_once(
    make_api: ApiFactory, redis_url: str, kafka_bootstrap: str, unique_name: str
) -> None:
    stores = [RedisStore(redis_url, prefix=f"{unique_name}:") for _ in range(2)]
    try:
        a = await make_api(stores[0])
        b = await make_api(stores[1])
        status, _, _ = await a.call("POST", ENV, {"key": "prod"})
        assert status == 201
        leaders = [api.app[FORWARDER].is_leader for api in (a, b)]
        assert sorted(leaders) == [False, True]

        statuses = []
        for i in range(6):
            api = (a, b)[i % 2]
            status, _, _ = await api.call("PUT", f"{ENV}/prod/flags/f1", {**FLAG, "salt": str(i)})
            statuses.append(status)
        assert statuses == [201] + [200] * 5  # both instances see their writes acknowledged

        # the leader goes away: the other instance takes over the lease and forwards
        leader, follower = (a, b) if leaders[0] else (b, a)
        await leader.client.close()
        status, _, _ = await follower.call("PATCH", f"{ENV}/prod/flags/f1", {"on": False})
        assert status in (200, 202)
        await wait_outbox_empty(follower.app, follower.store, seconds=30)
        assert follower.app[FORWARDER].is_leader

        records = await read_topic(kafka_bootstrap, a.topic, "prod", expect=8)
        assert [(r.kind, r.version) for r in records] == [("env", 1)] + [
            ("flag", v) for v in range(1, 8)
        ]
    finally:
        await stores[0].delete_all()
        for s in stores:
            await s.close()


@pytest.mark.slow
async def test_publisher_started_while_kafka_is_down_delivers_when_it_comes_up(
    private_kafka: KafkaBroker, redis_store: RedisStore, make_api: ApiFactory, unique_name: str
) -> None:
    await asyncio.to_thread(private_kafka.stop)
    topic = f"{unique_name}.state"
    log = KafkaRecordLog(
        private_kafka.bootstrap, topic, create_partitions=3, request_timeout_ms=2000
    )
    api = await make_api(
        redis_store, log, kafka_bootstrap=private_kafka.bootstrap, topic=topic, ack_timeout=0.5
    )
    status, created, _ = await api.call("POST", ENV, {"key": "prod"})
    assert status == 202 and created["item"]["sdkKey"].startswith("sdk-")
    for i in range(3):
        status, _, _ = await api.call("PUT", f"{ENV}/prod/flags/f1", {**FLAG, "salt": str(i)})
        assert status == 202
    status, body, _ = await api.call("GET", "/readyz", token=None)
    assert status == 200 and body["kafka"] != "ok" and body["outboxDepth"] == 4

    await asyncio.to_thread(private_kafka.start, 240.0)
    await wait_outbox_empty(api.app, redis_store, seconds=90)
    records = await read_topic(private_kafka.bootstrap, topic, "prod", expect=4)
    assert [(r.kind, r.version) for r in records][:1] == [("env", 1)]
    assert first_occurrences([r.version for r in records if r.kind == "flag"]) == [1, 2, 3]


async def test_outbox_depth_metric_follows_the_outbox_while_kafka_is_unreachable_at_start(
    redis_store: RedisStore, make_api: ApiFactory, unique_name: str
) -> None:
    unreachable = "127.0.0.1:1"
    log = KafkaRecordLog(unreachable, f"{unique_name}.state", request_timeout_ms=1000)
    api = await make_api(redis_store, log, kafka_bootstrap=unreachable, ack_timeout=0.5)
    assert (await api.call("POST", ENV, {"key": "prod"}))[0] == 202
    assert (await api.call("PUT", f"{ENV}/prod/flags/f1", FLAG))[0] == 202
    status, body, _ = await api.call("GET", "/readyz", token=None)
    assert status == 200 and body["outboxDepth"] == 2 and body["kafka"] == "unreachable"
    for _ in range(100):  # the forwarder retries with backoff; the gauge follows each attempt
        if await metric(api, "flagstream_publisher_outbox_depth") == 2:
            break
        await asyncio.sleep(0.1)
    assert await metric(api, "flagstream_publisher_outbox_depth") == 2


async def test_readyz_of_a_follower_does_not_claim_kafka_is_unreachable(
    make_api: ApiFactory, redis_url: str, unique_name: str
) -> None:
    stores = [RedisStore(redis_url, prefix=f"{unique_name}:") for _ in range(2)]
    try:
        a = await make_api(stores[0])
        b = await make_api(stores[1])
        assert (await a.call("POST", ENV, {"key": "prod"}))[0] == 201
        follower = b if a.app[FORWARDER].is_leader else a
        leader = a if follower is b else b
        _, body, _ = await follower.call("GET", "/readyz", token=None)
        assert body["forwarderLeader"] is False
        assert body["kafka"] == "not the forwarder leader; kafka state unknown to this instance"
        _, body, _ = await leader.call("GET", "/readyz", token=None)
        assert body["forwarderLeader"] is True and body["kafka"] == "ok"
    finally:
        await stores[0].delete_all()
        for s in stores:
            await s.close()


async def test_impossible_replication_factor_at_runtime_is_logged_as_a_configuration_error(
    kafka_bootstrap: str,
    redis_store: RedisStore,
    make_api: ApiFactory,
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="flagstream.publisher.forwarder")
    log = KafkaRecordLog(kafka_bootstrap, f"{unique_name}.state", replication_factor=3)
    api = await make_api(redis_store, log, ack_timeout=0.5)
    assert (await api.call("POST", ENV, {"key": "prod"}))[0] == 202
    for _ in range(300):  # up to 30 s: the broker answers slowly on a loaded machine
        # The forwarder's own errors: asyncio may log another test's leftovers meanwhile.
        errors = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.ERROR and r.name == "flagstream.publisher.forwarder"
        ]
        if errors:
            break
        await asyncio.sleep(0.1)
    assert errors and "configuration error" in errors[0]
    assert "INVALID_REPLICATION_FACTOR" in errors[0]
    assert "FLAGSTREAM_PUBLISHER_TOPIC_REPLICATION_FACTOR to at most 1" in errors[0]


@pytest.mark.slow
async def test_kafka_down_group_commits_and_bulk_are_202_then_delivered(
    private_kafka: KafkaBroker, redis_store: RedisStore, make_api: ApiFactory, unique_name: str
) -> None:
    """Group commit and bulk keep the 202 contract: committed and queued while Kafka is
    down, every record delivered in commit order once it is back."""
    topic = f"{unique_name}.state"
    log = KafkaRecordLog(
        private_kafka.bootstrap, topic, create_partitions=3, request_timeout_ms=3000
    )
    api = await make_api(
        redis_store, log, kafka_bootstrap=private_kafka.bootstrap, topic=topic, ack_timeout=1.0
    )
    status, _, _ = await api.call("POST", ENV, {"key": "prod"})
    assert status in (201, 202)
    for i in range(10):
        status, _, _ = await api.call("PUT", f"{ENV}/prod/flags/f{i}", {**FLAG, "key": f"f{i}"})
        assert status in (201, 202)
    await wait_outbox_empty(api.app, redis_store)

    await asyncio.to_thread(private_kafka.stop)
    results = await asyncio.gather(
        *(api.call("PATCH", f"{ENV}/prod/flags/f{i}", {"salt": "down"}) for i in range(10))
    )
    assert [r[0] for r in results] == [202] * 10
    assert all(r[1]["delivery"] == "pending" and r[1]["item"]["version"] == 2 for r in results)
    ops = [
        {"op": "patch", "kind": "flag", "key": f"f{i}", "value": {"on": False}} for i in range(10)
    ]
    status, body, _ = await api.call("POST", f"{ENV}/prod/bulk", {"operations": ops})
    assert status == 202 and body["delivery"] == "pending" and body["written"] == 10, body
    assert await redis_store.outbox_depth() == 20  # durably queued, nothing lost

    await asyncio.to_thread(private_kafka.start, 240.0)
    await wait_outbox_empty(api.app, redis_store, seconds=90)
    records = await read_topic(private_kafka.bootstrap, topic, "prod", expect=31)
    for i in range(10):
        versions = [r.version for r in records if r.kind == "flag" and r.key == f"f{i}"]
        assert first_occurrences(versions) == [1, 2, 3] and versions[-1] == 3, (i, versions)
