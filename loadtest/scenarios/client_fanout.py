"""``client-fanout``: evaluated client streams vs server-side streams, one targeting change.

One environment (``--flags`` flags, a realistic mix: constants, targets, rules, rollouts) on a
fresh topic; a relay (``--workers``, default 1) spawned afresh for every phase, so each
phase's memory is its own:

1. ``server``: N ``/all`` streams (server-side SDKs).
2. ``client K``: N ``/eval/{id}/{ctx}`` streams over K distinct contexts, for each K of
   ``--contexts``.

In each phase one targeting change (the rule of flag ``flip`` changes its variation; every
context matches it, so every stream gets a patch) is written to Kafka, and a sink process
records when each stream received it. Per phase: delivery delay from the write to the
first and the last stream (and p50/p99 over streams), the relay's CPU per delivery, and
its memory per idle stream (RSS growth while the N streams were opened / N). Then the
``evalx`` polling throughput: ``--poll-seconds`` of GET ``/sdk/evalx/{id}/contexts/{ctx}``,
a new context each request, from ``--poll-concurrency`` keep-alive connections in another
process; requests per second and per second of relay CPU (one worker = one core).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import time
from typing import Any, cast

from loadtest.report import Result, Table, fmt_ms
from loadtest.scenarios.common import Context, ScenarioError, start_relay
from loadtest.stats import summarize
from loadtest.sysinfo import cpu_seconds, raise_nofile_limit, rss_bytes
from protocol.envelope import Envelope, encode_envelope
from protocol.environment import CredentialHash, EnvironmentRecord, hash_secret, new_sdk_key
from protocol.keys import partition_for, record_key

NAME = "client-fanout"
ENV_PREFIX = "lt-client"
CLIENT_ID = "c11e47fa0000000000000001"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--streams", type=int, default=10_000, help="streams per phase (N)")
    p.add_argument(
        "--contexts",
        default="10,1000,10000",
        help="distinct contexts of the client phases, comma separated (K)",
    )
    p.add_argument("--flags", type=int, default=350, help="flags in the environment")
    p.add_argument(
        "--dynamic-share",
        type=float,
        default=0.3,
        help="share of the flags whose result depends on the context (targets, two rules, "
        "a third of them a rollout); the rest are off or serve one variation (default 0.3: "
        "the 70%% constant mix of issue 13)",
    )
    p.add_argument("--poll-seconds", type=float, default=10.0, help="evalx polling phase (0: skip)")
    p.add_argument("--poll-concurrency", type=int, default=32, help="polling connections")
    p.add_argument("--no-server", action="store_true", help="skip the server-side phase")


# --- the environment -------------------------------------------------------------------


def _flag(i: int, dynamic_share: float = 0.3) -> dict[str, Any]:
    key = f"flag-{i}"
    base: dict[str, Any] = {
        "key": key,
        "version": 1,
        "on": True,
        "variations": [True, False],
        "fallthrough": {"variation": 0},
        "offVariation": 1,
        "salt": key,
        "targets": [],
        "rules": [],
        "clientSideAvailability": {"usingEnvironmentId": True, "usingMobileKey": True},
    }
    if i % 100 >= round(dynamic_share * 100):
        if i % 2:
            base["on"] = False  # constant: off
        # else constant: on, fallthrough only
    else:
        base["targets"] = [{"variation": 1, "values": [f"user-{j}" for j in range(i, i + 20)]}]
        base["rules"] = [
            {
                "id": f"{key}-r1",
                "variation": 1,
                "clauses": [{"attribute": "country", "op": "in", "values": ["fr", "jp"]}],
            },
            {
                "id": f"{key}-r2",
                "variation": 0,
                "clauses": [{"attribute": "email", "op": "endsWith", "values": ["@corp.example"]}],
            },
        ]
        if i % 3 == 0:
            base["fallthrough"] = {
                "rollout": {
                    "variations": [
                        {"variation": 0, "weight": 50_000},
                        {"variation": 1, "weight": 50_000},
                    ]
                }
            }
    return base


def _flip(version: int, variation: int) -> dict[str, Any]:
    return {
        "key": "flip",
        "version": version,
        "on": True,
        "variations": [True, False],
        "fallthrough": {"variation": 1},
        "offVariation": 1,
        "salt": "flip",
        "targets": [],
        "rules": [
            {
                "id": "plan",
                "variation": variation,
                "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
            }
        ],
        "clientSideAvailability": {"usingEnvironmentId": True, "usingMobileKey": True},
    }


def _context(i: int) -> dict[str, Any]:
    return {
        "kind": "user",
        "key": f"user-{i}",
        "plan": "pro",
        "country": ("us", "de", "fr")[i % 3],
        "email": f"u{i}@example.com",
    }


def _b64(obj: dict[str, Any]) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class _Writer:
    """Writes envelopes straight into the topic, partitioned like the publisher."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from aiokafka import AIOKafkaProducer

        self.topic = topic
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        self.partitions = 0

    async def start(self) -> None:
        await self.producer.start()
        parts = await self.producer.partitions_for(self.topic)
        self.partitions = len(parts)

    async def send(self, env: str, kind: str, key: str, version: int, item: bytes) -> None:
        value = encode_envelope(
            Envelope(
                kind=kind,  # type: ignore[arg-type]
                env=env,
                key=key,
                version=version,
                published_ms=int(time.time() * 1000),
                actor="loadtest",
                item=item,
            )
        )
        await self.producer.send_and_wait(
            self.topic,
            value=value,
            key=record_key(env, kind, key),  # type: ignore[arg-type]
            partition=partition_for(env, self.partitions),
        )

    async def stop(self) -> None:
        await self.producer.stop()


