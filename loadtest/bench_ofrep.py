"""OFREP evaluation benchmark: single-flag and bulk requests/s of one relay worker.

Run it with the local stack up::

    .venv/bin/flagstream stack up
    .venv/bin/python -m loadtest.bench_ofrep --seconds 10

It creates a fresh topic on the local Kafka, writes one environment with ``--flags`` flags (a
realistic mix: most constant, some with attribute rules, some percentage rollouts; see
``bench_flags``), spawns a relay with one worker (``flagstream relay``, uvloop) pinned to one
core, and drives it from this process pinned to another core: ``--connections`` keep-alive
HTTP/1.1 connections, each sending its next request when the previous answer is complete
(closed loop), every request with a different context (``--contexts`` distinct
``targetingKey``/attribute combinations, cycled). ``single`` asks one flag per request
(cycling over the flags that are evaluated per context, i.e. not constant); ``bulk`` asks all
flags; ``--floor`` first measures ``GET /livez`` the same way (what any request costs the
relay). Each phase warms up for ``--warmup`` seconds, then counts ``--seconds``; it prints
requests/s, p50/p99 latency (request written → last byte of the answer read), the statuses
seen, the relay's CPU time per request (net of what it burns idle, measured for 3 s first)
and the requests per core-second that implies, and the machine's load. ``--json`` prints the
same as JSON. Loopback only; bounded by ``--seconds``; the topic is deleted afterwards.

The load generator is a hand-written asyncio protocol (pre-encoded requests, a minimal
response reader), so that it costs less CPU per request than the relay it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from loadtest.driver import DriverError, delete_topic, ensure_topic
from loadtest.procs import Service, ServiceError, spawn_relay, wait_ready
from loadtest.sysinfo import cpu_seconds, machine_facts
from protocol.envelope import Envelope, encode_envelope
from protocol.environment import CredentialHash, EnvironmentRecord, hash_secret, new_sdk_key
from protocol.keys import partition_for, record_key

__all__ = ["bench_flags", "main"]

ENV = "bench"
PARTITIONS = 3
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


def bench_flags(count: int) -> list[dict[str, Any]]:
    """``count`` flags: 70% constant (on or off), 20% with attribute rules, 10% rollouts."""
    flags = []
    for i in range(count):
        flag: dict[str, Any] = {
            "key": f"flag-{i}",
            "version": 1,
            "on": i % 10 != 9,
            "variations": [True, False],
            "fallthrough": {"variation": 0},
            "offVariation": 1,
            "salt": f"salt-{i}",
        }
        bucket = i % 10
        if bucket in (1, 4):
            flag["variations"] = ["control", "treatment", "holdout"]
            flag["rules"] = [
                {
                    "id": f"r{i}-a",
                    "variation": 1,
                    "clauses": [{"attribute": "plan", "op": "in", "values": ["pro", "team"]}],
                },
                {
                    "id": f"r{i}-b",
                    "variation": 2,
                    "clauses": [
                        {"attribute": "email", "op": "endsWith", "values": ["@example.com"]}
                    ],
                },
            ]
        elif bucket == 7:
            flag["fallthrough"] = {
                "rollout": {
                    "variations": [
                        {"variation": 0, "weight": 30_000},
                        {"variation": 1, "weight": 70_000},
                    ]
                }
            }
        flags.append(flag)
    return flags


def _contexts(count: int) -> list[bytes]:
    plans = ["free", "pro", "team", "enterprise"]
    domains = ["example.com", "other.org", "mail.net"]
    return [
        json.dumps(
            {
                "context": {
                    "targetingKey": f"user-{i}",
                    "plan": plans[i % len(plans)],
                    "email": f"user{i}@{domains[i % len(domains)]}",
                    "country": "CA" if i % 2 else "DE",
                }
            },
            separators=(",", ":"),
        ).encode()
        for i in range(count)
    ]


def _request(path: str, host: str, sdk_key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {sdk_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class Phase:
    """The counts of one measured phase."""

    requests: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    bytes_read: int = 0
    recording: bool = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending its requests one after the other."""

    def __init__(self, requests: list[bytes], start: int, phase: Phase, stop: float) -> None:
        self.requests = requests
        self.index = start
        self.phase = phase
        self.stop = stop
        self.buffer = bytearray()
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        request = self.requests[self.index % len(self.requests)]
        self.index += 1
        self.sent = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        match = _CONTENT_LENGTH.search(buffer, 0, end + 2)
        length = int(match.group(1)) if match else 0
        total = end + 4 + length
        if len(buffer) < total:
            return
        now = time.perf_counter()
        phase = self.phase
        if phase.recording:
            status = int(buffer[9:12])
            phase.requests += 1
            phase.latencies.append(now - self.sent)
            phase.statuses[status] = phase.statuses.get(status, 0) + 1
            phase.bytes_read += total
        del buffer[:total]
        if now >= self.stop:
            assert self.transport is not None
            self.transport.close()
            return
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _drive(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int,
    warmup: float,
    seconds: float,
    relay_pid: int,
) -> tuple[Phase, float, float]:
    """Run one phase; returns its counts, its measured seconds and the relay's CPU seconds
    over them."""
    loop = asyncio.get_running_loop()
    phase = Phase()
    began = time.perf_counter()
    stop = began + warmup + seconds
    step = max(1, len(requests) // connections)
    conns = []
    for i in range(connections):
        protocol = _Connection(requests, i * step, phase, stop)
        await loop.create_connection(lambda p=protocol: p, host, port)  # type: ignore[misc]
        conns.append(protocol)
    await asyncio.sleep(max(0.0, began + warmup - time.perf_counter()))
    phase.recording = True
    cpu_from = cpu_seconds(relay_pid)
    measured_from = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(c.done for c in conns)), seconds + 30)
    phase.recording = False
    elapsed = time.perf_counter() - measured_from
    return phase, elapsed, cpu_seconds(relay_pid) - cpu_from


