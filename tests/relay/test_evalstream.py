"""Evaluated and ping streams over real HTTP (relay/clientside.py rule 5, relay/evalstream.py):
put on connect, patches only where a context's result changed, deletes, catch-up with
Last-Event-ID, ping mode, mobile streams, and the hub's rules for client streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from client_support import (
    CLIENT_ID,
    ENV,
    MOBILE_KEY,
    b64,
    client_relay,
    env_envelope,
    seed,
    targeted,
)
from relay_support import (
    Backend,
    MemoryBackend,
    SSEClient,
    event_data,
    flag,
    item_envelope,
    metric,
    segment,
    wait_until,
)

from flagstream.memlog import MemoryLog
from relay.app import HUB_KEY

ALICE = {"kind": "user", "key": "alice"}
BOB = {"kind": "user", "key": "bob", "email": "bob@example.org"}
CAROL = {"kind": "user", "key": "carol"}


@contextlib.asynccontextmanager
async def stream(
    session: aiohttp.ClientSession,
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: Any = None,
) -> AsyncIterator[SSEClient]:
    response = await session.request(
        method, url, headers=headers, data=data, timeout=aiohttp.ClientTimeout(total=None)
    )
    if response.status != 200:
        body = await response.text()
        response.close()
        raise AssertionError(f"stream refused: {response.status} {body}")
    assert response.headers["Content-Type"].startswith("text/event-stream")
    client = SSEClient(response)
    client.start()
    try:
        yield client
    finally:
        await client.close()


def eval_url(base: str, ctx: dict[str, Any], query: str = "") -> str:
    return f"{base}/eval/{CLIENT_ID}/{b64(ctx)}{query}"


async def send(backend: Backend, kind: str, item: dict[str, Any]) -> None:
    async with backend.producer() as p:
        await p.send(item_envelope(ENV, kind, item))


async def test_put_then_patches_only_where_the_result_changed(backend: Backend) -> None:
    await seed(backend, env_envelope(), flags=[targeted("banner", 1), targeted("other", 1)])
    async with (
        client_relay(backend) as relay,
        aiohttp.ClientSession() as s,
        stream(s, eval_url(relay.url, ALICE)) as alice,
        stream(s, eval_url(relay.url, BOB)) as bob,
        stream(s, eval_url(relay.url, CAROL)) as carol,
    ):
        for client, value in ((alice, False), (bob, False), (carol, True)):
            (put,) = await client.wait_events(1)
            assert put.event == "put" and put.id
            assert event_data(put)["banner"]["value"] is value
        # A new rule serves false to carol only: alice (target) and bob (older rule)
        # keep false; only carol's stream gets a patch.
        rules = targeted("banner", 2)["rules"] + [
            {
                "id": "r2",
                "variation": 1,
                "clauses": [{"attribute": "key", "op": "in", "values": ["carol"]}],
            }
        ]
        await send(backend, "flag", targeted("banner", 2, rules=rules))
        (_, patch) = await carol.wait_events(2)
        assert patch.event == "patch"
        data = event_data(patch)
        assert data["key"] == "banner" and data["value"] is False
        assert (
            data["flagVersion"] == 2
            and data["version"] > event_data(carol.events[0])["banner"]["version"]
        )
        assert patch.id is not None and patch.id != carol.events[0].id
        await relay.app[HUB_KEY].wait_idle()
        await asyncio.sleep(0.2)
        assert [e.event for e in alice.events] == ["put"]
        assert [e.event for e in bob.events] == ["put"]
        assert metric(relay.metrics, "flagstream_relay_client_patches_suppressed_total") == 2
        # Turning the flag off changes alice? No (false already); bob no; carol no.
        # Deleting it sends a delete to everyone.
        await send(backend, "flag", targeted("banner", 3, deleted=True))
        for client in (alice, bob, carol):
            await wait_until(lambda c=client: c.events[-1].event == "delete")
            data = event_data(client.events[-1])
            assert data["key"] == "banner" and data["version"] > 1


async def test_segment_change_and_visibility() -> None:
    backend = MemoryBackend(MemoryLog(3))
    seg_rule = {
        "id": "s",
        "variation": 1,
        "clauses": [{"attribute": "", "op": "segmentMatch", "values": ["beta"]}],
    }
    await seed(backend, env_envelope(), flags=[targeted("banner", 1, rules=[seg_rule])])
    await send(backend, "segment", segment("beta", 1, included=["carol"]))
    async with (
        client_relay(backend) as relay,
        aiohttp.ClientSession() as s,
        stream(s, eval_url(relay.url, BOB)) as bob,
        stream(s, eval_url(relay.url, CAROL)) as carol,
    ):
        (put,) = await carol.wait_events(1)
        assert event_data(put)["banner"]["value"] is False  # in the segment
        await bob.wait_events(1)
        # Bob joins the segment: the flag's version is unchanged, the result changes.
        await send(backend, "segment", segment("beta", 2, included=["carol", "bob"]))
        (_, patch) = await bob.wait_events(2)
        data = event_data(patch)
        assert data["value"] is False and data["flagVersion"] == 1
        assert data["version"] > event_data(bob.events[0])["banner"]["version"]
        # The flag stops being visible to JS: a delete.
        await send(
            backend,
            "flag",
            targeted("banner", 2, rules=[seg_rule], clientSideAvailability={}),
        )
        for client in (bob, carol):
            await wait_until(lambda c=client: c.events[-1].event == "delete")


async def test_last_event_id_resumes_with_only_what_changed(backend: Backend) -> None:
    await seed(backend, env_envelope(), flags=[targeted("banner", 1), targeted("steady", 1)])
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        async with stream(s, eval_url(relay.url, CAROL)) as first:
            (put,) = await first.wait_events(1)
            last_id = first.last_event_id
        assert last_id == put.id
        await send(backend, "flag", targeted("banner", 2, on=False))
        await send(backend, "flag", flag("gone", 1, deleted=True))
        await wait_until(lambda: relay.state.environments[ENV].offset >= 0)
        await asyncio.sleep(0.3)
        async with stream(
            s, eval_url(relay.url, CAROL), headers={"Last-Event-ID": last_id}
        ) as again:
            events = await again.wait_events(2)
            await asyncio.sleep(0.3)
            kinds = [e.event for e in again.events]
            assert "put" not in kinds
            patches = [event_data(e) for e in again.events if e.event == "patch"]
            assert [p["key"] for p in patches] == ["banner"]
            assert patches[0]["value"] is False
            deletes = [event_data(e) for e in again.events if e.event == "delete"]
            assert [d["key"] for d in deletes] == ["gone"]
            assert events[-1].id is not None
        assert metric(relay.metrics, "flagstream_relay_resumptions_total") == 1


async def test_report_stream_mobile_stream_and_ping_streams(backend: Backend) -> None:
    await seed(backend, env_envelope(), flags=[targeted("banner", 1)])
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        json_headers = {"Content-Type": "application/json"}
        mobile = {"Authorization": MOBILE_KEY}
        async with (
            stream(
                s,
                f"{relay.url}/eval/{CLIENT_ID}",
                method="REPORT",
                headers=json_headers,
                data=json.dumps(CAROL),
            ) as report,
            stream(s, f"{relay.url}/meval/{b64(CAROL)}", headers=mobile) as meval,
            stream(
                s,
                f"{relay.url}/meval",
                method="REPORT",
                headers={**mobile, **json_headers},
                data=json.dumps(CAROL),
            ) as meval_report,
            stream(s, f"{relay.url}/ping/{CLIENT_ID}") as ping,
            stream(s, f"{relay.url}/mping", headers=mobile) as mping,
        ):
            for client in (report, meval, meval_report):
                (put,) = await client.wait_events(1)
                assert event_data(put)["banner"]["value"] is True
            for client in (ping, mping):
                (first,) = await client.wait_events(1)
                assert first.event == "ping" and first.data == " "
            await send(backend, "flag", targeted("banner", 2, on=False))
            for client in (report, meval, meval_report):
                (_, patch) = await client.wait_events(2)
                assert event_data(patch)["value"] is False
            for client in (ping, mping):
                (_, again) = await client.wait_events(2)
                assert again.event == "ping"
        m = relay.metrics
        assert (
            metric(
                m,
                "flagstream_relay_client_requests_total",
                {"sdk": "mobile", "request": "stream", "code": "200"},
            )
            == 3
        )


async def test_ping_mode_environment_sends_pings_on_eval() -> None:
    backend = MemoryBackend(MemoryLog(3))
    await seed(backend, env_envelope(mode="ping"), flags=[targeted("banner", 1)])
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        async with stream(s, eval_url(relay.url, CAROL)) as client:
            (first,) = await client.wait_events(1)
            assert first.event == "ping"
            await send(backend, "flag", targeted("banner", 2, on=False))
            (_, second) = await client.wait_events(2)
            assert second.event == "ping"
        stats = relay.app[HUB_KEY].stats()
        assert stats["streams"]["eval"] == 0


async def test_client_streams_follow_the_hub_rules() -> None:
    """max connections → 503 (with CORS), heartbeats, drain closes client streams too."""
    backend = MemoryBackend(MemoryLog(3))
    await seed(backend, env_envelope(), flags=[targeted("banner", 1)])
    async with client_relay(backend, max_connections=2, heartbeat_interval=0.2) as relay:
        async with (
            aiohttp.ClientSession() as s,
            stream(s, eval_url(relay.url, CAROL)) as a,
            stream(s, f"{relay.url}/ping/{CLIENT_ID}") as b,
        ):
            async with s.get(
                eval_url(relay.url, BOB), headers={"Origin": "https://x.example"}
            ) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
                assert r.headers["Access-Control-Allow-Origin"] == "https://x.example"
            await wait_until(lambda: a.comments >= 2 and b.comments >= 2)
            hub = relay.app[HUB_KEY]
            assert hub.stats()["evaluatedContexts"] == 1
            await hub.drain(0)
            await wait_until(lambda: hub.connection_count() == 0)
            assert hub.stats()["evaluatedContexts"] == 0
        m = relay.metrics
        assert metric(m, "flagstream_relay_client_streams", {"sdk": "js", "mode": "evaluated"}) == 0
        assert metric(m, "flagstream_relay_connections_closed_total", {"reason": "drain"}) == 2


async def test_settings_change_closes_client_streams_which_reconnect_under_the_new_ones() -> None:
    backend = MemoryBackend(MemoryLog(3))
    await seed(backend, env_envelope(), flags=[targeted("banner", 1)])
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        sdk_stream = await s.get(
            f"{relay.url}/all",
            headers={"Authorization": "sdk-11111111-2222-3333-4444-555555555555"},
            timeout=aiohttp.ClientTimeout(total=None),
        )
        assert sdk_stream.status == 200
        async with (
            stream(s, eval_url(relay.url, CAROL)) as client,
            stream(s, f"{relay.url}/ping/{CLIENT_ID}") as ping,
        ):
            await client.wait_events(1)
            await ping.wait_events(1)
            # Secure mode turned on (a new environment record): both client streams end.
            async with backend.producer() as p:
                await p.send(env_envelope(version=2, secure_mode=True))
            hub = relay.app[HUB_KEY]
            await wait_until(lambda: hub.stats()["streams"]["eval"] == 0)
            assert hub.stats()["streams"]["ping"] == 0
            assert hub.stats()["streams"]["all"] == 1  # server-side streams are not touched
            assert (
                metric(
                    relay.metrics,
                    "flagstream_relay_connections_closed_total",
                    {"reason": "settings"},
                )
                == 2
            )
            # The SDK's reconnect is judged under the new settings.
            async with s.get(eval_url(relay.url, CAROL)) as r:
                assert r.status == 400
                assert "secure mode" in (await r.json())["detail"]
            # A record with the same client settings (e.g. a key rotation) closes nothing.
            async with stream(s, f"{relay.url}/ping/{CLIENT_ID}") as again:
                await again.wait_events(1)
                async with backend.producer() as p:
                    await p.send(env_envelope(version=3, secure_mode=True))
                await wait_until(lambda: relay.state.credentials.record(ENV).version == 3)  # type: ignore[union-attr]
                await asyncio.sleep(0.2)
                assert hub.stats()["streams"]["ping"] == 1
        sdk_stream.close()


async def test_a_client_stream_that_stops_reading_is_evicted_and_its_group_released() -> None:
    import socket

    backend = MemoryBackend(MemoryLog(3))
    pad = "x" * 20_000
    big = targeted("banner", 1, variations=[pad + "a", pad + "b"])
    await seed(backend, env_envelope(), flags=[big])
    async with client_relay(backend, max_buffer_bytes=64 * 1024) as relay:
        host, port = "127.0.0.1", int(relay.url.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, port))
        path = f"/eval/{CLIENT_ID}/{b64(CAROL)}"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        hub = relay.app[HUB_KEY]
        await wait_until(lambda: hub.stats()["streams"]["eval"] == 1)
        try:
            # Every change flips carol's value: each round queues a ~20 KB patch nobody reads.
            for version in range(2, 200):
                async with backend.producer() as p:
                    await p.send(
                        item_envelope(
                            ENV,
                            "flag",
                            targeted(
                                "banner",
                                version,
                                variations=[pad + "a", pad + "b"],
                                on=version % 2 == 0,
                            ),
                        )
                    )
                # One round per change (a burst would be coalesced into one patch).
                await wait_until(
                    lambda v=version: (
                        relay.state.environments[ENV].items[("flag", "banner")].version == v
                    )
                )
                await hub.wait_idle()
                if metric(
                    relay.metrics,
                    "flagstream_relay_connections_closed_total",
                    {"reason": "evicted"},
                ):
                    break
            assert (
                metric(
                    relay.metrics,
                    "flagstream_relay_connections_closed_total",
                    {"reason": "evicted"},
                )
                == 1
            )
            assert hub.stats()["evaluatedContexts"] == 0
            assert metric(relay.metrics, "flagstream_relay_client_stream_contexts") == 0
        finally:
            sock.close()


async def test_client_streams_end_at_their_lifetime() -> None:
    backend = MemoryBackend(MemoryLog(3))
    await seed(backend, env_envelope(), flags=[targeted("banner", 1)])
    async with (
        client_relay(backend, max_connection_lifetime=0.3, lifetime_jitter=0.5) as relay,
        aiohttp.ClientSession() as s,
    ):
        for url in (eval_url(relay.url, CAROL), f"{relay.url}/ping/{CLIENT_ID}"):
            async with s.get(url) as r:
                assert r.status == 200
                body = await asyncio.wait_for(r.read(), 10)  # a clean end of the body
                assert body.startswith(b"event: ")
        assert (
            metric(
                relay.metrics, "flagstream_relay_connections_closed_total", {"reason": "lifetime"}
            )
            == 2
        )
