"""loadtest.keepalive: one keep-alive HTTP/1.1 connection, over real sockets to aiohttp."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from loadtest.keepalive import KeepAliveConnection


def _peer(request: web.Request) -> object:
    return request.transport.get_extra_info("peername") if request.transport else None


class Server:
    def __init__(self) -> None:
        self.peers: list[object] = []
        self.bodies: list[bytes] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/close", self.close_after)
        app.router.add_get("/cut", self.cut)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def echo(self, request: web.Request) -> web.Response:
        self.peers.append(
            request.transport.get_extra_info("peername") if request.transport else None
        )
        self.bodies.append(await request.read())
        return web.json_response({"method": request.method, "auth": request.headers.get("X-T")})

    async def close_after(self, request: web.Request) -> web.Response:
        self.peers.append(
            request.transport.get_extra_info("peername") if request.transport else None
        )
        return web.Response(text="bye", headers={"Connection": "close"})

    async def cut(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b"only part")
        assert request.transport is not None
        request.transport.close()
        return response


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    await s.start()
    yield s
    assert s.runner is not None
    await s.runner.cleanup()


async def test_requests_reuse_one_connection_and_send_the_body(server: Server) -> None:
    connection = KeepAliveConnection("127.0.0.1", server.port, headers={"X-T": "secret"})
    try:
        for n in range(3):
            status, body = await connection.request("PATCH", "/echo", b'{"n":%d}' % n)
            assert (status, body) == (200, b'{"method": "PATCH", "auth": "secret"}')
        status, _ = await connection.request("GET", "/echo")
    finally:
        connection.close()
    assert status == 200
    assert server.bodies == [b'{"n":0}', b'{"n":1}', b'{"n":2}', b""]
    assert len(set(server.peers)) == 1  # one TCP connection for all four


async def test_connection_close_makes_the_next_request_reconnect(server: Server) -> None:
    connection = KeepAliveConnection("127.0.0.1", server.port)
    try:
        assert await connection.request("GET", "/close") == (200, b"bye")
        assert (await connection.request("GET", "/echo"))[0] == 200
    finally:
        connection.close()
    assert len(set(server.peers)) == 2


async def test_a_response_cut_short_raises_connection_error(server: Server) -> None:
    connection = KeepAliveConnection("127.0.0.1", server.port)
    try:
        with pytest.raises(ConnectionError, match="before the response was complete"):
            await asyncio.wait_for(connection.request("GET", "/cut"), 10)
        assert (await connection.request("GET", "/echo"))[0] == 200  # reconnects
    finally:
        connection.close()


async def test_a_refused_connection_raises_and_one_request_at_a_time(server: Server) -> None:
    port = server.port
    assert server.runner is not None
    await server.runner.cleanup()
    with pytest.raises(ConnectionError):
        await KeepAliveConnection("127.0.0.1", port).request("GET", "/echo")

    await server.start()
    connection = KeepAliveConnection("127.0.0.1", server.port)
    try:
        first = asyncio.ensure_future(connection.request("GET", "/echo"))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="one request at a time"):
            await connection.request("GET", "/echo")
        assert (await first)[0] == 200
    finally:
        connection.close()