# --- the sink process: N raw streams, delivery times -----------------------------------


class _Stream(asyncio.Protocol):
    __slots__ = ("head", "owner", "state", "transport")

    def __init__(self, owner: _Sink) -> None:
        self.owner = owner
        self.state = 0  # 0 headers, 1 waiting for the initial event, 2 ready, 3 delivered
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.state == 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 200"):
                self.owner.errors += 1
                self.state = 9
                return
            data, self.head = self.head[end + 4 :], b""
            self.state = 1
        if self.state == 1 and (b"event: put" in data or b"event: ping" in data):
            self.state = 2
            self.owner.ready += 1
            return
        if self.state == 2 and self.owner.armed and b"event: patch" in data:
            self.state = 3
            self.owner.times.append(time.time())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state < 3:
            self.owner.lost += 1


class _Sink:
    def __init__(self) -> None:
        self.ready = 0
        self.errors = 0
        self.lost = 0
        self.armed = False
        self.times: list[float] = []
        self.streams: list[_Stream] = []

    async def open(self, port: int, requests: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(256)

        async def one(i: int, request: bytes) -> None:
            async with sem:
                try:
                    _, proto = await loop.create_connection(
                        lambda: _Stream(self),
                        "127.0.0.1",
                        port,
                        local_addr=(f"127.0.0.{2 + i % 8}", 0),
                    )
                except OSError:
                    self.errors += 1
                    return
                proto.transport.write(request)
                self.streams.append(proto)

        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))

    def close(self) -> None:
        for s in self.streams:
            s.transport.close()
        self.streams.clear()


