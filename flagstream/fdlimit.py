"""File descriptors: the connection limit they allow, and accepting that survives running out.

Every TCP connection is a descriptor, and a process may hold at most ``RLIMIT_NOFILE`` of
them. A server that accepts until ``accept()`` fails is in trouble: the event loop keeps
reporting the listening socket readable, and asyncio's own accept loop then logs a
traceback for every attempt (hundreds of thousands a minute) while the process spins.
flagstream's servers (relay workers, ``flagstream dev``, the publisher) avoid that in two
layers.

Rules, in the order a new connection meets them:

1. **A limit below the descriptor limit.** ``connection_budget()`` is the soft
   ``RLIMIT_NOFILE`` the server runs with (servers raise it to the hard limit at start, see
   ``raise_nofile_limit``) minus ``reserved_descriptors()``: ``64 + limit // 20``. The
   reserve covers what the process needs besides its clients (listening sockets, Kafka and
   Redis connections, log files, the event loop's epoll, the interpreter's own) plus room for
   short requests (polling, ``/status``, scrapes) while streams fill the rest. It is the
   default of ``max_connections`` in the relay (streams; the hub answers 503 above it) and
   the publisher, and the cap ``GuardedSite`` enforces on all connections.
2. **Connections above the cap are answered, not dropped.** ``GuardedSite`` counts the open
   connections of its aiohttp server; a connection accepted at or above ``max_connections``
   gets a canned ``503`` problem+json with ``Retry-After`` and is closed (after its request
   bytes are drained for at most a second), so clients retry instead of hanging.
3. **``accept()`` failing with EMFILE/ENFILE/ENOBUFS/ENOMEM backs off.** The listening socket
   is taken out of the event loop for 50 ms, doubling to 1 s while the failures continue,
   and reset by the next successful accept. Pending connections wait in the kernel's listen
   queue meanwhile. Open connections and streams are not touched: they keep being served.
4. **Logged once per interval.** The first failure is logged at WARNING with the limit, the
   open connections and what to do; later ones are counted and summarised at most once per
   ``log_interval`` (10 s), never with a traceback.
5. **At most ``max_starting`` connections are being set up at once** (accepted, their
   ``connect_accepted_socket`` task not finished; 128 by default). Past that the listening
   socket leaves the event loop until half of them finished; new connections wait in the
   kernel's listen queue. Why: each task holds its connection's whole aiohttp request graph
   (protocol, parser, request, handler task, ~10 KB) until it ends a few loop iterations
   later; a burst accepted without a bound kept hundreds of them alive at once, and the
   memory they freed afterwards stayed fragmented between the long-lived streams (measured:
   ~3 KB of relay RSS per idle stream instead of ~2 KB, BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.web_runner import BaseRunner, BaseSite

__all__ = [
    "GuardedServer",
    "GuardedSite",
    "aiohttp_connections",
    "connection_budget",
    "descriptor_limit",
    "raise_nofile_limit",
    "reserved_descriptors",
]

log = logging.getLogger("flagstream.fdlimit")

# Errors that mean "no descriptor or buffer for a new connection right now": retrying at
# once cannot succeed, waiting can (a connection closes, memory frees up).
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# ``accept()`` errors that concern only the one connection that was being accepted.
_CONNECTION_ERRNOS = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.ENOPROTOOPT, errno.EPERM, errno.ETIMEDOUT}
)
_BACKOFF_INITIAL = 0.05
_BACKOFF_MAX = 1.0
_ACCEPTS_PER_WAKEUP = 256  # fairness: other callbacks run between bursts
_MAX_STARTING = 128  # connections being set up at once (rule 5)
_REJECT_DRAIN_SECONDS = 1.0
_FALLBACK_LIMIT = 1024  # RLIM_INFINITY and no /proc: assume the usual default


def descriptor_limit() -> int:
    """The open-files limit a flagstream server runs with: the hard ``RLIMIT_NOFILE``
    (servers raise their soft limit to it at start), bounded by the kernel's ``nr_open``
    when the hard limit is unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else soft
    if limit == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                limit = int(f.read().strip())
        except (OSError, ValueError):
            limit = _FALLBACK_LIMIT
    return int(limit)


