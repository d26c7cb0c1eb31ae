"""Fan-out benchmark: the hub's lean path vs aiohttp ``StreamResponse`` vs the kernel floor.

Self-contained (no Kafka, no relay app): server processes hold N SSE streams on loopback,
sink processes hold the client ends, a coordinator runs rounds and collects figures.

Server paths (``--paths``):

- ``lean``: ``relay.hub.Hub.serve_stream`` (the relay's path): aiohttp parses the request and
  sends the headers, then the hub takes the transport over and writes one pre-framed bytes
  object per round with ``transport.write()``. Every lean run also measures the **floor**:
  a plain ``os.write()`` (= ``send()``) loop of the same framed bytes over the *same*
  connections' file descriptors, delivered to the same sinks.
- ``aiohttp-queue``: the textbook aiohttp way: one handler task per stream waits on its own
  ``asyncio.Queue`` and ``await resp.write(frame)``.
- ``aiohttp-write``: one broadcast loop ``for resp in streams: await resp.write(frame)``.

Per run it reports: server user-space memory per idle stream (RSS growth / N after
``gc.collect()``), the server's time per round (first publish to the last write returned,
µs per write), and the delivery delay of each round at every client (from the publish to
the sink's ``data_received``; p50/p99/max over all streams of all rounds), for the path and
its floor. Above ~18,000 streams the streams are spread over several server processes
(``--per-process``; the hard RLIMIT_NOFILE of this machine is 20,000), each publishing the
same change at the same moment, like relay workers reading one Kafka record.

``--real-relay BOOTSTRAP`` measures instead the memory per idle stream of a real relay
(``python -m relay.cli --workers 1``) reading a topic it seeds on that Kafka broker with one
environment and ``--flags`` flags.

Loopback only; every wait is bounded. Run: ``python -m loadtest.bench_fanout --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import socket
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from flagstream import procgroup
from loadtest.sysinfo import raise_nofile_limit, rss_bytes

__all__ = ["main"]

ENV = "bench"
INITIAL = b": connected\n\n"
_ROUND_TIMEOUT = 60.0
_CONNECT_TIMEOUT = 300.0


def _rss() -> int:
    return rss_bytes(os.getpid(), tree=False)


def _percentile(ordered: Sequence[float], p: float) -> float:
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _summary(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    ordered = sorted(v * scale for v in values)
    return {
        "p50": round(_percentile(ordered, 50), 3),
        "p99": round(_percentile(ordered, 99), 3),
        "max": round(ordered[-1], 3) if ordered else math.nan,
    }


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def _payload(frame_bytes: int, round_no: int) -> bytes:
    head = b'{"key":"bench","version":%d,"on":true,"pad":"' % round_no
    pad = max(0, frame_bytes - len(head) - 2)
    return head + b"x" * pad + b'"}'


# --- server processes ---------------------------------------------------------------------


class _Control:
    """Commands from the coordinator, handled on the child's event loop."""

    def __init__(
        self,
        conn: multiprocessing.connection.Connection,
        handler: Callable[[tuple[Any, ...]], Any],
    ) -> None:
        self.conn = conn
        self.handler = handler
        self.stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while self.conn.poll():
            msg = self.conn.recv()
            if msg[0] == "quit":
                self.stopped.set()
                return
            result = self.handler(msg)
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                task.add_done_callback(self._reply)
            else:
                self.conn.send(result)

    def _reply(self, task: asyncio.Future[Any]) -> None:
        exc = task.exception()
        self.conn.send(("error", repr(exc)) if exc is not None else task.result())


def _server_main(
    path: str,
    sock: socket.socket,
    frame_bytes: int,
    ctrl: multiprocessing.connection.Connection,
) -> None:
    raise_nofile_limit(0)
    loop = _new_loop()
    try:
        loop.run_until_complete(_Server(path, sock, ctrl, frame_bytes).run())
    finally:
        loop.close()


