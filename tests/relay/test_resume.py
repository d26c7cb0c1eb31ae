"""Resumption across relays (DESIGN.md §4): two relays reading the same log (a real Kafka
topic, and the in-memory log of ``flagstream dev``), SSE clients reconnecting with
``Last-Event-ID``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from relay_support import (
    Backend,
    GatedSource,
    RecordWriter,
    SSEClient,
    env_envelope,
    event_data,
    flag,
    item_envelope,
    metric,
    run_relay,
    segment,
    sse,
    wait_ready,
    wait_until,
)

from protocol.sse import SSEEvent

KEY = "sdk-bbbbbbbb-1111-2222-3333-444444444444"


@pytest.fixture
async def producer(backend: Backend) -> AsyncIterator[RecordWriter]:
    async with backend.producer() as p:
        await p.send(env_envelope("prod", [KEY]))
        await p.send(env_envelope("other", ["sdk-other"]))
        await p.send(item_envelope("prod", "flag", flag("a", 1)))
        await p.send(item_envelope("prod", "flag", flag("b", 1)))
        yield p


def versions_never_go_backwards(events: list[SSEEvent]) -> None:
    """Apply events like an SDK does and check no item's version ever decreases."""
    held: dict[str, int] = {}

    def see(path: str, version: int) -> None:
        assert version >= held.get(path, 0), f"{path} went from {held[path]} to {version}"
        held[path] = version

    for ev in events:
        data = event_data(ev)
        if ev.event == "put":
            for kind in ("flags", "segments"):
                for key, item in data["data"][kind].items():
                    see(f"/{kind}/{key}", item["version"])
        elif ev.event == "patch":
            see(data["path"], data["data"]["version"])
        elif ev.event == "delete":
            see(data["path"], data["version"])