def reserved_descriptors(limit: int) -> int:
    """Descriptors kept free for the process itself and short requests: ``64 + limit // 20``."""
    return 64 + limit // 20


def connection_budget(limit: int | None = None) -> int:
    """How many connections a server may hold under ``limit`` descriptors (default:
    ``descriptor_limit()``): the limit minus ``reserved_descriptors``, at least 1."""
    if limit is None:
        limit = descriptor_limit()
    return max(1, limit - reserved_descriptors(limit))


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return int(soft)


def _problem_response(retry_after: int) -> bytes:
    body = (
        b'{"type":"about:blank","title":"Service Unavailable","status":503,'
        b'"detail":"this server holds as many connections as its file-descriptor limit '
        b'allows; retry shortly"}'
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {retry_after}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def aiohttp_connections(server: web.Server) -> int:
    """Connections an aiohttp server handles (without building the list it would return)."""
    connections = getattr(server, "_connections", None)
    return len(connections) if connections is not None else len(server.connections)


class GuardedServer:
    """The accept loop behind ``GuardedSite`` (rules 2-4 of the module docstring).

    Quacks like the ``asyncio.Server`` aiohttp keeps per site: ``close()``, ``sockets``,
    ``wait_closed()``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: web.Server,
        sock: socket.socket,
        *,
        max_connections: int,
        open_connections: Callable[[], int] | None = None,
        retry_after: int = 1,
        log_interval: float = 10.0,
        max_starting: int = _MAX_STARTING,
    ) -> None:
        self._loop = loop
        self._server = server
        self._count = open_connections or partial(aiohttp_connections, server)
        self._sock = sock
        self.max_connections = max_connections
        self.log_interval = log_interval
        self._reject_bytes = _problem_response(retry_after)
        self._backoff = _BACKOFF_INITIAL
        self._paused: asyncio.TimerHandle | None = None
        self.max_starting = max(1, max_starting)
        self._throttled = False  # out of the loop until a connection's setup ends (rule 5)
        self._closed = False
        self._pending: set[asyncio.Future[Any]] = set()
        # counters (tests and operators read them)
        self._draining = 0
        self._starting = 0
        self.accepted = 0
        self.rejected_full = 0
        self.accept_failures = 0
        self._unlogged_failures = 0
        self._logged_at: float | None = None
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_readable)

    # --- what aiohttp expects of a server ------------------------------------------------
    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed else (self._sock,)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        elif not self._throttled:
            self._loop.remove_reader(self._sock.fileno())
        self._throttled = False
        self._sock.close()

    async def wait_closed(self) -> None:
        return None

    def open_connections(self) -> int:
        return self._count()

    # --- accepting -----------------------------------------------------------------------
    def _on_readable(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            if len(self._pending) >= self.max_starting:
                self._throttle()
                return
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    self._back_off(exc)
                    return
                if exc.errno in _CONNECTION_ERRNOS:
                    continue  # that one connection is gone; the next may be fine
                raise
            self._backoff = _BACKOFF_INITIAL
            conn.setblocking(False)
            # Accepted connections reach aiohttp's bookkeeping only when their task runs,
            # and rejected ones hold a descriptor while draining: count both.
            held = self.open_connections() + self._starting + self._draining
            if held >= self.max_connections:
                self._reject(conn)
                continue
            self.accepted += 1
            self._starting += 1
            task = asyncio.ensure_future(
                self._loop.connect_accepted_socket(self._protocol, conn), loop=self._loop
            )
            self._pending.add(task)
            task.add_done_callback(self._connected)

    def _protocol(self) -> asyncio.BaseProtocol:
        # Called when the connection's task starts; from then on aiohttp counts it (give or
        # take one loop iteration until its connection_made).
        self._starting -= 1
        return self._server()

    def _connected(self, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("an accepted connection failed to start: %r", task.exception())
        # Resume at half the bound, not at every finished setup: fewer epoll changes.
        if self._throttled and len(self._pending) <= self.max_starting // 2:
            self._throttled = False
            if not self._closed and self._paused is None:
                self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def _throttle(self) -> None:
        """Rule 5: stop watching the listening socket until a setup task finishes."""
        if not self._throttled:
            self._throttled = True
            self._loop.remove_reader(self._sock.fileno())

    def _back_off(self, exc: OSError) -> None:
        self.accept_failures += 1
        self._unlogged_failures += 1
        self._loop.remove_reader(self._sock.fileno())
        self._paused = self._loop.call_later(self._backoff, self._resume)
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= self.log_interval:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            log.warning(
                "accept() failed with %s (%s) %d time(s) since the last report: %d connections "
                "open, open-files limit %d; pausing accepts, open streams keep being served. "
                "Raise the limit (ulimit -n, systemd LimitNOFILE=) or lower max_connections",
                name,
                exc.strerror,
                self._unlogged_failures,
                self.open_connections(),
                resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )
            self._logged_at = now
            self._unlogged_failures = 0

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)
            self._on_readable()

    def _reject(self, conn: socket.socket) -> None:
        """Answer 503 and close; read what the client sent first so the answer is not lost
        to a reset (closing with unread data makes the kernel send RST)."""
        self.rejected_full += 1
        try:
            conn.send(self._reject_bytes)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        fd = conn.fileno()
        handle: asyncio.TimerHandle | None = None
        self._draining += 1

        def finish() -> None:
            if conn.fileno() < 0:
                return
            self._draining -= 1
            with contextlib.suppress(Exception):
                self._loop.remove_reader(fd)
            if handle is not None:
                handle.cancel()
            conn.close()

        def drain() -> bool:
            # A request arrives in one segment in practice: once its bytes are read, close.
            try:
                conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                pass
            finish()
            return True

        if not drain():
            self._loop.add_reader(fd, drain)
            handle = self._loop.call_later(_REJECT_DRAIN_SECONDS, finish)


class GuardedSite(BaseSite):
    """An aiohttp site on a listening socket, accepting through ``GuardedServer``.

    Pass a bound socket (``sock``, e.g. the relay's SO_REUSEPORT socket) or ``host`` and
    ``port``. ``max_connections`` defaults to ``connection_budget()``; ``open_connections``
    counts what the cap applies to (default: the aiohttp server's connections; a relay whose
    hub takes streams away from aiohttp adds the hub's).
    """

    __slots__ = (
        "_count",
        "_guard",
        "_host",
        "_max_connections",
        "_port",
        "_retry_after",
        "_sock",
    )

    def __init__(
        self,
        runner: BaseRunner,
        sock: socket.socket | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        max_connections: int | None = None,
        open_connections: Callable[[], int] | None = None,
        retry_after: int = 1,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._count = open_connections
        if sock is None and (host is None or port is None):
            raise ValueError("GuardedSite needs sock, or host and port")
        self._sock = sock
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._retry_after = retry_after
        self._guard: GuardedServer | None = None

    @property
    def name(self) -> str:
        if self._sock is not None:
            host, port = self._sock.getsockname()[:2]
        else:
            host, port = self._host, self._port
        return f"http://{host}:{port}"

    @property
    def guard(self) -> GuardedServer | None:
        return self._guard

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        sock = self._sock
        if sock is None:
            assert self._host is not None and self._port is not None
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            infos = await loop.getaddrinfo(
                self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, *_rest, address = next((info for info in infos if info[0] == family), infos[0])
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        sock.listen(self._backlog)
        limit = self._max_connections
        self._guard = GuardedServer(
            loop,
            server,
            sock,
            max_connections=limit if limit is not None else connection_budget(),
            open_connections=self._count,
            retry_after=self._retry_after,
        )
        self._server = self._guard  # type: ignore[assignment]