def _summary(
    name: str, phase: Phase, elapsed: float, relay_cpu: float, idle_share: float
) -> dict[str, Any]:
    busy = max(0.0, relay_cpu - idle_share * elapsed)
    per_request = busy / max(1, phase.requests)
    return {
        "phase": name,
        "requests": phase.requests,
        "seconds": round(elapsed, 2),
        "requests_per_second": round(phase.requests / elapsed, 1),
        "p50_ms": round(_percentile(phase.latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(phase.latencies, 0.99) * 1000, 2),
        "statuses": {str(k): v for k, v in sorted(phase.statuses.items())},
        "mean_response_bytes": round(phase.bytes_read / max(1, phase.requests)),
        "relay_cpu_seconds": round(relay_cpu, 2),
        "relay_idle_cpu_share": round(idle_share, 3),
        "relay_cpu_us_per_request": round(1e6 * per_request, 1),
        # What one fully available core would answer at that CPU cost per request.
        "requests_per_core_second": round(1 / per_request) if per_request else None,
    }


async def _seed(bootstrap: str, topic: str, sdk_key: str, flags: list[dict[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer

    record = EnvironmentRecord(
        key=ENV,
        name="OFREP benchmark",
        version=1,
        sdk_keys=(CredentialHash(hash_secret(sdk_key)),),
        mobile_keys=(),
        client_side_id=secrets.token_hex(12),
    )
    now = int(time.time() * 1000)
    envelopes = [
        Envelope("env", ENV, ENV, 1, now, "bench", record.to_json()),
        *(Envelope("flag", ENV, f["key"], 1, now, "bench", json.dumps(f).encode()) for f in flags),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        partition = partition_for(ENV, PARTITIONS)
        futures = [
            await producer.send(
                topic,
                key=record_key(e.env, e.kind, e.key),
                value=encode_envelope(e),
                partition=partition,
            )
            for e in envelopes
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _pin(pid: int, core: int) -> bool:
    try:
        if core < (os.cpu_count() or 1):
            os.sched_setaffinity(pid, {core})
            return True
    except OSError:
        pass
    return False


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    facts = machine_facts()
    topic = f"flagstream.bench-ofrep.{secrets.token_hex(4)}"
    sdk_key = new_sdk_key()
    flags = bench_flags(args.flags)
    try:
        await ensure_topic(args.kafka, topic, PARTITIONS)
        await _seed(args.kafka, topic, sdk_key, flags)
    except DriverError as exc:
        raise SystemExit(f"bench_ofrep: {exc} (start the stack: flagstream stack up)") from exc
    relay: Service | None = None
    affinity = os.sched_getaffinity(0)
    try:
        relay = spawn_relay(kafka_bootstrap=args.kafka, topic=topic, workers=1)
        await wait_ready(relay.url, service=relay, within=60)
        pinned = _pin(relay.pid, 0) and _pin(0, 1)
        host, port = relay.url.removeprefix("http://").split(":")
        hostport = f"{host}:{port}"
        # What the idle relay burns (its Kafka consumer polls every fetch_max_wait_ms):
        # reported, and subtracted in the per-request CPU figure.
        idle_from = cpu_seconds(relay.pid)
        await asyncio.sleep(3.0)
        idle_share = (cpu_seconds(relay.pid) - idle_from) / 3.0
        contexts = _contexts(args.contexts)
        dynamic = [f["key"] for f in flags if f.get("rules") or "rollout" in f["fallthrough"]]
        results = []
        if args.floor:
            # The same client and relay on GET /livez: what any request costs this relay
            # (aiohttp, middlewares, the write), for comparison.
            requests = [f"GET /livez HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode()]
            phase, elapsed, cpu = await _drive(
                host, int(port), requests, args.connections, args.warmup, args.seconds, relay.pid
            )
            results.append(_summary("livez", phase, elapsed, cpu, idle_share))
        if args.mode in ("single", "both"):
            requests = [
                _request(f"/ofrep/v1/evaluate/flags/{dynamic[i % len(dynamic)]}", hostport,
                         sdk_key, body)
                for i, body in enumerate(contexts)
            ]  # fmt: skip
            phase, elapsed, cpu = await _drive(
                host, int(port), requests, args.connections, args.warmup, args.seconds, relay.pid
            )
            results.append(_summary("single", phase, elapsed, cpu, idle_share))
        if args.mode in ("bulk", "both"):
            bulk = "/ofrep/v1/evaluate/flags"
            requests = [_request(bulk, hostport, sdk_key, body) for body in contexts]
            phase, elapsed, cpu = await _drive(
                host, int(port), requests, args.connections, args.warmup, args.seconds, relay.pid
            )
            results.append(_summary("bulk", phase, elapsed, cpu, idle_share))
        with contextlib.suppress(OSError):
            facts["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return {
            "benchmark": "ofrep",
            "command": " ".join([os.path.basename(sys.executable), "-m", "loadtest.bench_ofrep",
                                 *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "flags": args.flags,
            "flags_evaluated_per_context": len(dynamic),
            "distinct_contexts": args.contexts,
            "connections": args.connections,
            "relay_workers": 1,
            "pinned": pinned,
            "machine": facts,
            "results": results,
        }  # fmt: skip
    except ServiceError as exc:
        raise SystemExit(f"bench_ofrep: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, affinity)  # this process was pinned for the run
        if relay is not None:
            relay.close()
        with contextlib.suppress(Exception):
            await delete_topic(args.kafka, topic)


def _print(report: dict[str, Any]) -> None:
    print(
        f"OFREP benchmark, {report['date']}: {report['flags']} flags "
        f"({report['flags_evaluated_per_context']} evaluated per context), "
        f"{report['distinct_contexts']} distinct contexts, {report['connections']} "
        f"connections, 1 relay worker{' pinned to core 0' if report['pinned'] else ''}"
    )
    machine = report["machine"]
    print(
        f"machine: {machine['cores']} cores {machine['cpu']}, load "
        f"{machine['loadavg_at_start']} -> {machine.get('loadavg_at_end')}"
    )
    for r in report["results"]:
        print(f"  {r['phase']:6} {r['requests_per_second']:>9.1f} req/s  p50 {r['p50_ms']} ms  "
              f"p99 {r['p99_ms']} ms  ({r['requests']} requests in {r['seconds']} s, "
              f"statuses {r['statuses']}, {r['mean_response_bytes']} B/answer)\n"
              f"         relay CPU {r['relay_cpu_us_per_request']} us/request net of its idle "
              f"{r['relay_idle_cpu_share']:.1%} of a core: {r['requests_per_core_second']} "
              "requests per core-second")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_ofrep", description=__doc__)
    p.add_argument("--kafka", default=os.environ.get("FLAGSTREAM_KAFKA_BOOTSTRAP",
                                                     "127.0.0.1:19092"))  # fmt: skip
    p.add_argument("--mode", choices=("single", "bulk", "both"), default="both")
    p.add_argument("--flags", type=int, default=350)
    p.add_argument("--contexts", type=int, default=20_000)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument(
        "--floor", action="store_true", help="first measure GET /livez the same way (the floor)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.flags <= 100_000 or not 1 <= args.connections <= 1024:
        raise SystemExit("bench_ofrep: --flags 1..100000 and --connections 1..1024")
    if not 0 < args.seconds <= 600 or args.contexts < 1:
        raise SystemExit("bench_ofrep: --seconds in (0, 600] and --contexts >= 1")
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        report = runner.run(_run(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
