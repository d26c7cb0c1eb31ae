"""The client swarm: many SSE streams from one process, one small asyncio Protocol each.

Rules:
- One ``StreamClient`` (an ``asyncio.Protocol`` with ``__slots__``) per stream: a transport,
  an HTTP response reader, an SSE parser and a few counters. No HTTP client library object
  per stream; the request bytes are built once per (target, SDK key) and shared.
- Frames are parsed once per distinct byte string (the relay writes the same bytes to every
  stream), whenever the stream's parser is at an event boundary; other streams reuse the
  parsed events. This halves the swarm's CPU per delivery, which matters because the swarm
  shares the machine with the relay it measures.
- Every event is handed to the ``DeliveryRecorder`` with the receive time taken once per
  ``data_received`` call (all events of one read arrived together).
- A lost stream reconnects after a jittered delay (``reconnect_delay`` seconds, full jitter),
  to the next target in the list (fail-over, like an SDK behind a load balancer), sending
  ``Last-Event-ID`` when ``resume`` is on. 401 stops a stream (as real SDKs do); 503 waits
  ``Retry-After`` (capped) before the next try.
- Connections to a loopback target are spread over source addresses 127.0.0.2..127.0.0.(N+1)
  so that no single (source, destination) pair runs out of ephemeral ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from loadtest.httpreader import HTTPReaderError, ResponseReader
from loadtest.recorder import DeliveryRecorder
from protocol.errors import ProtocolError
from protocol.sse import SSEComment, SSEEvent, SSEParser

__all__ = ["StreamClient", "Swarm", "Target"]

_MAX_RETRY_AFTER = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    """A relay to stream from."""

    host: str
    port: int
    path: str = "/all"

    @classmethod
    def from_url(cls, url: str, path: str = "/all") -> Target:
        rest = url.split("://", 1)[-1].rstrip("/")
        hostport, _, url_path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected http://HOST:PORT, got {url!r}")
        return cls(host, int(port), "/" + url_path if url_path else path)

    @property
    def loopback(self) -> bool:
        return self.host.startswith("127.") or self.host == "localhost"


class StreamClient(asyncio.Protocol):
    """One SSE stream. State is a handful of slots; everything shared lives in the Swarm."""

    __slots__ = (
        "clean",
        "env",
        "id",
        "is_open",
        "last_event_id",
        "parser",
        "reader",
        "retry_after",
        "sdk_key",
        "started",
        "stopped",
        "swarm",
        "target_index",
        "transport",
    )

    def __init__(self, swarm: Swarm, id: int, env: str, sdk_key: str) -> None:
        self.swarm = swarm
        self.id = id
        self.env = env
        self.sdk_key = sdk_key
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.parser = SSEParser(max_line_bytes=64 * 1024 * 1024)
        self.clean = True  # the parser holds no partial line or event
        self.last_event_id: str | None = None
        self.target_index = 0
        self.is_open = False  # 200 head received, stream running
        self.stopped = False  # no more reconnects (401, or swarm closing)
        self.retry_after: float | None = None  # set by a 503 with Retry-After
        self.started = 0.0

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)
        self.reader = ResponseReader()
        self.parser = SSEParser(max_line_bytes=64 * 1024 * 1024)
        self.parser.last_event_id = self.last_event_id
        self.clean = False  # a fresh parser still checks for a BOM: let it see bytes first
        self.transport.write(self.swarm.request_bytes(self))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        swarm = self.swarm
        swarm.bytes_received += len(data)
        try:
            reader = self.reader
            was_head = reader.head_complete
            body = reader.feed(data)
            if not was_head and reader.head_complete:
                if reader.status != 200:
                    swarm._refused(self, reader.status or 0, reader.headers.get("retry-after"))
                    if self.transport is not None:
                        self.transport.close()
                    return
                self.is_open = True
                swarm._opened(self, now)
            recorder = swarm.recorder
            cache = swarm.parsed
            for piece in body:
                # The relay writes the same bytes to every stream: parse each distinct
                # complete frame once (valid only when the parser holds no partial line).
                items = cache.get(piece) if self.clean else None
                if items is None:
                    items = self.parser.feed(piece)
                    if self.clean and piece.endswith(b"\n\n"):
                        if len(cache) >= 1024:
                            cache.clear()
                        cache[piece] = items
                    self.clean = piece.endswith(b"\n\n")
                else:
                    swarm.parse_cache_hits += 1
                for item in items:
                    if type(item) is SSEEvent:
                        if item.id is not None:
                            self.last_event_id = self.parser.last_event_id = item.id
                        swarm.events += 1
                        recorder.on_event(self.id, self.env, item.event, item.data, now)
                    else:
                        swarm.comments += 1
        except (HTTPReaderError, ProtocolError) as exc:
            swarm.errors[type(exc).__name__] += 1
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.swarm._lost(self)


class Swarm:
    """Opens, tracks and re-opens many ``StreamClient`` streams against ``targets``."""

    def __init__(
        self,
        targets: list[Target],
        recorder: DeliveryRecorder,
        *,
        source_ips: int = 8,
        resume: bool = True,
        reconnect: bool = True,
        reconnect_delay: float = 0.5,
        connect_timeout: float = 10.0,
        concurrency: int = 256,
    ) -> None:
        if not targets:
            raise ValueError("the swarm needs at least one target")
        self.targets = targets
        self.recorder = recorder
        self.source_ips = source_ips
        self.resume = resume
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self.connect_timeout = connect_timeout
        self.clients: list[StreamClient] = []
        self._sem = asyncio.Semaphore(concurrency)
        self._requests: dict[tuple[int, str], bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        # counters (the scenario reads and diffs them)
        self.open_count = 0
        self.opened_total = 0
        self.attempts = 0
        self.events = 0
        self.comments = 0
        self.bytes_received = 0
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.connect_latency = array("d")  # seconds from connect start to 200 head
        self.parsed: dict[bytes, list[SSEEvent | SSEComment]] = {}
        self.parse_cache_hits = 0
        self.on_open: Callable[[StreamClient, float], None] | None = None

    # --- building ---------------------------------------------------------------------
    def add(self, count: int, env: str, sdk_key: str) -> list[StreamClient]:
        new = [StreamClient(self, len(self.clients) + i, env, sdk_key) for i in range(count)]
        self.clients.extend(new)
        return new

    def request_bytes(self, client: StreamClient) -> bytes:
        cache_key = (client.target_index, client.sdk_key)
        head = self._requests.get(cache_key)
        if head is None:
            t = self.targets[client.target_index]
            head = (
                f"GET {t.path} HTTP/1.1\r\nHost: {t.host}:{t.port}\r\n"
                f"Authorization: {client.sdk_key}\r\nAccept: text/event-stream\r\n"
                "User-Agent: flagstream-loadtest/1\r\n"
            ).encode("latin-1")
            self._requests[cache_key] = head
        if self.resume and client.last_event_id is not None:
            return head + b"Last-Event-ID: " + client.last_event_id.encode() + b"\r\n\r\n"
        return head + b"\r\n"

    def source_address(self, client: StreamClient) -> tuple[str, int] | None:
        if self.source_ips <= 0 or not self.targets[client.target_index].loopback:
            return None
        return (f"127.0.0.{2 + client.id % self.source_ips}", 0)

    # --- connecting -------------------------------------------------------------------
    async def connect(self, client: StreamClient) -> None:
        """One connection attempt (bounded concurrency); failures schedule a retry."""
        if client.stopped or self._closing:
            return
        async with self._sem:
            if self._closing:
                return
            target = self.targets[client.target_index]
            self.attempts += 1
            client.started = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: client,
                        target.host,
                        target.port,
                        local_addr=self.source_address(client),
                    ),
                    self.connect_timeout,
                )
            except (OSError, TimeoutError) as exc:
                name = type(exc).__name__
                if isinstance(exc, OSError) and exc.errno is not None:
                    name = errno.errorcode.get(exc.errno, name)
                self.errors[name] += 1
                self._retry_later(client)

    async def connect_all(self, clients: list[StreamClient], *, rate: float | None = None) -> None:
        """Start ``clients`` (at most ``rate`` new connections per second if given)."""
        if rate is None:
            await asyncio.gather(*(self.connect(c) for c in clients))
            return
        start = time.perf_counter()
        pending = []
        for i, c in enumerate(clients):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.ensure_future(self.connect(c)))
        await asyncio.gather(*pending)

    def _opened(self, client: StreamClient, now: float) -> None:
        self.open_count += 1
        self.opened_total += 1
        self.statuses[200] += 1
        self.connect_latency.append(now - client.started)
        if self.on_open is not None:
            self.on_open(client, now)

    def _refused(self, client: StreamClient, status: int, retry_after: str | None) -> None:
        """A non-200 answer; the caller closes the transport and ``_lost`` retries."""
        self.statuses[status] += 1
        if status == 401:
            client.stopped = True  # an SDK gives up on a bad key
        elif retry_after is not None and retry_after.isdigit():
            client.retry_after = min(float(retry_after), _MAX_RETRY_AFTER)

    def _lost(self, client: StreamClient) -> None:
        if client.is_open:
            client.is_open = False
            self.open_count -= 1
        elif client.reader.status is None:
            self.errors["closed-before-head"] += 1
        delay = None
        if client.retry_after is not None:
            delay = client.retry_after * random.uniform(0.5, 1.0)
            client.retry_after = None
        self._retry_later(client, delay=delay)

    def _retry_later(self, client: StreamClient, *, delay: float | None = None) -> None:
        """Reconnect after ``delay`` (default: full jitter), to the next target (fail-over)."""
        if not self.reconnect or client.stopped or self._closing:
            return
        client.target_index = (client.target_index + 1) % len(self.targets)
        if delay is None:
            delay = random.uniform(0, self.reconnect_delay)
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self._spawn_connect, client)

    def _spawn_connect(self, client: StreamClient) -> None:
        if client.transport is not None or self._closing:
            return
        task = asyncio.ensure_future(self.connect(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def streams_by_env(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for c in self.clients:
            out.setdefault(c.env, []).append(c.id)
        return out

    async def wait_open(self, count: int, within: float) -> bool:
        """Wait until at least ``count`` streams are open (200 received)."""
        return await self.wait_until(lambda: self.open_count >= count, within)

    async def wait_deliveries(self, expected: int, within: float, *, quiet: float = 1.0) -> bool:
        """Wait until ``expected`` receipts are recorded, or none arrived for ``quiet``
        seconds (a relay may coalesce versions away), or ``within`` seconds passed."""
        rec = self.recorder
        deadline = time.perf_counter() + within
        last_n, last_change = len(rec.receipt_time), time.perf_counter()
        while len(rec.receipt_time) < expected:
            now = time.perf_counter()
            n = len(rec.receipt_time)
            if n != last_n:
                last_n, last_change = n, now
            elif now - last_change >= quiet or now >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # --- control ----------------------------------------------------------------------
    async def wait_until(
        self, predicate: Callable[[], bool], within: float, *, poll: float = 0.02
    ) -> bool:
        """Poll ``predicate`` until true (True) or ``within`` seconds passed (False)."""
        deadline = time.perf_counter() + within
        while not predicate():
            if time.perf_counter() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True

    async def close(self) -> None:
        """Close every stream; no reconnects after this."""
        self._closing = True
        for c in self.clients:
            c.stopped = True
            if c.transport is not None:
                c.transport.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0)
