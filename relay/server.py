"""Running relay processes: one worker, or a supervisor of N workers on one port.

Rules:
- A *worker* is a complete relay: its own Kafka consumer, state, hub and metrics, an
  aiohttp application from ``relay.app.build_app`` on a uvloop event loop, listening on its
  own socket bound with ``SO_REUSEPORT`` so the kernel spreads new connections over the
  workers. Every response carries ``X-Flagstream-Worker: <index>/<pid>``, and ``/status``
  (``hub``) names the process too, so an operator always knows who answered.
- ``workers == 1`` runs the worker in this process. ``workers > 1`` forks N workers and
  supervises them: a worker that dies while the relay runs (crash, killed by a signal) is
  restarted after a short pause; a worker that exits with an error right after its start
  (port in use, bad config) stops the whole relay with its exit code, since a restart would
  fail the same way.
- SIGTERM drains: ``/readyz`` answers 503 at once, no new streams are accepted, open streams
  are closed spread evenly over ``drain_window`` (their SDKs reconnect elsewhere without a
  herd), then the worker exits 0. SIGINT does the same over a tenth of the window (at most
  1 s). A second signal, more than a second after the first, closes everything at once.
  The supervisor forwards both signals to its workers and exits 0 once all exited 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from aiohttp import web

from relay.hub import Hub
from relay.metrics import (
    CONTENT_TYPE,
    RelayMetrics,
    enable_process_group_metrics,
    forget_worker,
)

if TYPE_CHECKING:
    from relay.config import RelaySettings
    from relay.state import State

log = logging.getLogger("flagstream.relay.server")

__all__ = [
    "listen_socket",
    "observe_relay",
    "port_in_use",
    "process_group_metrics",
    "raise_fd_limit",
    "run_worker",
    "serve",
    "setup_worker_metrics",
]

WORKER_HEADER = "X-Flagstream-Worker"
# A worker that exits with an error sooner than this after its start is not restarted.
_FAST_FAILURE_SECONDS = 10.0
_RESTART_PAUSE_SECONDS = 1.0
_LISTEN_BACKLOG = 4096


def serve(settings: RelaySettings) -> int:
    """Run the relay until it is told to stop; return the process exit code."""
    raise_fd_limit()
    if settings.port != 0 and not settings.share_port:
        problem = port_in_use(settings.host, settings.port)
        if problem is not None:
            print(
                f"flagstream relay: cannot listen on {settings.host}:{settings.port}: "
                f"{problem} (choose another --port, stop the other process, or pass "
                "--share-port true to share it on purpose)",
                file=sys.stderr,
            )
            return 2
    if settings.workers <= 1:
        return run_worker(settings, index=0)
    with process_group_metrics():
        return _Supervisor(settings).run()


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one (each stream is a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT (one per worker)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be ours, or None if it is free.

    Workers bind with SO_REUSEPORT, which would let a second relay started on the port of a
    running one (same user) share it silently: the kernel would split new connections
    between two unrelated relays. A probe bound *without* SO_REUSEPORT fails with EADDRINUSE
    while anyone listens there, so the relay refuses to start instead. (SO_REUSEADDR only
    ignores connections in TIME_WAIT, left over by a relay that just stopped.)
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} is in use"
            return str(exc.strerror or exc)
    return None


# --- one worker ---------------------------------------------------------------------------


def run_worker(settings: RelaySettings, *, index: int) -> int:
    """Run one complete relay on a uvloop loop until SIGTERM/SIGINT; return the exit code."""
    os.environ["FLAGSTREAM_WORKER_INDEX"] = str(index)
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    try:
        sock = listen_socket(settings.host, settings.port)
    except OSError as exc:
        print(
            f"flagstream relay: cannot listen on {settings.host}:{settings.port}: "
            f"{exc.strerror or exc} (choose another --port or stop the other process)",
            file=sys.stderr,
        )
        return 2
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_Worker(settings, index, sock).run())


def _default_app(settings: RelaySettings, hub: Hub) -> web.Application:
    from relay.app import build_app
    from relay.source import KafkaSource

    source = KafkaSource(
        settings.kafka_bootstrap,
        settings.topic,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        client_id=f"flagstream-relay-{os.getpid()}",
    )
    return build_app(settings, source, metrics=hub.metrics, hub=hub)


class _Worker:
    def __init__(self, settings: RelaySettings, index: int, sock: socket.socket) -> None:
        self.settings = settings
        self.index = index
        self.sock = sock
        self.stop_requested: asyncio.Event | None = None
        self.window = settings.drain_window
        self.first_signal_at: float | None = None
        self.drain_task: asyncio.Task[None] | None = None
        self.hub: Hub | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        metrics = RelayMetrics()
        hub = self.hub = Hub(self.settings, metrics)
        hub.detach = True  # aiohttp frees its per-request objects once a stream is set up
        app = _default_app(self.settings, hub)  # its /readyz answers 503 once hub drains
        setup_worker_metrics(app, hub, self.index)
        identity = f"{self.index}/{os.getpid()}"

        async def tag(request: web.Request, response: web.StreamResponse) -> None:
            response.headers[WORKER_HEADER] = identity

        app.on_response_prepare.append(tag)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=5.0,
            # A connection that sends no complete request (idle keep-alive, slowloris,
            # connect-and-vanish) is closed after this; streams are not affected.
            keepalive_timeout=self.settings.idle_connection_timeout,
        )
        await runner.setup()
        site = _guarded_site(runner, self.sock, self.settings, hub)
        await site.start()
        host, port = self.sock.getsockname()[:2]
        log.info("relay worker %s listening on http://%s:%s", identity, host, port)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.stop_requested.wait()
            if self.drain_task is not None:
                await self.drain_task
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            # Detached streams are the hub's alone: close any left before aiohttp stops.
            await hub.drain(0)
            await runner.cleanup()
        log.info("relay worker %s stopped", identity)
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        assert self.hub is not None and self.stop_requested is not None
        now = time.monotonic()
        if self.first_signal_at is None:
            self.first_signal_at = now
            window = self.window if sig == signal.SIGTERM else min(1.0, self.window / 10)
            log.info(
                "relay worker %s: %s, draining %d streams over %.1fs",
                self.index,
                sig.name,
                self.hub.connection_count(),
                window,
            )
            self.drain_task = asyncio.ensure_future(self._drain(window))
        elif now - self.first_signal_at > 1.0:
            log.info("relay worker %s: %s again, closing every stream now", self.index, sig.name)
            self.drain_task = asyncio.ensure_future(self._drain(0.0))

    async def _drain(self, window: float) -> None:
        assert self.hub is not None and self.stop_requested is not None
        await self.hub.drain(window)
        self.stop_requested.set()


# --- supervisor of N workers ----------------------------------------------------------------


class _Supervisor:
    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.ctx = multiprocessing.get_context("fork")
        self.procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self.started: dict[int, float] = {}
        self.stopping: signal.Signals | None = None
        self.exit_code = 0
        self.port = settings.port
        self.reserve: socket.socket | None = None

    def run(self) -> int:
        settings = self.settings
        if self.port == 0:
            # Pick the port once for every worker, and keep it reserved (bound, never
            # listening, so it takes no connections) while the relay runs.
            self.reserve = listen_socket(settings.host, 0)
            self.port = self.reserve.getsockname()[1]
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(settings.workers):
                self._start(index)
            log.info(
                "relay: %d workers on http://%s:%d", settings.workers, settings.host, self.port
            )
            self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.reserve is not None:
                self.reserve.close()
        return self.exit_code

    def _start(self, index: int) -> None:
        child_settings = self.settings.model_copy(update={"port": self.port, "workers": 1})
        proc = self.ctx.Process(
            target=_worker_entry, args=(child_settings, index), name=f"relay-worker-{index}"
        )
        proc.start()
        self.procs[index] = proc
        self.started[index] = time.monotonic()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.stopping is None:
            self.stopping = sig
        for proc in self.procs.values():
            if proc.pid is not None and proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)

    def _watch(self) -> None:
        restart_at: dict[int, float] = {}
        while self.procs or (restart_at and self.stopping is None):
            sentinels = [p.sentinel for p in self.procs.values()]
            multiprocessing.connection.wait(sentinels, timeout=0.5)
            now = time.monotonic()
            for index, proc in list(self.procs.items()):
                if proc.exitcode is None:
                    continue
                del self.procs[index]
                if proc.pid is not None:
                    forget_worker(proc.pid)  # its streams and state leave /metrics
                code = proc.exitcode
                if self.stopping is not None:
                    if code != 0:
                        self.exit_code = 1
                    continue
                if (
                    code is not None
                    and code > 0
                    and now - self.started[index] < _FAST_FAILURE_SECONDS
                ):
                    # It exited by itself right away (port in use, bad config): a restart
                    # would fail the same way. A worker killed by a signal is restarted.
                    log.error("relay worker %d failed at start (exit %s); stopping", index, code)
                    self.exit_code = code
                    self._on_signal(signal.SIGINT, None)
                    continue
                log.warning("relay worker %d exited (code %s); restarting it", index, code)
                restart_at[index] = now + _RESTART_PAUSE_SECONDS
            for index, due in list(restart_at.items()):
                if self.stopping is not None:
                    del restart_at[index]
                elif now >= due:
                    del restart_at[index]
                    self._start(index)


def _guarded_site(
    runner: web.AppRunner, sock: socket.socket, settings: RelaySettings, hub: Hub
) -> web.BaseSite:
    """The worker's site: accepts with back-off on EMFILE and a connection cap derived from
    the open-files limit (``flagstream.fdlimit``). Detached streams belong to the hub, not
    to aiohttp, so the cap counts both."""
    from flagstream.fdlimit import GuardedSite, aiohttp_connections, connection_budget

    server = runner.server
    assert server is not None
    return GuardedSite(
        runner,
        sock,
        backlog=_LISTEN_BACKLOG,
        max_connections=max(settings.max_connections, connection_budget()),
        open_connections=lambda: aiohttp_connections(server) + hub.connection_count(),
        retry_after=settings.retry_after,
    )


def _worker_entry(settings: RelaySettings, index: int) -> None:
    # Forked children start with the parent's handlers; the worker installs its own.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = run_worker(settings, index=index)
    sys.exit(code)


# --- metrics set-up (process group view, per-worker view) -----------------------------------

_METRICS_REFRESH_SECONDS = 1.0


@contextlib.contextmanager
def process_group_metrics() -> Iterator[Path]:
    """A private directory for the workers' metrics while the supervisor runs (see
    ``relay.metrics``): every worker's ``/metrics`` then answers for all of them."""
    directory = Path(tempfile.mkdtemp(prefix="flagstream-relay-metrics-"))
    enable_process_group_metrics(directory)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def setup_worker_metrics(app: web.Application, hub: Hub, index: int) -> None:
    """Name this worker in the metrics, keep on-demand values fresh, serve the worker view.

    ``GET /metrics`` is the process group's view (``RelayMetrics.render``);
    ``GET /metrics/worker`` is the answering worker's own (which one: the
    ``X-Flagstream-Worker`` header and the ``flagstream_relay_worker_info`` series).
    """
    from relay.app import STATE_KEY

    metrics = hub.metrics
    metrics.worker_info.labels(worker=str(index), pid=str(os.getpid())).set(1)
    observe_relay(app[STATE_KEY], hub, metrics)

    async def worker_view(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render_worker(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics/worker", worker_view)

    async def refresh_forever() -> None:
        # Other workers answer scrapes from this worker's file: keep it current.
        while True:
            metrics.refresh()
            await asyncio.sleep(_METRICS_REFRESH_SECONDS)

    async def refresh_task(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(refresh_forever(), name="relay-metrics-refresh")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(refresh_task)


def observe_relay(state: State, hub: Hub, metrics: RelayMetrics) -> None:
    """Gauges read from the relay when metrics are refreshed: lag, the connection limit."""
    metrics.refreshers.append(lambda: metrics.consumer_lag_records.set(state.lag()))
    metrics.refreshers.append(
        lambda: metrics.max_connections.set(float(hub.stats().get("max_connections", 0)))
    )
