"""A lean HTTP/1.1 keep-alive client connection for load generators.

A benchmark's client must cost less than the server it measures: on a two-core machine that
also runs Kafka and Redis, aiohttp's client spent ~270 µs of CPU per request (this
connection ~100 µs; BENCHMARKS.md, "publisher"). It writes a request as one pre-built byte
string and reads the response with the sans-I/O ``loadtest.httpreader.ResponseReader``.

Rules:

1. **One request at a time per connection** (no pipelining): ``request`` waits for the whole
   response before it returns; a second call while one is in flight raises.
2. **Keep-alive.** The connection stays open between requests; a response with
   ``Connection: close``, or a peer that closed, makes the next ``request`` reconnect first.
3. **Failures are the caller's.** A connection refused, reset or closed mid-response raises
   ``ConnectionError`` (a cut-short response: ``HTTPReaderError``); nothing is retried, so a
   benchmark counts what really happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from loadtest.httpreader import HTTPReaderError, ResponseReader

__all__ = ["KeepAliveConnection"]


class _ResponseProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader: ResponseReader | None = None
        self.body: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, waiter = self.reader, self.waiter
        if reader is None or waiter is None or waiter.done():
            return  # nothing asked for: a server must not send unasked bytes; ignore them
        try:
            self.body.extend(reader.feed(data))
        except HTTPReaderError as exc:
            waiter.set_exception(exc)
            return
        if reader.done:
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, reader = self.waiter, self.reader
        if waiter is None or waiter.done():
            return
        try:
            if reader is None:
                raise ConnectionError("connection closed")
            reader.eof()
        except HTTPReaderError as error:
            waiter.set_exception(ConnectionError(str(error)))
        else:
            waiter.set_result(None)


class KeepAliveConnection:
    """One keep-alive HTTP/1.1 connection to ``host:port`` (see the module rules)."""

    def __init__(self, host: str, port: int, *, headers: Mapping[str, str] | None = None) -> None:
        self._host = host
        self._port = port
        fixed = {"Host": f"{host}:{port}", **(headers or {})}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._protocol: _ResponseProtocol | None = None
        self._busy = False

    async def _connect(self) -> _ResponseProtocol:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_ResponseProtocol, self._host, self._port)
        self._protocol = protocol
        return protocol

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """Send one request; the response's status and body."""
        if self._busy:
            raise RuntimeError("one request at a time per KeepAliveConnection")
        self._busy = True
        try:
            protocol = self._protocol
            if protocol is None or protocol.closed:
                protocol = await self._connect()
            head = f"{method} {path} HTTP/1.1\r\n{self._fixed}"
            if body or method in ("POST", "PUT", "PATCH"):
                head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            protocol.reader = reader = ResponseReader()
            protocol.body = []
            protocol.waiter = waiter = asyncio.get_running_loop().create_future()
            assert protocol.transport is not None
            protocol.transport.write((head + "\r\n").encode("latin-1") + body)
            await waiter
            status = reader.status or 0
            if reader.headers.get("connection", "").lower() == "close":
                self.close()
            return status, b"".join(protocol.body)
        finally:
            self._busy = False

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