class _Server:
    def __init__(
        self,
        path: str,
        sock: socket.socket,
        ctrl: multiprocessing.connection.Connection,
        frame_bytes: int,
    ) -> None:
        self.path = path
        self.sock = sock
        self.ctrl = ctrl
        self.frame_bytes = frame_bytes
        self.queues: list[asyncio.Queue[bytes]] = []
        self.responses: list[Any] = []
        self.written = 0
        self.all_written: asyncio.Event | None = None
        self.hub: Any = None

    async def run(self) -> None:
        from aiohttp import web

        from relay.config import RelaySettings
        from relay.hub import Hub
        from relay.metrics import RelayMetrics

        settings = RelaySettings(
            heartbeat_interval=3600.0, max_connections=1_000_000, max_buffer_bytes=1 << 20
        )
        self.hub = Hub(settings, RelayMetrics())
        self.hub.detach = True  # as relay.server runs it
        app = web.Application()
        handler = {
            "lean": self._lean,
            "aiohttp-queue": self._queue,
            "aiohttp-write": self._write,
        }[self.path]
        app.router.add_get("/all", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.SockSite(runner, self.sock, backlog=4096)
        await site.start()
        gc.collect()
        control = _Control(self.ctrl, self._command)
        self.ctrl.send(("listening", _rss()))
        await control.stopped.wait()
        with contextlib.suppress(Exception):
            await self.hub.drain(0)
        await runner.cleanup()

    # handlers ------------------------------------------------------------------------------

    async def _lean(self, request: Any) -> Any:
        return await self.hub.serve_stream(
            request, env=ENV, stream="all", initial=INITIAL, start_offset=0
        )

    async def _prepared(self, request: Any) -> Any:
        from aiohttp import web

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(INITIAL)
        return resp

    async def _queue(self, request: Any) -> Any:
        resp = await self._prepared(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.queues.append(queue)
        while True:
            data = await queue.get()
            await resp.write(data)
            self.written += 1
            if self.written == len(self.queues) and self.all_written is not None:
                self.all_written.set()

    async def _write(self, request: Any) -> Any:
        resp = await self._prepared(request)
        self.responses.append(resp)
        await asyncio.Event().wait()  # held until the client or the server goes
        return resp

    # commands ------------------------------------------------------------------------------

    def _count(self) -> int:
        if self.path == "lean":
            return int(self.hub.connection_count())
        return len(self.queues) if self.path == "aiohttp-queue" else len(self.responses)

    def _command(self, msg: tuple[Any, ...]) -> Any:
        kind = msg[0]
        if kind == "count":
            return ("count", self._count())
        if kind == "rss":
            gc.collect()
            return ("rss", _rss(), self._count())
        if kind == "round":
            return self._round(msg[1], msg[2])
        if kind == "floor":
            return ("floor", *self._floor(msg[1]))
        raise ValueError(f"unknown command {kind!r}")

    async def _round(self, round_no: int, published_ms: int) -> tuple[Any, ...]:
        from relay.state import Change

        item = _payload(self.frame_bytes, round_no)
        cpu0 = time.process_time()
        t0 = time.monotonic()
        if self.path == "lean":
            hub = self.hub
            hub.publish(
                Change(
                    env=ENV,
                    kind="flag",
                    key="bench",
                    version=round_no,
                    deleted=False,
                    item=item,
                    offset=round_no,
                    published_ms=published_ms,
                    position=f"b:{round_no}",
                )
            )
            await hub.wait_idle()
        else:
            from protocol import ld

            frame = ld.patch_event("flag", "bench", item, f"b:{round_no}")
            if self.path == "aiohttp-queue":
                self.written = 0
                self.all_written = asyncio.Event()
                for q in self.queues:
                    q.put_nowait(frame)
                await self.all_written.wait()
            else:
                for resp in list(self.responses):
                    await resp.write(frame)
        t1 = time.monotonic()
        return ("round", t1 - t0, time.process_time() - cpu0, self._count())

    def _floor(self, round_no: int) -> tuple[float, float, int]:
        """The same frame, framed once, written with one os.write() per stream."""
        from protocol import ld
        from relay.stream import frame

        item = _payload(self.frame_bytes, round_no)
        data = frame(ld.patch_event("flag", "bench", item, f"b:{round_no}"), True)
        fds = [
            c.transport.get_extra_info("socket").fileno()
            for env in self.hub._envs.values()
            for conns in env.groups.values()
            for c in conns
        ]
        write = os.write
        cpu0 = time.process_time()
        t0 = time.monotonic()
        for fd in fds:
            write(fd, data)
        t1 = time.monotonic()
        return t1 - t0, time.process_time() - cpu0, len(fds)


# --- sink processes -----------------------------------------------------------------------


class _SinkStream(asyncio.Protocol):
    __slots__ = ("index", "ready", "sink")

    def __init__(self, sink: _Sink, index: int) -> None:
        self.sink = sink
        self.index = index
        self.ready = False

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if not self.ready:
            if sink.ready_marker in data:
                self.ready = True
                sink.on_ready()
            return
        if sink.armed and sink.arrival[self.index] == 0.0:
            sink.arrival[self.index] = time.monotonic()
            sink.arrived += 1
            if sink.arrived == sink.n and sink.done is not None:
                sink.done.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.lost += 1


_BENCH_REQUEST = b"GET /all HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"


def _sink_main(
    ports: list[int],
    n: int,
    sink_index: int,
    request: bytes,
    ready_marker: bytes,
    ctrl: multiprocessing.connection.Connection,
) -> None:
    raise_nofile_limit(0)
    loop = _new_loop()
    try:
        loop.run_until_complete(_Sink(ports, n, sink_index, request, ready_marker, ctrl).run())
    finally:
        loop.close()


class _Sink:
    def __init__(
        self,
        ports: list[int],
        n: int,
        sink_index: int,
        request: bytes,
        ready_marker: bytes,
        ctrl: multiprocessing.connection.Connection,
    ) -> None:
        self.ports = ports
        self.n = n
        self.sink_index = sink_index
        self.request = request
        self.ready_marker = ready_marker  # a stream is up once its first bytes hold this
        self.ctrl = ctrl
        self.ready_count = 0
        self.all_ready = asyncio.Event()
        self.arrival = array("d", bytes(8 * n))
        self.arrived = 0
        self.armed = False
        self.done: asyncio.Event | None = None
        self.lost = 0
        self.transports: list[asyncio.BaseTransport] = []

    def on_ready(self) -> None:
        self.ready_count += 1
        if self.ready_count == self.n:
            self.all_ready.set()

    async def _connect(self, i: int, port: int, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Spread over source addresses: no (source, destination) pair runs out of ports.
        ip_bind_no_port = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
        sock.setsockopt(socket.IPPROTO_IP, ip_bind_no_port, 1)
        sock.bind((f"127.{1 + self.sink_index}.{(i // 250) % 250}.{2 + i % 250}", 0))
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        transport, _ = await loop.create_connection(lambda: _SinkStream(self, i), sock=sock)
        transport.write(request)
        self.transports.append(transport)

    async def run(self) -> None:
        control = _Control(self.ctrl, self._command)
        request = self.request
        gate = asyncio.Semaphore(256)

        async def one(i: int) -> None:
            async with gate:
                await self._connect(i, self.ports[i % len(self.ports)], request)

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(self.n)))
        await asyncio.wait_for(self.all_ready.wait(), _CONNECT_TIMEOUT)
        self.ctrl.send(("ready", time.monotonic() - started))
        await control.stopped.wait()
        for t in self.transports:
            t.abort()  # type: ignore[attr-defined]

    def _command(self, msg: tuple[Any, ...]) -> Any:
        if msg[0] == "arm":
            for i in range(self.n):
                self.arrival[i] = 0.0
            self.arrived = 0
            self.done = asyncio.Event()
            self.armed = True
            return ("armed",)
        if msg[0] == "collect":
            return self._collect()
        raise ValueError(msg[0])

    async def _collect(self) -> tuple[Any, ...]:
        assert self.done is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), _ROUND_TIMEOUT)
        self.armed = False
        return ("arrival", self.arrival.tobytes(), self.arrived, self.lost)


