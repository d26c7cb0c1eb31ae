"""A tiny SSE server speaking just enough of the relay's protocol to test the swarm."""

from __future__ import annotations

import asyncio
import json

from protocol.sse import encode_event

GOOD_KEY = "sdk-good"


class TinySSEServer:
    """``GET /all`` with ``Authorization: sdk-good`` -> put, then every ``broadcast``.

    ``framing`` is ``"chunked"`` (HTTP/1.1 chunks, like aiohttp) or ``"close"`` (body until
    the connection closes). Records each request's Last-Event-ID and peer address.
    """

    def __init__(self, framing: str = "chunked") -> None:
        self.framing = framing
        self.writers: list[asyncio.StreamWriter] = []
        self.last_event_ids: list[str | None] = []
        self.peers: list[str] = []
        self.version = 1
        self.offset = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _frame(self, payload: bytes) -> bytes:
        if self.framing == "chunked":
            return b"%x\r\n" % len(payload) + payload + b"\r\n"
        return payload

    def _flag(self) -> dict[str, object]:
        return {"key": "flag-0", "version": self.version, "on": self.version % 2 == 0}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.peers.append(writer.get_extra_info("peername")[0])
        if headers.get("authorization") != GOOD_KEY:
            writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        self.last_event_ids.append(headers.get("last-event-id"))
        if self.framing == "chunked":
            start = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            start += b"Transfer-Encoding: chunked\r\n\r\n"
        else:
            start = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            start += b"Connection: close\r\n\r\n"
        put = json.dumps({"path": "/", "data": {"flags": {"flag-0": self._flag()}}}).encode()
        writer.write(
            start
            + self._frame(b":\n")
            + self._frame(encode_event(put, event="put", id=f"e:{self.offset}"))
        )
        self.writers.append(writer)
        try:
            await reader.read()  # until the client goes away
        except ConnectionError:
            pass
        finally:
            if writer in self.writers:
                self.writers.remove(writer)
            writer.close()

    def broadcast(self, *, split: bool = True) -> int:
        """Bump flag-0's version and send the patch to every open stream; return version.

        ``split`` writes each frame as two chunks (reassembly across reads); otherwise as
        one chunk, as the relay does (the swarm's parse cache then applies)."""
        self.version += 1
        self.offset += 1
        data = json.dumps({"path": "/flags/flag-0", "data": self._flag()}).encode()
        # split the frame in two writes to exercise reassembly across reads
        frame = encode_event(data, event="patch", id=f"e:{self.offset}")
        for w in self.writers:
            if split:
                w.write(self._frame(frame[:7]))
                w.write(self._frame(frame[7:]))
            else:
                w.write(self._frame(frame))
        return self.version

    def drop_all(self) -> None:
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.drop_all()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
