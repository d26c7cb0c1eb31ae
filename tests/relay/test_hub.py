"""The hub over real HTTP on loopback: encode once, coalescing, bounds, hygiene, drain.

Each test runs a tiny aiohttp app whose handler calls ``Hub.serve_stream`` the way the relay
app does, and reads the stream with a raw socket client (so a test can stop reading).
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest
from aiohttp import web

from loadtest.httpreader import HTTPReaderError, ResponseReader
from protocol.sse import SSEComment, SSEEvent, SSEParser
from relay.config import RelaySettings
from relay.hub import Hub
from relay.metrics import RelayMetrics
from relay.state import Change

INITIAL = b'event: put\nid: e0:0\ndata: {"path":"/","data":{"flags":{},"segments":{}}}\n\n'


def change(
    key: str,
    version: int,
    offset: int,
    *,
    env: str = "env-a",
    kind: str = "flag",
    deleted: bool = False,
    item: bytes | None = None,
) -> Change:
    body = item if item is not None else b'{"key":"%s","version":%d}' % (key.encode(), version)
    return Change(
        env=env,
        kind=kind,  # type: ignore[arg-type]
        key=key,
        version=version,
        deleted=deleted,
        item=body,
        offset=offset,
        published_ms=0,
        position=f"e0:{offset}",
    )


class StreamClient:
    """A raw-socket SSE client: HTTP/1.1 (chunked) or 1.0 (raw), read at our own pace."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = ResponseReader()
        self.sse = SSEParser()
        self.items: list[SSEEvent | SSEComment] = []
        self.eof = False
        self.cut = False

    @classmethod
    async def open(
        cls,
        port: int,
        path: str = "/all",
        *,
        rcvbuf: int | None = None,
        http10: bool = False,
        extra_headers: str = "",
    ) -> StreamClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(
            sock=sock, limit=rcvbuf if rcvbuf is not None else 2**16
        )
        version = "1.0" if http10 else "1.1"
        writer.write(
            f"GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n{extra_headers}\r\n".encode()
        )
        return cls(reader, writer)

    async def _pump(self, within: float) -> bool:
        """Read once; False at EOF."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), within)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            try:
                self.http.eof()
            except HTTPReaderError:
                self.cut = True  # closed mid-body (abort), not a clean end of stream
            return False
        for piece in self.http.feed(data):
            self.items.extend(self.sse.feed(piece))
        if self.http.done:
            self.eof = True
            return False
        return True

    async def head(self, within: float = 5.0) -> int:
        async with asyncio.timeout(within):
            while self.http.status is None and not self.eof:
                await self._pump(within)
        assert self.http.status is not None, "no response head"
        return self.http.status

    async def until(
        self, predicate: Callable[[list[SSEEvent | SSEComment]], bool], within: float = 5.0
    ) -> list[SSEEvent | SSEComment]:
        async with asyncio.timeout(within):
            while not predicate(self.items):
                if not await self._pump(within):
                    break
        return self.items

    async def until_eof(self, within: float = 5.0) -> list[SSEEvent | SSEComment]:
        async with asyncio.timeout(within):
            while await self._pump(within):
                pass
        return self.items

    def events(self) -> list[SSEEvent]:
        return [i for i in self.items if isinstance(i, SSEEvent)]

    def close(self) -> None:
        self.writer.close()


def events_of(items: list[SSEEvent | SSEComment], name: str | None = None) -> list[SSEEvent]:
    return [i for i in items if isinstance(i, SSEEvent) and (name is None or i.event == name)]


def sample(metrics: RelayMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value("flagstream_relay_" + name, labels or None)
    return 0.0 if value is None else value


@pytest.fixture(params=[False, True], ids=["attached", "detached"])
def detach(request: pytest.FixtureRequest) -> bool:
    """Every hub test runs with streams attached to aiohttp and detached from it."""
    return bool(request.param)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def running_hub(
    detach: bool,
    before_stream: Callable[[Hub, web.Request], None] | None = None,
    *,
    slow_prepare: bool = False,
    **overrides: Any,
) -> AsyncIterator[tuple[Hub, RelayMetrics, int]]:
    """A hub behind ``/all`` and ``/flags`` on a free loopback port."""
    settings = RelaySettings(**{"heartbeat_interval": 60.0, **overrides})
    metrics = RelayMetrics()
    hub = Hub(settings, metrics)
    hub.detach = detach

    async def stream(request: web.Request) -> web.StreamResponse:
        if not hub.can_accept():
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "2"})
        if before_stream is not None:
            before_stream(hub, request)
        kind: Literal["all", "flags"] = "flags" if request.path == "/flags" else "all"
        start = int(request.query.get("start", "0"))
        env = request.query.get("env", "env-a")
        return await hub.serve_stream(
            request, env=env, stream=kind, initial=INITIAL, start_offset=start
        )

    app = web.Application()
    app.router.add_get("/all", stream)
    app.router.add_get("/flags", stream)
    if slow_prepare:

        async def slow(request: web.Request, response: web.StreamResponse) -> None:
            await asyncio.sleep(0.1)  # the loop runs on while the headers are prepared

        app.on_response_prepare.append(slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield hub, metrics, port
    finally:
        await hub.drain(0)
        await runner.cleanup()


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll a condition of the hub or its metrics (they signal no event to wait on)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_change_reaches_every_stream_once_encoded(detach: bool) -> None:
    async with running_hub(detach) as (hub, metrics, port):
        clients = [await StreamClient.open(port) for _ in range(5)]
        legacy = await StreamClient.open(port, "/flags")
        http10 = await StreamClient.open(port, http10=True)
        for c in [*clients, legacy, http10]:
            assert await c.head() == 200
            assert c.http.headers["content-type"].startswith("text/event-stream")
        await wait_for(lambda: hub.connection_count() == 7)

        hub.publish(change("f1", 2, offset=10))
        hub.publish(change("s1", 3, offset=11, kind="segment"))
        hub.publish(change("f2", 4, offset=12, deleted=True))

        for c in [*clients, http10]:
            items = await c.until(lambda i: len(events_of(i)) >= 4)
            put, patch_f, patch_s, delete = events_of(items)
            assert put.event == "put"
            assert (patch_f.event, patch_f.id) == ("patch", "e0:10")
            assert patch_f.data == '{"path":"/flags/f1","data":{"key":"f1","version":2}}'
            assert patch_s.data == '{"path":"/segments/s1","data":{"key":"s1","version":3}}'
            assert (delete.event, delete.data) == ("delete", '{"path":"/flags/f2","version":4}')
        assert clients[0].http.headers.get("transfer-encoding") == "chunked"
        assert "transfer-encoding" not in http10.http.headers

        items = await legacy.until(lambda i: len(events_of(i)) >= 3)
        _, patch, delete = events_of(items)
        assert patch.data == '{"path":"/f1","data":{"key":"f1","version":2}}'
        assert delete.data == '{"path":"/f2","version":4}'
        await asyncio.sleep(0.05)
        assert len(events_of(legacy.items)) == 3  # the segment never goes to /flags

        # 6 x 3 events on /all streams + 2 on the legacy one.
        assert sample(metrics, "events_sent_total") == 6 * 3 + 2
        assert sample(metrics, "connections_opened_total") == 7
        for c in [*clients, legacy, http10]:
            c.close()


async def test_changes_in_the_initial_payload_are_not_resent(detach: bool) -> None:
    def publish_then_register(hub: Hub, request: web.Request) -> None:
        if "pub" in request.query:
            # Applied (and still pending) before this stream's snapshot at offset 20.
            hub.publish(change("old", 1, offset=20))

    async with running_hub(detach, publish_then_register) as (hub, _, port):
        earlier = await StreamClient.open(port, "/all?start=10")
        assert await earlier.head() == 200
        await wait_for(lambda: hub.connection_count() == 1)
        later = await StreamClient.open(port, "/all?start=20&pub=1")
        assert await later.head() == 200
        await wait_for(lambda: hub.connection_count() == 2)
        hub.publish(change("new", 1, offset=21))
        await hub.wait_idle()
        await earlier.until(lambda i: len(events_of(i)) >= 3)
        items = await later.until(lambda i: len(events_of(i)) >= 2)
        await asyncio.sleep(0.05)
        assert [e.id for e in events_of(earlier.items)] == ["e0:0", "e0:20", "e0:21"]
        assert [e.id for e in events_of(items)] == ["e0:0", "e0:21"]
        earlier.close()
        later.close()


async def test_a_change_of_an_environment_without_streams_is_dropped(detach: bool) -> None:
    async with running_hub(detach) as (hub, metrics, _):
        hub.publish(change("f", 1, offset=1, env="nobody"))
        hub.publish(change("f", 2, offset=2, env="nobody"))
        assert hub.stats()["pending_changes"] == 0
        assert sample(metrics, "coalesced_updates_total") == 0


async def test_changes_published_while_the_headers_are_prepared_are_not_lost(
    detach: bool,
) -> None:
    def publish_soon(hub: Hub, request: web.Request) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, hub.publish, change("during", 1, offset=31))
        loop.call_later(0.04, hub.publish, change("during", 2, offset=32))

    async with running_hub(detach, publish_soon, slow_prepare=True) as (hub, _, port):
        c = await StreamClient.open(port, "/all?start=30")
        assert await c.head() == 200
        items = await c.until(lambda i: any(e.id == "e0:32" for e in events_of(i)))
        await hub.wait_idle()
        await asyncio.sleep(0.05)
        # The initial payload, then the changes queued while the headers were prepared
        # (coalesced into the final version if both publishes fell into one loop tick).
        assert [e.id for e in events_of(items)] in (
            ["e0:0", "e0:31", "e0:32"],
            ["e0:0", "e0:32"],
        )
        hub.publish(change("after", 1, offset=33))
        await c.until(lambda i: any(e.id == "e0:33" for e in events_of(i)))
        c.close()


async def test_coalescing_keeps_the_final_version(detach: bool) -> None:
    async with running_hub(detach) as (hub, metrics, port):
        c = await StreamClient.open(port)
        assert await c.head() == 200
        await wait_for(lambda: hub.connection_count() == 1)
        for v in range(1, 101):  # one tick: all pending together
            hub.publish(change("f", v, offset=100 + v))
        items = await c.until(lambda i: any(e.id == "e0:200" for e in events_of(i)))
        patches = events_of(items, "patch")
        assert [p.id for p in patches] == ["e0:200"]
        assert '"version":100' in patches[0].data
        assert sample(metrics, "coalesced_updates_total") == 99
        c.close()


async def test_coalescing_while_a_round_is_writing_never_drops_the_final_version(
    detach: bool,
) -> None:
    rng = random.Random(7)
    async with running_hub(detach) as (hub, _, port):
        hub.slice_writes = 3  # a round spans many loop ticks
        clients = [await StreamClient.open(port) for _ in range(12)]
        for c in clients:
            assert await c.head() == 200
        await wait_for(lambda: hub.connection_count() == 12)
        final: dict[str, int] = {}
        offset = 1000
        for _ in range(300):
            key = f"k{rng.randrange(8)}"
            final[key] = final.get(key, 0) + 1
            offset += 1
            hub.publish(change(key, final[key], offset))
            if rng.random() < 0.3:
                await asyncio.sleep(0)
        last_id = f"e0:{offset}"
        for c in clients:
            items = await c.until(lambda i: any(e.id == last_id for e in events_of(i)))
            seen: dict[str, int] = {}
            for e in events_of(items, "patch"):
                key = e.data.split('"/flags/')[1].split('"')[0]
                version = int(e.data.rsplit('"version":', 1)[1].rstrip("}"))
                assert version > seen.get(key, 0), "versions only go up"
                seen[key] = version
            assert seen == final
            c.close()


async def test_a_client_that_stops_reading_is_evicted_and_stays_bounded(detach: bool) -> None:
    limit = 64 * 1024
    async with running_hub(detach, max_buffer_bytes=limit) as (hub, metrics, port):
        reader = await StreamClient.open(port)
        stalled = await StreamClient.open(port, rcvbuf=4096)
        for c in (reader, stalled):
            assert await c.head() == 200
        await wait_for(lambda: hub.connection_count() == 2)
        big = b'{"key":"big","version":1,"pad":"' + b"x" * 20_000 + b'"}'
        peak = 0
        offset = 0
        # The stalled client's kernel buffers fill first; then the relay's side grows
        # until the bound is crossed and the stream is cut.
        for _ in range(400):
            offset += 1
            hub.publish(change(f"big{offset}", 1, offset, item=big))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            for env in hub._envs.values():
                for conns in env.groups.values():
                    for conn in conns:
                        assert conn.transport is not None
                        peak = max(peak, conn.transport.get_write_buffer_size())
            # keep the healthy reader drained
            while len(reader.reader._buffer) > 0:  # type: ignore[attr-defined]
                await reader._pump(1)
            if sample(metrics, "connections_closed_total", reason="evicted") >= 1:
                break
        assert sample(metrics, "connections_closed_total", reason="evicted") == 1
        assert peak <= limit + len(INITIAL) + len(big) + 200
        assert hub.connection_count() == 1
        # The evicted client's stream ends (reset or EOF), the healthy one keeps going.
        stalled.reader._limit = 2**24  # type: ignore[attr-defined]
        await stalled.until_eof(10)
        offset += 1
        hub.publish(change("after", 1, offset))
        await reader.until(lambda i: any(e.id == f"e0:{offset}" for e in events_of(i)))
        reader.close()
        stalled.close()


async def test_connection_limit_answers_503_and_existing_streams_keep_working(detach: bool) -> None:
    async with running_hub(detach, max_connections=2) as (hub, _, port):
        a = await StreamClient.open(port)
        b = await StreamClient.open(port)
        for c in (a, b):
            assert await c.head() == 200
        await wait_for(lambda: hub.connection_count() == 2)
        assert not hub.can_accept()
        refused = await StreamClient.open(port)
        assert await refused.head() == 503
        assert refused.http.headers.get("retry-after") == "2"
        hub.publish(change("f", 1, offset=5))
        for c in (a, b):
            await c.until(lambda i: any(e.id == "e0:5" for e in events_of(i)))
        a.close()
        await wait_for(lambda: hub.can_accept())
        for c in (b, refused):
            c.close()


async def test_serve_stream_itself_refuses_when_full(detach: bool) -> None:
    async with running_hub(detach, lambda h, r: setattr(h, "_max_connections", 0)) as (_, _, port):
        c = await StreamClient.open(port)
        assert await c.head() == 503
        assert c.http.headers.get("retry-after") is not None
        c.close()


async def test_a_vanished_client_is_released(detach: bool) -> None:
    async with running_hub(detach) as (hub, metrics, port):
        c = await StreamClient.open(port)
        assert await c.head() == 200
        await wait_for(lambda: hub.connection_count() == 1)
        c.writer.transport.abort()
        await wait_for(lambda: hub.connection_count() == 0)
        assert sample(metrics, "connections_closed_total", reason="client") == 1
        assert sample(metrics, "connections") == 0


async def test_heartbeats_arrive_on_an_idle_stream(detach: bool) -> None:
    async with running_hub(detach, heartbeat_interval=0.1) as (_, _, port):
        c = await StreamClient.open(port)
        assert await c.head() == 200
        items = await c.until(lambda i: sum(isinstance(x, SSEComment) for x in i) >= 3)
        assert sum(isinstance(x, SSEComment) for x in items) >= 3
        c.close()


async def test_max_lifetime_closes_streams_cleanly(detach: bool) -> None:
    async with running_hub(detach, max_connection_lifetime=0.3, lifetime_jitter=0.5) as (
        hub,
        metrics,
        port,
    ):
        clients = [await StreamClient.open(port) for _ in range(4)]
        for c in clients:
            assert await c.head() == 200
        for c in clients:
            await c.until_eof(5)
            assert c.http.done, "clean end of the chunked body"
        assert sample(metrics, "connections_closed_total", reason="lifetime") == 4
        assert hub.connection_count() == 0


async def test_drain_closes_every_stream_within_the_window(detach: bool) -> None:
    async with running_hub(detach) as (hub, metrics, port):
        clients = [await StreamClient.open(port) for _ in range(20)]
        for c in clients:
            assert await c.head() == 200
        await wait_for(lambda: hub.connection_count() == 20)
        loop = asyncio.get_running_loop()
        started = loop.time()
        drain = asyncio.create_task(hub.drain(0.5))
        await asyncio.sleep(0.1)
        assert not hub.can_accept() and hub.draining
        assert 0 < hub.connection_count() < 20, "closes are spread, not all at once"
        await drain
        assert loop.time() - started < 0.5 + 1.0
        assert hub.connection_count() == 0
        for c in clients:
            await c.until_eof(5)
            assert c.http.done
        assert sample(metrics, "connections_closed_total", reason="drain") == 20


async def test_close_all_ends_every_stream_and_keeps_accepting(detach: bool) -> None:
    # Used when the topic is recreated: old positions mean nothing, SDKs must come back.
    async with running_hub(detach) as (hub, metrics, port):
        clients = [await StreamClient.open(port) for _ in range(5)]
        for c in clients:
            assert await c.head() == 200
        await wait_for(lambda: hub.connection_count() == 5)
        hub.close_all()
        for c in clients:
            await c.until_eof(5)
        assert hub.connection_count() == 0
        assert sample(metrics, "connections_closed_total", reason="reset") == 5
        assert hub.can_accept() and not hub.draining
        again = await StreamClient.open(port)
        assert await again.head() == 200


async def test_fanout_delay_is_observed_per_change(detach: bool) -> None:
    async with running_hub(detach) as (hub, metrics, port):
        c = await StreamClient.open(port)
        assert await c.head() == 200
        await wait_for(lambda: hub.connection_count() == 1)
        hub.publish(change("a", 1, 1))
        hub.publish(change("b", 1, 2))
        await c.until(lambda i: len(events_of(i)) >= 3)
        await wait_for(lambda: sample(metrics, "fanout_delay_seconds_count") == 2)
        assert sample(metrics, "bytes_sent_total") > 0
        stats = hub.stats()
        assert stats["connections"] == 1 and stats["streams"]["all"] == 1
        assert "pid" in stats and "worker" in stats
        c.close()


async def test_a_detached_stream_is_released_by_aiohttp_and_kept_by_the_hub() -> None:
    hub = Hub(RelaySettings(heartbeat_interval=60.0), RelayMetrics())
    hub.detach = True
    returned: list[int] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        response = await hub.serve_stream(
            request, env="env-a", stream="all", initial=INITIAL, start_offset=0
        )
        returned.append(hub.connection_count())
        return response

    app = web.Application()
    app.router.add_get("/all", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        client = await StreamClient.open(runner.addresses[0][1])
        assert await client.head() == 200
        await wait_for(lambda: returned == [1])  # the handler is done, the stream is not
        assert runner.server is not None and not runner.server.connections
        hub.publish(change("f", 1, offset=3))
        await hub.wait_idle()
        items = await client.until(lambda i: any(e.id == "e0:3" for e in events_of(i)))
        assert not client.eof and not client.http.done  # aiohttp wrote no end of body
        assert [e.id for e in events_of(items)] == ["e0:0", "e0:3"]
        client.close()
        await wait_for(lambda: hub.connection_count() == 0)
    finally:
        await hub.drain(0)
        await runner.cleanup()


async def test_streams_get_a_kernel_timeout_for_vanished_peers(detach: bool) -> None:
    async with running_hub(detach, heartbeat_interval=20.0) as (hub, _, port):
        c = await StreamClient.open(port)
        assert await c.head() == 200
        await wait_for(lambda: hub.connection_count() == 1)
        (conn,) = [x for env in hub._envs.values() for g in env.groups.values() for x in g]
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        value = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert value == 60_000  # max(30 s, 3 heartbeats)
        c.close()


async def test_a_slow_reader_within_the_bound_gets_every_byte_in_order(detach: bool) -> None:
    async with running_hub(detach, max_buffer_bytes=8 * 1024 * 1024) as (hub, metrics, port):
        slow = await StreamClient.open(port, rcvbuf=4096)
        assert await slow.head() == 200
        await wait_for(lambda: hub.connection_count() == 1)
        for env in hub._envs.values():
            for g in env.groups.values():
                for c in g:
                    assert c.transport is not None
                    # A small kernel send buffer (no autotuning), so user space must queue.
                    sock = c.transport.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        pad = b"y" * 20_000
        for offset in range(1, 61):
            # Separate rounds; the socket fills, sends turn partial, the rest is queued.
            item = b'{"key":"k%d","version":1,"pad":"%s"}' % (offset, pad)
            hub.publish(change(f"k{offset}", 1, offset, item=item))
            await hub.wait_idle()
        queued = [
            c.transport.get_write_buffer_size()
            for env in hub._envs.values()
            for g in env.groups.values()
            for c in g
            if c.transport is not None
        ]
        assert queued and queued[0] > 0, "the test must exercise the queued path"
        slow.reader._limit = 2**24  # type: ignore[attr-defined]
        items = await slow.until(lambda i: len(events_of(i)) >= 61, 20)
        assert [e.id for e in events_of(items)][1:] == [f"e0:{o}" for o in range(1, 61)]
        assert all(e.data.endswith('"}}') for e in events_of(items)[1:])
        assert sample(metrics, "connections_closed_total", reason="evicted") == 0
        slow.close()
