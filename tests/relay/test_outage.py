"""An outage of the log: the relay keeps serving the last state, reports itself stale,
reconnects by itself and catches up after the restart.

``[kafka]`` stops and restarts a private broker (never the shared stack); ``[memory]`` marks
the in-memory log of ``flagstream dev`` unavailable and back (what the follower sees is the
same: its source raising ``SourceUnavailable``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from relay_support import (
    Backend,
    KafkaBackend,
    MemoryBackend,
    create_topic,
    env_envelope,
    event_data,
    flag,
    item_envelope,
    metric,
    run_relay,
    sse,
    wait_ready,
    wait_until,
)

from flagstream.memlog import MemoryLog
from flagstream.stack.kafka import KafkaBroker
from relay.app import FOLLOWER_KEY

PARTITIONS = 2
KEY = "sdk-dddddddd-1111-2222-3333-444444444444"


async def status(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.get(url + "/status") as r:
        assert r.status == 200
        doc: dict[str, object] = await r.json()
        return doc


@dataclass
class Outage:
    backend: Backend
    stop: Callable[[], Awaitable[None]]
    start: Callable[[], Awaitable[None]]


@pytest.fixture(
    params=[pytest.param("kafka", marks=[pytest.mark.integration, pytest.mark.slow]), "memory"]
)
async def outage(request: pytest.FixtureRequest, unique_name: str) -> Outage:
    if request.param == "memory":
        log = MemoryLog(PARTITIONS)

        async def unavailable() -> None:
            log.available = False

        async def available() -> None:
            log.available = True

        return Outage(MemoryBackend(log), unavailable, available)
    broker: KafkaBroker = request.getfixturevalue("private_kafka")
    await create_topic(broker.bootstrap, unique_name, PARTITIONS)
    return Outage(
        KafkaBackend(broker.bootstrap, unique_name, PARTITIONS),
        lambda: asyncio.to_thread(broker.stop),
        lambda: asyncio.to_thread(broker.start, 240.0),
    )


async def test_serves_stale_state_while_the_log_is_down_and_catches_up_after(
    outage: Outage,
) -> None:
    backend = outage.backend
    async with backend.producer() as producer:
        await producer.send(env_envelope("prod", [KEY]))
        await producer.send(item_envelope("prod", "flag", flag("a", 1)))
    settings = backend.settings(stale_after=1.0, reconnect_backoff_max=0.5)
    async with (
        aiohttp.ClientSession() as session,
        run_relay(settings, backend.source()) as relay,
    ):
        await wait_ready(relay)
        async with sse(session, relay.url + "/all", KEY) as stream:
            await stream.wait_events(1)

            await outage.stop()
            await wait_until(lambda: relay.app[FOLLOWER_KEY].stale, 30)
            doc = await status(session, relay.url)
            assert doc["status"] == "stale" and doc["stale"] is True and doc["ready"] is True
            assert metric(relay.metrics, "flagstream_relay_stale") == 1
            # Still serving: readiness, polling and new streams keep working on the last state.
            async with session.get(relay.url + "/readyz") as r:
                assert r.status == 200
            async with session.get(
                relay.url + "/sdk/latest-all", headers={"Authorization": KEY}
            ) as r:
                assert r.status == 200
                assert json.loads(await r.read())["flags"]["a"]["version"] == 1
            async with sse(session, relay.url + "/all", KEY) as during:
                (put,) = await during.wait_events(1)
                assert event_data(put)["data"]["flags"]["a"]["version"] == 1

            await outage.start()
            async with backend.producer() as producer:
                await producer.send(item_envelope("prod", "flag", flag("a", 2, on=False)))
            # The open stream receives the change made after the outage: no reconnect needed.
            events = await stream.wait_events(2, within=60)
            assert events[1].event == "patch"
            assert event_data(events[1])["data"]["version"] == 2
        await wait_until(lambda: not relay.app[FOLLOWER_KEY].stale, 30)
        doc = await status(session, relay.url)
        assert doc["status"] == "healthy" and doc["stale"] is False
        async with session.get(relay.url + "/metrics") as r:
            assert "flagstream_relay_stale 0.0" in await r.text()
        assert metric(relay.metrics, "flagstream_relay_source_reconnects_total") >= 1
