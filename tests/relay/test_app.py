"""The relay app over real HTTP on loopback, reading a real Kafka topic of the local stack
and the in-memory log of ``flagstream dev`` (``backend``): streams, polling with ETags, auth,
operations endpoints, readiness, poison records and the bootstrap of a compacted topic with
many environments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from relay_support import (
    Backend,
    GatedSource,
    Producer,
    RecordWriter,
    create_topic,
    env_envelope,
    event_data,
    flag,
    item_envelope,
    metric,
    relay_settings,
    run_relay,
    segment,
    sse,
    wait_ready,
    wait_until,
)

from protocol.keys import partition_for, record_key
from relay.app import FOLLOWER_KEY, HUB_KEY
from relay.hub import Hub
from relay.source import KafkaSource

PARTITIONS = 3
KEY = "sdk-aaaaaaaa-1111-2222-3333-444444444444"


@pytest.fixture
async def producer(backend: Backend) -> AsyncIterator[RecordWriter]:
    async with backend.producer() as p:
        yield p


async def get(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, Any, Any]:
    async with session.get(url, headers=headers) as r:
        body = await r.read()
        return r.status, r.headers, body


async def test_streams_polling_and_auth(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    await producer.send(env_envelope("prod", [KEY]))
    await producer.send(item_envelope("prod", "flag", flag("a", 1)))
    await producer.send(item_envelope("prod", "segment", segment("s", 1, included=["u"])))
    async with run_relay(backend.settings(), backend.source()) as relay:
        await wait_ready(relay)
        base = relay.url

        # Auth: bare key (what SDKs send) and a tolerated Bearer prefix; 401 otherwise.
        status, headers, body = await get(session, base + "/sdk/latest-all", Authorization=KEY)
        assert status == 200
        assert json.loads(body)["flags"]["a"]["version"] == 1
        assert json.loads(body)["segments"]["s"]["included"] == ["u"]
        etag = headers["ETag"]
        status, _, _ = await get(session, base + "/sdk/latest-all", Authorization=f"Bearer {KEY}")
        assert status == 200
        status, headers, body = await get(
            session, base + "/sdk/latest-all", Authorization=KEY, **{"If-None-Match": etag}
        )
        assert status == 304 and headers["ETag"] == etag and body == b""
        for auth in ({"Authorization": "sdk-unknown"}, {}):
            for path in ("/sdk/latest-all", "/all", "/flags"):
                status, headers, body = await get(session, base + path, **auth)
                assert status == 401, path
                assert headers["Content-Type"].startswith("application/problem+json")
                assert json.loads(body)["detail"]

        async with (
            sse(session, base + "/all", KEY) as stream,
            sse(session, base + "/flags", KEY) as legacy,
        ):
            (put,) = await stream.wait_events(1)
            assert put.event == "put"
            assert put.id is not None and put.id.startswith(f"{relay.state.epoch}:")
            data = event_data(put)
            assert data["path"] == "/"
            assert data["data"]["flags"]["a"]["version"] == 1
            assert data["data"]["segments"]["s"]["version"] == 1
            (lput,) = await legacy.wait_events(1)
            assert lput.event == "put" and event_data(lput)["a"]["version"] == 1

            # One at a time: changes of one item that reach the hub together are coalesced
            # (only the newest is sent), and the in-memory log delivers a burst at once.
            _, off2 = await producer.send(item_envelope("prod", "flag", flag("a", 2, on=False)))
            await stream.wait_events(2)
            _, off3 = await producer.send(item_envelope("prod", "flag", flag("a", 3, deleted=True)))
            await stream.wait_events(3)
            _, off4 = await producer.send(item_envelope("prod", "segment", segment("s", 2)))
            events = await stream.wait_events(4)
            assert [(e.event, e.id) for e in events[1:]] == [
                ("patch", f"{relay.state.epoch}:{off2}"),
                ("delete", f"{relay.state.epoch}:{off3}"),
                ("patch", f"{relay.state.epoch}:{off4}"),
            ]
            assert event_data(events[1]) == {
                "path": "/flags/a",
                "data": flag("a", 2, on=False),
            }
            assert event_data(events[2]) == {"path": "/flags/a", "version": 3}
            assert event_data(events[3])["path"] == "/segments/s"
            # The legacy stream carries flags only, with "/KEY" paths.
            levents = await legacy.wait_events(3)
            assert [(e.event, event_data(e)["path"]) for e in levents[1:]] == [
                ("patch", "/a"),
                ("delete", "/a"),
            ]

        # The polling ETag moved with the state; the old one no longer matches.
        status, headers, body = await get(
            session, base + "/sdk/latest-all", Authorization=KEY, **{"If-None-Match": etag}
        )
        assert status == 200 and headers["ETag"] != etag
        assert json.loads(body)["flags"]["a"] == flag("a", 3, deleted=True)
        assert metric(relay.metrics, "flagstream_relay_full_puts_total") == 2
        assert (
            metric(
                relay.metrics,
                "flagstream_relay_connections_rejected_total",
                {"reason": "unauthorized"},
            )
            == 6
        )


async def test_operations_endpoints_and_no_secrets(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    await producer.send(env_envelope("prod", [KEY]))
    await producer.send(item_envelope("prod", "flag", flag("secret-flag-name", 1)))
    async with run_relay(backend.settings(), backend.source()) as relay:
        await wait_ready(relay)
        status, _, body = await get(session, relay.url + "/livez")
        assert status == 200
        status, _, body = await get(session, relay.url + "/readyz")
        assert status == 200
        status, headers, body = await get(session, relay.url + "/status")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        doc = json.loads(body)
        assert doc["status"] == "healthy" and doc["ready"] is True and doc["stale"] is False
        assert doc["environments"] == 1 and doc["epoch"] == relay.state.epoch
        assert doc["positions"]["prod"].startswith(f"{relay.state.epoch}:")
        assert doc["lagRecords"] == 0
        assert KEY.encode() not in body
        # Prometheus text: our metrics, no flag keys, no SDK keys.
        async with session.get(relay.url + "/sdk/latest-all", headers={"Authorization": KEY}):
            pass
        status, headers, body = await get(session, relay.url + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        text = body.decode()
        for name in (
            "flagstream_relay_connections ",
            "flagstream_relay_full_puts_total",
            "flagstream_relay_resumptions_total",
            "flagstream_relay_consumer_lag_records",
            "flagstream_relay_records_skipped_total",
            "flagstream_relay_fanout_delay_seconds_bucket",
            'flagstream_relay_polling_requests_total{code="200"} 1.0',
            "flagstream_relay_ready 1.0",
            "flagstream_relay_stale 0.0",
        ):
            assert name in text, name
        assert "secret-flag-name" not in text and KEY not in text

        # HEAD does not open a stream.
        async with session.head(relay.url + "/all", headers={"Authorization": KEY}) as r:
            assert r.status == 405
        # Draining: not ready for load balancers, and new streams are refused with 503.
        await cast(Hub, relay.app[HUB_KEY]).drain(0)
        status, headers, _ = await get(session, relay.url + "/readyz")
        assert status == 503 and "Retry-After" in headers
        status, headers, _ = await get(session, relay.url + "/all", Authorization=KEY)
        assert status == 503 and "Retry-After" in headers
        assert (
            metric(relay.metrics, "flagstream_relay_connections_rejected_total", {"reason": "full"})
            == 1
        )


async def test_readyz_flips_only_when_the_bootstrap_caught_up(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    await producer.send(env_envelope("prod", [KEY]))
    await producer.send_many(
        item_envelope("prod", "flag", flag(f"f{i}", v)) for v in (1, 2) for i in range(50)
    )
    gated = GatedSource(backend.source())
    gated.gate.clear()
    async with run_relay(backend.settings(), gated) as relay:
        # Connected, watermarks known, nothing consumed: not ready, and SDKs are told to retry.
        await wait_until(lambda: relay.state.high_watermarks)
        for path in ("/readyz", "/all", "/sdk/latest-all"):
            status, headers, _ = await get(session, relay.url + path, Authorization=KEY)
            assert status == 503, path
            assert int(headers["Retry-After"]) >= 1
        status, _, body = await get(session, relay.url + "/status")
        assert json.loads(body)["status"] == "bootstrapping"
        assert json.loads(body)["lagRecords"] == 101
        status, _, _ = await get(session, relay.url + "/livez")
        assert status == 200

        gated.gate.set()
        await wait_until(lambda: relay.state.ready)
        # Ready means everything written before the start was applied.
        env = relay.state.environments["prod"]
        assert len(env.items) == 50
        assert {it.version for it in env.items.values()} == {2}
        status, _, _ = await get(session, relay.url + "/readyz")
        assert status == 200


async def test_poison_record_is_skipped_and_counted(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    await producer.send(env_envelope("prod", [KEY]))
    p = partition_for("prod", PARTITIONS)
    await backend.send_raw(p, record_key("prod", "flag", "x"), b"\x93\xa1not an envelope")
    await backend.send_raw(p, b"no-slashes", b"garbage")
    await producer.send(item_envelope("prod", "flag", flag("after", 1)))
    async with run_relay(backend.settings(), backend.source()) as relay:
        await wait_ready(relay)
        assert metric(relay.metrics, "flagstream_relay_records_skipped_total") == 2
        status, _, body = await get(session, relay.url + "/sdk/latest-all", Authorization=KEY)
        assert status == 200 and list(json.loads(body)["flags"]) == ["after"]
        # A poison record arriving while tailing is skipped too; the relay keeps streaming.
        async with sse(session, relay.url + "/all", KEY) as stream:
            await stream.wait_events(1)
            await backend.send_raw(p, record_key("prod", "flag", "y"), b"\xc1")
            await producer.send(item_envelope("prod", "flag", flag("later", 1)))
            events = await stream.wait_events(2)
            assert event_data(events[1])["path"] == "/flags/later"
        assert metric(relay.metrics, "flagstream_relay_records_skipped_total") == 3


async def test_bootstrap_of_a_compacted_topic_with_many_environments(
    backend: Backend, session: aiohttp.ClientSession
) -> None:
    # Kafka: small segments and an eager cleaner, so compaction can run during the test
    # (the memory log keeps every version, which a compacted topic is allowed to do too).
    log = await backend.fresh(
        {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100"}
    )
    envs = [f"env{i}" for i in range(120)]
    expected: dict[str, dict[str, dict[str, Any]]] = {}
    async with log.producer() as producer:
        await producer.send_many(env_envelope(e, [f"sdk-{e}"]) for e in envs)
        for round_ in (1, 2, 3):
            batch = []
            for e in envs:
                for j in range(4):
                    if round_ == 3 and j == 0:
                        item = flag(f"f{j}", round_, deleted=True)
                    else:
                        item = flag(f"f{j}", round_, on=(round_ + j) % 2 == 0)
                    batch.append(item_envelope(e, "flag", item))
                    expected.setdefault(e, {})[f"f{j}"] = item
            await producer.send_many(batch)
    async with run_relay(log.settings(), log.source()) as relay:
        await wait_ready(relay)
        state = relay.state
        assert sorted(state.environments) == sorted(envs)
        for e in envs:
            body = json.loads(state.environments[e].polling_body())
            assert body == {"flags": expected[e], "segments": {}}, e
        for e in envs[:5]:
            status, _, body = await get(
                session, relay.url + "/sdk/latest-all", Authorization=f"sdk-{e}"
            )
            assert status == 200 and json.loads(body)["flags"] == expected[e]
        assert metric(relay.metrics, "flagstream_relay_records_skipped_total") == 0


async def test_unknown_topic_is_not_ready_until_it_exists(
    kafka_bootstrap: str, unique_name: str, session: aiohttp.ClientSession
) -> None:
    """Kafka only: relays never create the topic (an in-memory log exists from the start)."""
    settings = relay_settings(kafka_bootstrap, unique_name)
    source = KafkaSource(kafka_bootstrap, unique_name, fetch_max_wait_ms=20)
    async with run_relay(settings, source) as relay:
        await wait_until(lambda: relay.app[FOLLOWER_KEY].last_error is not None)
        status, _, _ = await get(session, relay.url + "/readyz")
        assert status == 503
        await create_topic(kafka_bootstrap, unique_name, PARTITIONS)
        async with Producer(kafka_bootstrap, unique_name, PARTITIONS) as producer:
            await producer.send(env_envelope("prod", [KEY]))
        await wait_ready(relay)
        await wait_until(lambda: "prod" in relay.state.environments)
        status, _, _ = await get(session, relay.url + "/readyz")
        assert status == 200
