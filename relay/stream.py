"""One open SSE stream after its response headers went out: a transport the hub writes to.

Rules (the hub relies on every one of them):
- A stream is *taken over* right after aiohttp sent the 200 response headers: the
  transport's protocol is swapped for a ``StreamProtocol``, so from then on the hub writes
  pre-framed bytes with ``transport.write()`` (no per-connection task, await or encoding),
  and learns of the peer's departure through ``connection_lost``.
- Bytes a client sends after its request are read and discarded (an SSE client sends
  nothing), so a misbehaving client cannot grow our memory by talking.
- Attached streams (the default): ``connection_lost`` is forwarded to aiohttp's own
  protocol, so its connection bookkeeping (``Server`` connection set, shutdown) stays exact,
  and the request handler waits in ``serve_stream`` until the stream ends.
- Detached streams (``Hub.detach``, what ``relay.server`` runs): aiohttp is told at once
  that the connection is gone, so it frees everything it holds per request (protocol,
  parser, timers, request, response, two tasks) and the handler returns; the transport
  lives on, owned by the hub alone. This is what keeps an idle stream at about 1-2 KB of
  user-space memory instead of ~11 KB. Whoever runs a detaching hub must ``drain()`` it
  before shutting the aiohttp runner down (aiohttp no longer knows these connections).
- Framing is decided once per stream: ``chunked`` (HTTP/1.1, what aiohttp chose) or raw
  (HTTP/1.0, ``Connection: close``). The hub frames one batch once per framing, never per
  connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from relay.evalstream import ContextGroup
    from relay.hub import Hub

# all/flags: server-side SDKs; ping: client streams told to re-poll; eval: evaluated client
# streams (relay.evalstream), whose bytes differ per context group; ofrep: OFREP change
# notices (relay.ofrep), one per round, not per item.
StreamKind = Literal["all", "flags", "ping", "eval", "ofrep"]

# Terminating chunk of a chunked body: a clean end of stream for an HTTP/1.1 client.
CHUNKED_EOF = b"0\r\n\r\n"


def frame_chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (``b""`` stays empty: an empty chunk would end the body)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def frame(data: bytes, chunked: bool) -> bytes:
    """``data`` framed for a stream of the given framing."""
    return frame_chunk(data) if chunked else data


class Connection:
    """The hub's record of one stream. Plain slots: this object exists once per client."""

    __slots__ = (
        "chunked",
        "closed",
        "done",
        "env",
        "fd",
        "gauge",
        "group",
        "kind",
        "limit",
        "pending",
        "start_offset",
        "transport",
    )

    def __init__(
        self,
        env: str,
        kind: StreamKind,
        start_offset: int,
        done: asyncio.Future[str] | None,
    ) -> None:
        self.env = env
        self.kind: StreamKind = kind
        # Changes with an offset <= start_offset are in the client's initial payload.
        self.start_offset = start_offset
        # Resolved with the close reason when the stream ends (None: nobody waits, detached).
        self.done = done
        self.transport: asyncio.Transport | None = None  # None until taken over
        # The socket's descriptor, for direct send() while nothing is queued (-1: never).
        self.fd = -1
        self.chunked = True
        self.closed = False
        # Unframed bytes published while the response headers were being prepared.
        self.pending: list[bytes] | None = []
        self.limit = 0  # unsent bytes above which the stream is evicted
        self.group: ContextGroup | None = None  # an evaluated stream's context group
        self.gauge: Any = None  # a client stream's gauge child (metrics), decremented on close


class StreamProtocol(asyncio.Protocol):
    """Replaces aiohttp's protocol on a taken-over stream transport."""

    __slots__ = ("_conn", "_hub", "_inner")

    def __init__(self, hub: Hub, conn: Connection, inner: asyncio.BaseProtocol | None) -> None:
        self._hub = hub
        self._conn = conn
        self._inner = inner

    def data_received(self, data: bytes) -> None:
        # An SSE client has nothing more to say; discard so talking costs us nothing.
        return None

    def eof_received(self) -> bool | None:
        # The client half-closed: it is leaving. Returning None lets the transport close.
        return None

    def pause_writing(self) -> None:
        # Flow control is the hub's buffer bound (eviction), not back-pressure awaits.
        return None

    def resume_writing(self) -> None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._hub._on_connection_lost(self._conn)
        if self._inner is not None:
            self._inner.connection_lost(exc)