# --- coordinator --------------------------------------------------------------------------


class _Child:
    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(*args, child_conn), daemon=True)
        self.proc.start()
        child_conn.close()

    def ask(self, *msg: Any, timeout: float = _ROUND_TIMEOUT + 10) -> tuple[Any, ...]:
        self.conn.send(msg)
        return self.recv(timeout)

    def recv(self, timeout: float) -> tuple[Any, ...]:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"child {self.proc.pid} did not answer within {timeout}s")
        reply: tuple[Any, ...] = self.conn.recv()
        if reply[0] == "error":
            raise RuntimeError(f"child {self.proc.pid}: {reply[1]}")
        return reply

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("quit",))
        self.proc.join(20)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def run_case(
    path: str,
    connections: int,
    *,
    rounds: int,
    frame_bytes: int,
    per_process: int,
    per_sink: int,
    with_floor: bool,
) -> dict[str, Any]:
    """One server path at one stream count: memory, per-write cost, delivery delays."""
    from relay.server import listen_socket

    servers_n = max(1, math.ceil(connections / per_process))
    sinks_n = max(1, math.ceil(connections / per_sink))
    servers: list[_Child] = []
    sinks: list[_Child] = []
    try:
        ports = []
        for _ in range(servers_n):
            sock = listen_socket("127.0.0.1", 0)
            ports.append(sock.getsockname()[1])
            servers.append(_Child(_server_main, path, sock, frame_bytes))
            sock.close()
        base_rss = [s.recv(30)[1] for s in servers]
        shares = [
            connections // sinks_n + (1 if i < connections % sinks_n else 0) for i in range(sinks_n)
        ]
        t0 = time.monotonic()
        for i, share in enumerate(shares):
            # Each sink spreads its streams over every server evenly.
            sinks.append(_Child(_sink_main, ports, share, i, _BENCH_REQUEST, b"connected"))
        for s in sinks:
            s.recv(_CONNECT_TIMEOUT)
        connect_s = time.monotonic() - t0
        time.sleep(0.5)
        rss = [s.ask("rss") for s in servers]
        held = sum(r[2] for r in rss)
        grown = sum(r[1] for r in rss) - sum(base_rss)

        def one_round(kind: str, round_no: int) -> tuple[list[float], float, float]:
            for s in sinks:
                s.ask("arm")
            published = time.monotonic()
            published_ms = int(time.time() * 1000)
            for s in servers:
                s.conn.send((kind, round_no, published_ms) if kind == "round" else (kind, round_no))
            replies = [s.recv(_ROUND_TIMEOUT + 10) for s in servers]
            delays: list[float] = []
            for s in sinks:
                _, raw, arrived, lost = s.ask("collect")
                if arrived < len(raw) // 8:
                    raise RuntimeError(f"a sink got {arrived} of {len(raw) // 8} (lost {lost})")
                delays.extend(t - published for t in array("d", raw))
            wall = max(r[1] for r in replies)
            cpu = sum(r[2] for r in replies)
            return delays, wall, cpu

        result: dict[str, Any] = {
            "path": path,
            "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
            "streams": held,
            "server_processes": servers_n,
            "sink_processes": sinks_n,
            "connect_seconds": round(connect_s, 2),
            "rss_per_stream_bytes": round(grown / max(1, held)),
            "frame_bytes": frame_bytes,
        }
        one_round("round", 1)  # warm-up (first-write effects)
        kinds = ["round"] + (["floor"] if with_floor else [])
        delays_of: dict[str, list[float]] = {k: [] for k in kinds}
        walls_of: dict[str, list[float]] = {k: [] for k in kinds}
        cpus_of: dict[str, list[float]] = {k: [] for k in kinds}
        # Hub and floor rounds alternate, so both meet the same (shared, noisy) machine.
        for r in range(rounds):
            for kind in kinds:
                delays, wall, cpu = one_round(kind, 2 + r * len(kinds) + kinds.index(kind))
                delays_of[kind].extend(delays)
                walls_of[kind].append(wall)
                cpus_of[kind].append(cpu)
                time.sleep(0.05)
        for kind in kinds:
            wall = _percentile(sorted(walls_of[kind]), 50)
            cpu = _percentile(sorted(cpus_of[kind]), 50)
            result["hub" if kind == "round" else "floor"] = {
                "delivery_ms": _summary(delays_of[kind]),
                "round_ms_p50": round(wall * 1000, 3),
                "us_per_write_wall": round(wall / held * servers_n * 1e6, 3),
                "us_per_write_cpu": round(cpu / held * 1e6, 3),
                "writes_per_second": round(held / servers_n / wall),
            }
        if with_floor:
            hub, floor = result["hub"], result["floor"]
            # Floor cost / hub cost: 1.0 = at the floor (>1 is noise on a shared machine).
            result["efficiency_vs_floor"] = {
                "cpu_per_write": round(floor["us_per_write_cpu"] / hub["us_per_write_cpu"], 3),
                "wall_per_write": round(floor["us_per_write_wall"] / hub["us_per_write_wall"], 3),
                "delivery_p50": round(floor["delivery_ms"]["p50"] / hub["delivery_ms"]["p50"], 3),
                "delivery_p99": round(floor["delivery_ms"]["p99"] / hub["delivery_ms"]["p99"], 3),
            }
        result["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
        return result
    finally:
        for c in sinks + servers:
            c.stop()


def _seed_topic(bootstrap: str, topic: str, env: str, sdk_key: str, flags: int) -> None:
    """A compacted topic with one environment (this SDK key) and ``flags`` flags."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from protocol.envelope import Envelope, encode_envelope
    from protocol.environment import CredentialHash, EnvironmentRecord, hash_secret
    from protocol.keys import partition_for, record_key

    async def seed() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})]
            )
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            now = int(time.time() * 1000)
            record = EnvironmentRecord(
                key=env,
                name=env,
                version=1,
                sdk_keys=(CredentialHash(hash_secret(sdk_key), None),),
                mobile_keys=(),
                client_side_id="0" * 24,
            )
            envelopes = [Envelope("env", env, env, 1, now, "bench", record.to_json())]
            for i in range(flags):
                item = b'{"key":"flag-%d","version":1,"on":true,"variations":[true,false]}' % i
                envelopes.append(Envelope("flag", env, f"flag-{i}", 1, now, "bench", item))
            for e in envelopes:
                await producer.send_and_wait(
                    topic,
                    key=record_key(e.env, e.kind, e.key),
                    value=encode_envelope(e),
                    partition=partition_for(env, 1),
                )
        finally:
            await producer.stop()

    asyncio.run(seed())


def run_real_relay(bootstrap: str, connections: int, flags: int) -> dict[str, Any]:
    """User-space memory per idle stream of a real relay (``relay.cli``, one worker)."""
    import subprocess
    import urllib.request

    from loadtest.procs import free_port

    topic = f"bench-fanout-{os.getpid()}-{int(time.time())}"
    sdk_key = f"sdk-bench-{os.getpid()}"
    _seed_topic(bootstrap, topic, "bench", sdk_key, flags)
    port = free_port()
    env = dict(
        os.environ,
        FLAGSTREAM_KAFKA_BOOTSTRAP=bootstrap,
        FLAGSTREAM_TOPIC=topic,
        FLAGSTREAM_RELAY_PORT=str(port),
        FLAGSTREAM_RELAY_WORKERS="1",
    )
    relay = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "--log-level", "WARNING"],
        env=env,
        start_new_session=True,  # own process group: procgroup.stop_group reaches it all
    )
    sinks: list[_Child] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or relay.poll() is not None:
                raise RuntimeError("the relay did not become ready")
            time.sleep(0.2)
        request = (f"GET /all HTTP/1.1\r\nHost: bench\r\nAuthorization: {sdk_key}\r\n\r\n").encode()
        warm = _Child(_sink_main, [port], 100, 200, request, b"event: put")
        warm.recv(_CONNECT_TIMEOUT)  # one-time allocations are not per-stream memory
        time.sleep(1.0)
        base = rss_bytes(relay.pid, tree=False)
        per_sink = 18_000
        count = math.ceil(connections / per_sink)
        for i in range(count):
            share = connections // count + (1 if i < connections % count else 0)
            sinks.append(_Child(_sink_main, [port], share, i, request, b"event: put"))
        for sink in sinks:
            sink.recv(_CONNECT_TIMEOUT)
        time.sleep(2.0)
        grown = rss_bytes(relay.pid, tree=False) - base
        sinks.append(warm)
        return {
            "path": "real-relay",
            "streams": connections,
            "flags": flags,
            "rss_per_stream_bytes": round(grown / connections),
            "relay_rss_mb": round(rss_bytes(relay.pid, tree=False) / 1e6, 1),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        for sink in sinks:
            sink.stop()
        procgroup.stop_group(relay, 30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_fanout",
        description="Fan-out: lean hub path vs aiohttp StreamResponse vs the send() floor.",
    )
    parser.add_argument(
        "--paths", default="lean,aiohttp-queue,aiohttp-write", help="comma-separated paths"
    )
    parser.add_argument(
        "--connections", default="1000,5000", help="comma-separated stream counts (lean)"
    )
    parser.add_argument(
        "--compare-at", type=int, default=5000, help="stream count for the aiohttp paths"
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--frame-bytes", type=int, default=300, help="flag JSON size")
    parser.add_argument("--per-process", type=int, default=18_000, help="streams per server")
    parser.add_argument("--per-sink", type=int, default=18_000, help="streams per sink process")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(
        "--real-relay",
        metavar="KAFKA_BOOTSTRAP",
        help="instead: memory per idle stream of a real relay (relay.cli) reading a topic "
        "this seeds on that broker; uses the first --connections value",
    )
    parser.add_argument("--flags", type=int, default=20, help="flags in the real relay's env")
    args = parser.parse_args(argv)

    hard = raise_nofile_limit(0)
    if args.per_process + 100 > hard or args.per_sink + 100 > hard:
        print(f"bench_fanout: per-process sizes must stay below RLIMIT_NOFILE ({hard})")
        return 2
    results = []
    if args.real_relay:
        n = int(args.connections.split(",")[0])
        res = run_real_relay(args.real_relay, n, args.flags)
        print(json.dumps(res), flush=True)
        results.append(res)
    paths = [] if args.real_relay else [p.strip() for p in args.paths.split(",") if p.strip()]
    for path in paths:
        counts = (
            [int(c) for c in args.connections.split(",")] if path == "lean" else [args.compare_at]
        )
        for n in counts:
            res = run_case(
                path,
                n,
                rounds=args.rounds,
                frame_bytes=args.frame_bytes,
                per_process=args.per_process,
                per_sink=args.per_sink,
                with_floor=path == "lean",
            )
            print(json.dumps(res), flush=True)
            results.append(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": list(argv or sys.argv[1:]), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