async def _wait_for(done: Any, within: float, step: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if done():
            return
        await asyncio.sleep(step)


def _sink_main(conn: multiprocessing.connection.Connection) -> None:
    async def main() -> None:
        sink = _Sink()
        loop = asyncio.get_running_loop()
        while True:
            cmd, *args = await loop.run_in_executor(None, conn.recv)
            if cmd == "open":
                sink = _Sink()
                await sink.open(*args)
                total = len(args[1])
                await _wait_for(lambda s=sink, n=total: s.ready + s.errors >= n, 600, 0.05)
                conn.send((sink.ready, sink.errors))
            elif cmd == "arm":
                sink.armed = True
                conn.send(True)
            elif cmd == "collect":
                want, within = args
                await _wait_for(lambda s=sink, n=want: len(s.times) >= n, within, 0.01)
                conn.send((list(sink.times), sink.lost))
            elif cmd == "close":
                sink.close()
                await asyncio.sleep(0.5)
                conn.send(True)
            else:
                return

    asyncio.run(main())


def _poll_main(
    conn: multiprocessing.connection.Connection, url: str, seconds: float, n: int
) -> None:
    import aiohttp

    async def main() -> tuple[int, int]:
        ok = bad = 0
        stop = time.monotonic() + seconds
        rng = random.Random(7)
        connector = aiohttp.TCPConnector(limit=n)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal ok, bad
                while time.monotonic() < stop:
                    ctx = _context(rng.randrange(10**9))
                    async with session.get(f"{url}/{_b64(ctx)}") as r:
                        await r.read()
                        if r.status == 200:
                            ok += 1
                        else:
                            bad += 1

            await asyncio.gather(*(worker() for _ in range(n)))
        return ok, bad

    conn.send(asyncio.run(main()))


# --- the scenario ------------------------------------------------------------------------


async def run(ctx: Context) -> Result:
    a = ctx.args
    if a.streams < 1 or a.flags < 1:
        raise ScenarioError("--streams and --flags must be positive")
    if not 0 <= a.dynamic_share <= 1:
        raise ScenarioError("--dynamic-share is a fraction between 0 and 1")
    try:
        contexts = [int(k) for k in a.contexts.split(",") if k.strip()]
    except ValueError:
        raise ScenarioError(
            "--contexts is a comma-separated list of integers, e.g. 10,1000"
        ) from None
    if any(k < 1 for k in contexts):
        raise ScenarioError("--contexts values must be positive")
    if not ctx.spawn:
        raise ScenarioError("client-fanout spawns its own relays (one per phase): drop --relay")
    raise_nofile_limit(a.streams + 512)
    a.relay_env = [*a.relay_env, "FLAGSTREAM_RELAY_HEARTBEAT_INTERVAL=600"]
    result = ctx.result(
        NAME,
        {
            "streams": a.streams,
            "contexts": contexts,
            "flags": a.flags + 1,
            "dynamic_share": a.dynamic_share,
            "workers": a.workers,
            "poll_seconds": a.poll_seconds,
            "poll_concurrency": a.poll_concurrency,
        },
    )
    result.via = "kafka"
    t_start = time.perf_counter()
    topic = ctx.new_topic(NAME)
    from loadtest.driver import ensure_topic

    await ensure_topic(a.kafka, topic, 3)
    writer = _Writer(a.kafka, topic)
    await writer.start()
    env = f"{ENV_PREFIX}-{int(time.time())}"
    sdk_key = new_sdk_key()
    record = EnvironmentRecord(
        key=env,
        name=env,
        version=1,
        sdk_keys=(CredentialHash(hash_secret(sdk_key)),),
        mobile_keys=(),
        client_side_id=CLIENT_ID,
    )
    await writer.send(env, "env", env, 1, record.to_json())
    for i in range(a.flags):
        item = json.dumps(_flag(i, a.dynamic_share), separators=(",", ":")).encode()
        await writer.send(env, "flag", f"flag-{i}", 1, item)
    flip_version = 1
    await writer.send(env, "flag", "flip", 1, json.dumps(_flip(1, 0)).encode())

    parent, child = multiprocessing.Pipe()
    sink = multiprocessing.get_context("fork").Process(
        target=_sink_main, args=(child,), daemon=True
    )
    sink.start()
    phases: list[tuple[str, int | None]] = [] if a.no_server else [("server /all", None)]
    phases += [(f"client /eval, K={k}", k) for k in contexts]
    rows: list[list[str]] = []
    figures: dict[str, Any] = {}
    ok = True
    try:
        for label, k in phases:
            relay = await start_relay(ctx, topic, name=f"relay-{len(rows)}")
            port = int(relay.url.rsplit(":", 1)[1])
            if k is None:
                req = (
                    f"GET /all HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {sdk_key}\r\n"
                    "Accept: text/event-stream\r\n\r\n"
                ).encode()
                requests = [req] * a.streams
            else:
                requests = [
                    (
                        f"GET /eval/{CLIENT_ID}/{_b64(_context(i % k))} HTTP/1.1\r\n"
                        "Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
                    ).encode()
                    for i in range(a.streams)
                ]
            await asyncio.sleep(1.0)
            rss0 = rss_bytes(relay.pid)
            t_open = time.perf_counter()
            parent.send(("open", port, requests))
            ready, errors = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
            open_s = time.perf_counter() - t_open
            await asyncio.sleep(2.0)
            rss1 = rss_bytes(relay.pid)
            if ready < a.streams:
                raise ScenarioError(
                    f"{label}: only {ready}/{a.streams} streams opened ({errors} errors)"
                )
            parent.send(("arm",))
            parent.recv()
            cpu0 = cpu_seconds(relay.pid)
            flip_version += 1
            item = json.dumps(_flip(flip_version, flip_version % 2)).encode()
            sent = time.time()
            await writer.send(env, "flag", "flip", flip_version, item)
            parent.send(("collect", a.streams, 120.0))
            times, lost = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
            cpu = cpu_seconds(relay.pid) - cpu0
            delays = sorted(t - sent for t in times)
            s = summarize(delays)
            per_stream = (rss1 - rss0) / a.streams
            figures[label] = {
                "streams": a.streams,
                "delivered": len(times),
                "lost": lost,
                "first_s": delays[0] if delays else None,
                "delay_s": s,
                "relay_cpu_s": cpu,
                "cpu_per_delivery_us": cpu / max(1, len(times)) * 1e6,
                "rss_per_idle_stream_bytes": per_stream,
                "open_s": open_s,
            }
            ok = ok and len(times) == a.streams
            rows.append(
                [
                    label,
                    f"{len(times)}/{a.streams}",
                    fmt_ms(delays[0] if delays else None),
                    fmt_ms(s["p50"]),
                    fmt_ms(s["p99"]),
                    fmt_ms(s["max"]),
                    f"{cpu / max(1, len(times)) * 1e6:.1f} µs",
                    f"{per_stream / 1024:.2f} KiB",
                    f"{open_s:.1f} s",
                ]
            )
            parent.send(("close",))
            parent.recv()
            relay.close()
            ctx.services.remove(relay)
        if a.poll_seconds > 0:
            relay = await start_relay(ctx, topic, name="relay-poll")
            url = f"{relay.url}/sdk/evalx/{CLIENT_ID}/contexts"
            pparent, pchild = multiprocessing.Pipe()
            proc = multiprocessing.get_context("fork").Process(
                target=_poll_main, args=(pchild, url, a.poll_seconds, a.poll_concurrency)
            )
            cpu0 = cpu_seconds(relay.pid)
            t0 = time.perf_counter()
            proc.start()
            good, bad = await asyncio.get_running_loop().run_in_executor(None, pparent.recv)
            span = time.perf_counter() - t0
            proc.join(10)
            cpu = cpu_seconds(relay.pid) - cpu0
            figures["evalx poll"] = {
                "requests": good,
                "errors": bad,
                "seconds": span,
                "requests_per_s": good / span,
                "relay_cpu_s": cpu,
                "requests_per_relay_cpu_s": good / cpu if cpu else None,
            }
            ok = ok and bad == 0
            result.tables.append(
                Table(
                    f"evalx poll, {a.flags + 1} flags ({a.dynamic_share:.0%} targeting), a new "
                    "context per request, "
                    f"{a.poll_concurrency} connections, {span:.0f} s",
                    ["requests", "errors", "requests/s", "relay CPU", "requests per relay CPU-s"],
                    [
                        [
                            str(good),
                            str(bad),
                            f"{good / span:.0f}",
                            f"{cpu / span:.0%} of a core",
                            f"{good / cpu:.0f}" if cpu else "-",
                        ]
                    ],
                )
            )
    finally:
        parent.send(("stop",))
        sink.join(10)
        await writer.stop()
        await ctx.cleanup()
    result.tables.insert(
        0,
        Table(
            f"one targeting change to {a.streams} streams ({a.flags + 1} flags; every stream's "
            "result changes)",
            [
                "phase",
                "delivered",
                "first",
                "p50",
                "p99",
                "last",
                "relay CPU / delivery",
                "RSS / idle stream",
                "open all",
            ],
            rows,
        ),
    )
    server = figures.get("server /all")
    for label, fig in figures.items():
        if server and label.startswith("client") and fig["delay_s"]["max"]:
            fig["last_over_server_last"] = fig["delay_s"]["max"] / server["delay_s"]["max"]
    result.figures = figures
    result.notes.append(
        "delays are from the write to Kafka to the sink's read; load average at the end: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    result.ok = ok
    result.duration_s = time.perf_counter() - t_start
    return result