async def test_reconnect_to_another_relay_gets_exactly_the_missed_changes(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    settings = backend.settings()
    async with (
        run_relay(settings, backend.source()) as a,
        run_relay(settings, backend.source()) as b,
    ):
        await wait_ready(a)
        await wait_ready(b)
        assert a.state.epoch == b.state.epoch  # same topic incarnation, same positions
        seen: list[SSEEvent] = []
        async with sse(session, a.url + "/all", KEY) as first:
            await first.wait_events(1)
            await producer.send(item_envelope("prod", "flag", flag("a", 2)))
            await first.wait_events(2)
            seen += first.events
            last_id = first.last_event_id
        assert last_id is not None and [e.event for e in seen] == ["put", "patch"]

        # Missed while disconnected: an update, a delete, a segment, and noise elsewhere.
        _, o1 = await producer.send(item_envelope("prod", "flag", flag("b", 2, on=False)))
        await producer.send(item_envelope("other", "flag", flag("z", 1)))
        _, o2 = await producer.send(item_envelope("prod", "flag", flag("a", 3, deleted=True)))
        _, o3 = await producer.send(item_envelope("prod", "segment", segment("s", 1)))
        await wait_until(lambda: b.state.consumed(b.state.environments["prod"].partition) >= o3)

        async with sse(session, b.url + "/all", KEY, last_event_id=last_id) as second:
            missed = await second.wait_events(3)
            assert [(e.event, e.id) for e in missed] == [
                ("patch", f"{b.state.epoch}:{o1}"),
                ("delete", f"{b.state.epoch}:{o2}"),
                ("patch", f"{b.state.epoch}:{o3}"),
            ]
            assert event_data(missed[0])["data"] == flag("b", 2, on=False)
            assert event_data(missed[1]) == {"path": "/flags/a", "version": 3}
            # And the stream goes on live from there.
            _, o4 = await producer.send(item_envelope("prod", "flag", flag("b", 3)))
            events = await second.wait_events(4)
            assert events[3].id == f"{b.state.epoch}:{o4}"
            await asyncio.sleep(0.2)  # nothing else (no put, no duplicate) follows
            assert len(second.events) == 4
            seen += second.events
        versions_never_go_backwards(seen)
        assert metric(b.metrics, "flagstream_relay_resumptions_total") == 1
        assert metric(b.metrics, "flagstream_relay_full_puts_total") == 0

        # Reconnecting at the head: nothing to send, still no put.
        async with sse(session, a.url + "/all", KEY, last_event_id=events[3].id) as third:
            _, o5 = await producer.send(item_envelope("prod", "flag", flag("a", 4)))
            (only,) = await third.wait_events(1)
            assert only.event == "patch" and only.id == f"{a.state.epoch}:{o5}"
        assert metric(a.metrics, "flagstream_relay_resumptions_total") == 1


async def test_client_ahead_of_the_relay_is_held_until_it_caught_up(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    settings = backend.settings(catchup_wait=30.0)
    gated = GatedSource(backend.source())
    async with run_relay(settings, backend.source()) as a, run_relay(settings, gated) as b:
        await wait_ready(a)
        await wait_ready(b)
        gated.gate.clear()  # b stops consuming: from now on it lags behind a
        await asyncio.sleep(0.3)  # let a fetch already in flight finish
        async with sse(session, a.url + "/all", KEY) as first:
            await first.wait_events(1)
            _, off = await producer.send(item_envelope("prod", "flag", flag("a", 2)))
            await first.wait_events(2)
            ahead = first.last_event_id
        partition = b.state.environments["prod"].partition
        assert b.state.consumed(partition) < off

        # b has not reached the client's position: the request is held, not answered.
        pending = asyncio.ensure_future(
            session.get(
                b.url + "/all",
                headers={"Authorization": KEY, "Last-Event-ID": str(ahead)},
                timeout=aiohttp.ClientTimeout(total=None),
            )
        )
        await wait_until(lambda: metric(b.metrics, "flagstream_relay_catchup_holds_total") == 1, 10)
        await asyncio.sleep(0.3)
        assert not pending.done()

        gated.gate.set()
        response = await asyncio.wait_for(pending, 20)
        client = SSEClient(response)
        client.start()
        try:
            assert response.status == 200
            await asyncio.sleep(0.3)  # the client was at `off`: nothing older, no put
            assert client.events == []
            _, off2 = await producer.send(item_envelope("prod", "flag", flag("a", 3)))
            (ev,) = await client.wait_events(1)
            assert ev.event == "patch" and ev.id == f"{b.state.epoch}:{off2}"
        finally:
            await client.close()
        assert metric(b.metrics, "flagstream_relay_full_puts_total") == 0
        assert metric(b.metrics, "flagstream_relay_resumptions_total") == 1


async def test_client_ahead_gets_503_if_the_relay_does_not_catch_up_in_time(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    settings = backend.settings(catchup_wait=0.5)
    gated = GatedSource(backend.source())
    async with run_relay(settings, gated) as b:
        await wait_ready(b)
        gated.gate.clear()
        await asyncio.sleep(0.3)
        _, off = await producer.send(item_envelope("prod", "flag", flag("a", 2)))
        ahead = f"{b.state.epoch}:{off}"
        async with session.get(
            b.url + "/all", headers={"Authorization": KEY, "Last-Event-ID": ahead}
        ) as r:
            assert r.status == 503
            assert int(r.headers["Retry-After"]) >= 1
            assert "position" in (await r.json())["detail"]
        assert (
            metric(b.metrics, "flagstream_relay_connections_rejected_total", {"reason": "behind"})
            == 1
        )


async def test_unknown_epoch_or_malformed_id_gets_a_full_put(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    ids = ["ffffffffffff:1", "garbage", "", "abc:-7", "0123:99999999999999999999999", None]
    async with run_relay(backend.settings(), backend.source()) as relay:
        await wait_ready(relay)
        for last_event_id in ids:
            async with sse(session, relay.url + "/all", KEY, last_event_id=last_event_id) as s:
                (put,) = await s.wait_events(1)
                assert put.event == "put", last_event_id
                assert set(event_data(put)["data"]["flags"]) == {"a", "b"}
        assert metric(relay.metrics, "flagstream_relay_full_puts_total") == len(ids)
        assert metric(relay.metrics, "flagstream_relay_resumptions_total") == 0


async def test_position_beyond_the_end_of_the_log_gets_a_full_put_after_the_wait(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    """Same epoch but an offset Kafka itself does not have (offsets rewound by an unclean
    failover, or a forged id): waiting cannot help, so after ``catchup_wait`` a full put."""
    settings = backend.settings(catchup_wait=0.5)
    async with run_relay(settings, backend.source()) as relay:
        await wait_ready(relay)
        await wait_until(lambda: relay.state.high_watermarks)
        beyond = f"{relay.state.epoch}:{10**9}"
        async with sse(session, relay.url + "/all", KEY, last_event_id=beyond) as s:
            (put,) = await s.wait_events(1)
            assert put.event == "put"
            assert set(event_data(put)["data"]["flags"]) == {"a", "b"}
        assert metric(relay.metrics, "flagstream_relay_catchup_holds_total") == 1
        assert metric(relay.metrics, "flagstream_relay_full_puts_total") == 1


async def test_recreated_topic_is_a_new_epoch_and_old_positions_get_a_full_put(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    settings = backend.settings(stale_after=1.0)
    async with run_relay(settings, backend.source()) as relay:
        await wait_ready(relay)
        old_epoch = relay.state.epoch
        async with sse(session, relay.url + "/all", KEY) as s:
            (put,) = await s.wait_events(1)
        old_id = put.id
        assert old_id is not None and old_id.startswith(f"{old_epoch}:")

        await backend.recreate()
        async with backend.producer() as p2:
            await p2.send(env_envelope("prod", [KEY]))
            await p2.send(item_envelope("prod", "flag", flag("fresh", 1)))

        def rebuilt() -> bool:
            env = relay.state.environments.get("prod")
            return relay.state.epoch != old_epoch and env is not None and bool(env.items)

        await wait_until(rebuilt, 60)
        async with sse(session, relay.url + "/all", KEY, last_event_id=old_id) as s:
            (put,) = await s.wait_events(1)
            assert put.event == "put" and put.id is not None
            assert put.id.startswith(f"{relay.state.epoch}:")
            assert set(event_data(put)["data"]["flags"]) == {"fresh"}


async def test_recreated_topic_closes_open_streams_and_they_reconnect_to_a_full_put(
    backend: Backend, producer: RecordWriter, session: aiohttp.ClientSession
) -> None:
    """A stream open across the re-creation is closed (clean end of body, reason ``reset``);
    reconnecting with the last id it saw (an old-epoch position) gets a full put."""
    settings = backend.settings(stale_after=1.0)
    async with run_relay(settings, backend.source()) as relay:
        await wait_ready(relay)
        old_epoch = relay.state.epoch
        async with sse(session, relay.url + "/all", KEY) as s:
            (put,) = await s.wait_events(1)
            assert set(event_data(put)["data"]["flags"]) == {"a", "b"}

            await backend.recreate()
            async with backend.producer() as p2:
                await p2.send(env_envelope("prod", [KEY]))
                await p2.send(item_envelope("prod", "flag", flag("fresh", 1)))

            # The relay closes the stream once it adopted the new epoch.
            await wait_until(lambda: s.response.content.at_eof(), 60)
            assert s.response.content.exception() is None  # a clean end, not a reset
            last_id = s.last_event_id
        assert last_id is not None and last_id.startswith(f"{old_epoch}:")
        closed = metric(
            relay.metrics, "flagstream_relay_connections_closed_total", {"reason": "reset"}
        )
        assert closed == 1

        def rebuilt() -> bool:
            env = relay.state.environments.get("prod")
            return relay.state.ready and env is not None and bool(env.items)

        await wait_until(rebuilt, 60)
        assert relay.state.epoch != old_epoch
        async with sse(session, relay.url + "/all", KEY, last_event_id=last_id) as s:
            (put,) = await s.wait_events(1)
            assert put.event == "put" and put.id is not None
            assert put.id.startswith(f"{relay.state.epoch}:")
            assert set(event_data(put)["data"]["flags"]) == {"fresh"}
