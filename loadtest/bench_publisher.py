"""Write-throughput benchmark of a running publisher (Redis + Kafka with acks=all).

Run a publisher on the local stack, then drive it::

    .venv/bin/flagstream stack up
    FLAGSTREAM_ADMIN_TOKEN=bench-admin-token-123456 .venv/bin/flagstream publisher &
    .venv/bin/python -m loadtest.bench_publisher --token bench-admin-token-123456 \\
        --writes 3000 --concurrency 32

It creates the environment if needed, warms up, then sends ``--writes`` PATCH requests
(``{"salt": ...}`` on ``--flags`` distinct flags) from ``--concurrency`` concurrent clients.
Every request is a complete write: Lua commit in Redis, then the publisher waits until Kafka
acknowledged the record (acks=all, idempotent producer) before answering 200. Answers of 202
(stored, delivery pending: Kafka was slower than the publisher's ack timeout) are counted
apart and are **not** included in the acknowledged writes/s. Loopback only, bounded by
``--writes`` and ``--max-seconds``. Prints a summary (``--json`` for machine output).

CPU per measured write (or imported item) is reported for the benchmark's own client, for
the publisher with ``--publisher-pid PID``, for any other process with ``--cpu-of NAME=PID``
(repeatable), and for the local stack's Kafka broker and Redis with ``--stack-cpu``; beside
them, how many of the machine's cores were busy (``loadtest.cpumeter``: user + system time
from ``/proc``, read just before and after the measured phase). When the cores are all busy,
the other processes' share bounds what the publisher can reach on this machine.

``--import-items N`` measures an import instead: N realistic flags (targets, rules, rollouts,
~1 KB each) written to a fresh environment, either as bulk requests of ``--bulk-size``
operations sent one after the other (``--import-mode bulk``, what ``flagstream admin import``
does) or as one PUT per flag from ``--concurrency`` clients (``--import-mode puts``, the only
way before the bulk endpoint). Reports items/s from the first request to the last answer.

``--kafka-batches N`` measures only the record log, without a publisher: N batches of
``--kafka-records`` records (~600 bytes, 3 environments) sent one after the other through
``publisher.log.KafkaRecordLog`` (each batch one transaction: what the forwarder does) and
through a plain idempotent producer (what the forwarder did before fencing), on a new topic
of ``--kafka-bootstrap``; reports the time per batch of each (p50/p90/max).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import aiohttp

from loadtest import cpumeter
from loadtest.keepalive import KeepAliveConnection

__all__ = ["main"]


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _prepare(session: aiohttp.ClientSession, base: str, env: str, flags: int) -> None:
    async with session.post(f"{base}/api/v1/environments", json={"key": env}) as resp:
        if resp.status not in (201, 202, 409):
            raise SystemExit(f"cannot create environment {env}: {resp.status} {await resp.text()}")
    for i in range(flags):
        flag = {
            "key": f"bench-{i}",
            "on": True,
            "variations": [True, False],
            "fallthrough": {"variation": 0},
            "offVariation": 1,
        }
        async with session.put(f"{base}/api/v1/environments/{env}/flags/bench-{i}", json=flag) as r:
            if r.status not in (200, 201, 202):
                raise SystemExit(f"cannot create flag: {r.status} {await r.text()}")


def _cpu_figures(use: cpumeter.CpuUse, units: int, unit: str) -> dict[str, Any]:
    per_unit = use.per_unit_us(units)
    figures: dict[str, Any] = {
        f"cpu_us_per_{unit}": per_unit,
        "machine_cores_busy": use.machine_cores_busy,
    }
    if "publisher" in per_unit:  # the figure BENCHMARKS.md has quoted since the first pass
        figures[f"publisher_cpu_us_per_{unit}"] = per_unit["publisher"]
    return figures


def _cpu_note(figures: dict[str, Any], unit: str) -> str:
    per_unit = figures[f"cpu_us_per_{unit}"]
    parts = ", ".join(f"{name} {us:g}" for name, us in per_unit.items())
    return (
        f"; CPU us/{unit}: {parts}; {figures['machine_cores_busy']:g} of "
        f"{figures['cpus']} cores busy"
    )


def _import_flag(i: int) -> dict[str, Any]:
    """A realistic flag of about 1 KB: targets, two rules, a percentage rollout."""
    return {
        "key": f"import-{i:06d}",
        "on": i % 5 != 0,
        "variations": ["control", "treatment-a", "treatment-b"],
        "offVariation": 0,
        "salt": f"salt-{i}",
        "targets": [{"values": [f"user-{i}-{n}" for n in range(5)], "variation": 1}],
        "rules": [
            {
                "id": f"r{i}-1",
                "clauses": [
                    {"attribute": "email", "op": "endsWith", "values": ["@example.com"]},
                    {"attribute": "country", "op": "in", "values": ["de", "fr", "nl"]},
                ],
                "variation": 2,
            },
            {
                "id": f"r{i}-2",
                "clauses": [{"attribute": "", "op": "segmentMatch", "values": ["beta-testers"]}],
                "rollout": {
                    "variations": [
                        {"variation": 1, "weight": 50_000},
                        {"variation": 2, "weight": 50_000},
                    ],
                    "bucketBy": "key",
                },
            },
        ],
        "fallthrough": {
            "rollout": {
                "variations": [
                    {"variation": 0, "weight": 90_000},
                    {"variation": 1, "weight": 10_000},
                ]
            }
        },
        "clientSideAvailability": {"usingMobileKey": True, "usingEnvironmentId": False},
    }


async def _run_import(args: argparse.Namespace) -> dict[str, Any]:
    base = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"}
    env = f"{args.env}-import-{int(time.time() * 1000) % 10**9}"
    flags = [_import_flag(i) for i in range(args.import_items)]
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(
        headers=headers, connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        async with session.post(f"{base}/api/v1/environments", json={"key": env}) as resp:
            if resp.status not in (201, 202):
                raise SystemExit(f"cannot create environment {env}: {resp.status}")
        statuses: dict[int, int] = {}
        cpu0 = cpumeter.read(args.cpu_pids)
        began = time.perf_counter()
        if args.import_mode == "bulk":
            starts = iter(range(0, len(flags), args.bulk_size))

            async def bulk_sender() -> None:
                for start in starts:
                    ops = [
                        {"op": "put", "kind": "flag", "key": f["key"], "value": f}
                        for f in flags[start : start + args.bulk_size]
                    ]
                    url = f"{base}/api/v1/environments/{env}/bulk"
                    async with session.post(url, json={"operations": ops}) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + len(ops)

            await asyncio.gather(*(bulk_sender() for _ in range(args.bulk_inflight)))
        else:
            queue = iter(flags)

            async def worker() -> None:
                for flag in queue:
                    url = f"{base}/api/v1/environments/{env}/flags/{flag['key']}"
                    async with session.put(url, json=flag) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - began
        cpu = cpumeter.since(cpu0, args.cpu_pids)
    acknowledged = sum(v for k, v in statuses.items() if k in (200, 201))
    result: dict[str, Any] = {
        "mode": args.import_mode,
        "items": len(flags),
        "acknowledged_items": acknowledged,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(elapsed, 3),
        "items_per_second": round(acknowledged / elapsed, 1) if elapsed else 0.0,
        "bytes_per_item": len(json.dumps(flags[0])),
        "cpus": cpu.cores,
        **_cpu_figures(cpu, len(flags), "item"),
    }
    return result


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    base = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        headers=headers, connector=connector, timeout=timeout
    ) as session:
        await _prepare(session, base, args.env, args.flags)
        counter = 0
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        deadline = time.monotonic() + args.max_seconds

        url = urllib.parse.urlsplit(base)
        connections = [
            KeepAliveConnection(url.hostname or "127.0.0.1", url.port or 80, headers=headers)
            for _ in range(args.concurrency)
        ]

        async def patch(connection: KeepAliveConnection, path: str, body: bytes) -> int:
            if args.client == "raw":
                status, _ = await connection.request("PATCH", path, body)
                return status
            async with session.patch(
                base + path, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                await resp.read()
                return resp.status

        async def worker(connection: KeepAliveConnection, total: int, record: bool) -> None:
            nonlocal counter
            while counter < total and time.monotonic() < deadline:
                n = counter
                counter += 1
                path = f"/api/v1/environments/{args.env}/flags/bench-{n % args.flags}"
                body = b'{"salt":"s%d"}' % n
                began = time.perf_counter()
                status = await patch(connection, path, body)
                if record:
                    latencies.append(time.perf_counter() - began)
                    statuses[status] = statuses.get(status, 0) + 1

        try:
            await asyncio.gather(*(worker(c, args.warmup, False) for c in connections))
            counter = 0
            cpu0 = cpumeter.read(args.cpu_pids)
            began = time.perf_counter()
            await asyncio.gather(*(worker(c, args.writes, True) for c in connections))
            elapsed = time.perf_counter() - began
            cpu = cpumeter.since(cpu0, args.cpu_pids)
        finally:
            for connection in connections:
                connection.close()

    latencies.sort()
    acknowledged = statuses.get(200, 0)
    return {
        **_cpu_figures(cpu, sum(statuses.values()), "write"),
        "writes": sum(statuses.values()),
        "acknowledged": acknowledged,
        "pending_202": statuses.get(202, 0),
        "errors": sum(v for k, v in statuses.items() if k not in (200, 202)),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(elapsed, 3),
        "acknowledged_writes_per_second": round(acknowledged / elapsed, 1) if elapsed else 0.0,
        "latency_ms_p50": round(_percentile(latencies, 0.50) * 1000, 2),
        "latency_ms_p99": round(_percentile(latencies, 0.99) * 1000, 2),
        "latency_ms_max": round(latencies[-1] * 1000, 2) if latencies else float("nan"),
        "concurrency": args.concurrency,
        "client": args.client,
        "flags": args.flags,
        "cpus": cpu.cores,
        "python": platform.python_version(),
    }


async def _run_kafka(args: argparse.Namespace) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from protocol.keys import partition_for
    from publisher.log import KafkaRecordLog

    topic = f"bench.kafka.txn.{int(time.time() * 1000)}"
    envs = ["prod", "stage", "dev"]
    records = [
        (envs[i % 3], f"{envs[i % 3]}/flag/f{i}".encode(), b"x" * 600)
        for i in range(args.kafka_records)
    ]
    log = KafkaRecordLog(args.kafka_bootstrap, topic, create_partitions=6)
    await log.start()
    plain = AIOKafkaProducer(
        bootstrap_servers=args.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    await plain.start()
    times: dict[str, list[float]] = {"transaction": [], "idempotent": []}
    try:
        for _ in range(args.kafka_batches):  # interleaved, so both see the same load
            began = time.perf_counter()
            outcomes = await log.send_batch(records)
            times["transaction"].append(time.perf_counter() - began)
            if any(o is not None for o in outcomes):
                raise SystemExit(f"bench_publisher: a transaction failed: {outcomes[0]!r}")
            began = time.perf_counter()
            futures = [
                await plain.send(topic, value=v, key=k, partition=partition_for(e, 6))
                for e, k, v in records
            ]
            for future in futures:
                await future
            times["idempotent"].append(time.perf_counter() - began)
    finally:
        await log.stop()
        await plain.stop()
    result: dict[str, Any] = {"batches": args.kafka_batches, "records": args.kafka_records}
    for name, values in times.items():
        values.sort()
        for q, label in ((0.5, "p50"), (0.9, "p90"), (1.0, "max")):
            result[f"{name}_ms_{label}"] = round(_percentile(values, q) * 1000, 2)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_publisher",
        description="Write throughput (acks=all) of a running publisher.",
    )
    parser.add_argument(
        "--url", default=os.environ.get("FLAGSTREAM_PUBLISHER_URL", "http://127.0.0.1:8031")
    )
    parser.add_argument("--token", default=os.environ.get("FLAGSTREAM_ADMIN_TOKEN"))
    parser.add_argument("--env", default="bench", help="environment (created if missing)")
    parser.add_argument("--writes", type=int, default=2000, help="measured writes")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured writes first")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument("--flags", type=int, default=50, help="distinct flags written to")
    parser.add_argument(
        "--client",
        choices=["raw", "aiohttp"],
        default="raw",
        help="HTTP client of the write benchmark: raw (loadtest.keepalive, cheap) or aiohttp",
    )
    parser.add_argument("--max-seconds", type=float, default=120.0, help="hard time bound")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--publisher-pid", type=int, default=None, help="report this process's CPU per write"
    )
    parser.add_argument(
        "--cpu-of",
        action="append",
        default=[],
        metavar="NAME=PID",
        help="also report this process's CPU per write under NAME (repeatable)",
    )
    parser.add_argument(
        "--stack-cpu",
        action="store_true",
        help="also report the CPU per write of the local stack's Kafka broker and Redis",
    )
    parser.add_argument(
        "--import-items", type=int, default=0, help="measure an import of N flags instead"
    )
    parser.add_argument("--import-mode", choices=["bulk", "puts"], default="bulk")
    parser.add_argument("--bulk-size", type=int, default=1000, help="operations per bulk request")
    parser.add_argument(
        "--bulk-inflight", type=int, default=1, help="bulk requests in flight at once (import)"
    )
    parser.add_argument(
        "--kafka-batches", type=int, default=0, help="measure only the record log: N batches"
    )
    parser.add_argument("--kafka-records", type=int, default=32, help="records per batch")
    parser.add_argument(
        "--kafka-bootstrap", default=os.environ.get("FLAGSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        args.cpu_pids = _cpu_pids(args)
    except ValueError as exc:
        print(f"bench_publisher: {exc}", file=sys.stderr)
        return 2
    if args.kafka_batches:
        if not args.kafka_bootstrap.startswith(("127.", "localhost")):
            print("bench_publisher: a loopback Kafka only (127.0.0.1:PORT)", file=sys.stderr)
            return 2
        figures = asyncio.run(_run_kafka(args))
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            print(
                f"{figures['batches']} batches of {figures['records']} records, one after the "
                f"other: transaction p50 {figures['transaction_ms_p50']} ms, p90 "
                f"{figures['transaction_ms_p90']} ms, max {figures['transaction_ms_max']} ms; "
                f"idempotent (no transaction) p50 {figures['idempotent_ms_p50']} ms, p90 "
                f"{figures['idempotent_ms_p90']} ms, max {figures['idempotent_ms_max']} ms"
            )
        return 0
    if not args.token:
        print("bench_publisher: pass --token or set FLAGSTREAM_ADMIN_TOKEN", file=sys.stderr)
        return 2
    if not args.url.startswith(("http://127.", "http://localhost")):
        print("bench_publisher: loopback publishers only (http://127.0.0.1:PORT)", file=sys.stderr)
        return 2
    if args.import_items:
        try:
            imported = asyncio.run(_run_import(args))
        except aiohttp.ClientConnectionError as exc:
            print(f"bench_publisher: cannot reach {args.url}: {exc}", file=sys.stderr)
            return 3
        if args.json:
            print(json.dumps(imported, indent=2))
        else:
            print(
                f"imported {imported['acknowledged_items']} of {imported['items']} flags "
                f"({imported['mode']}) in {imported['seconds']} s: "
                f"{imported['items_per_second']} items/s {imported['statuses']}"
                f"{_cpu_note(imported, 'item')}"
            )
        return 0 if imported["acknowledged_items"] == imported["items"] else 1
    try:
        result = asyncio.run(_run(args))
    except (aiohttp.ClientConnectionError, ConnectionError) as exc:
        print(f"bench_publisher: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['acknowledged']} acknowledged writes in {result['seconds']} s: "
            f"{result['acknowledged_writes_per_second']} writes/s (acks=all), "
            f"concurrency {result['concurrency']} ({result['client']} client), "
            f"p50 {result['latency_ms_p50']} ms, "
            f"p99 {result['latency_ms_p99']} ms, max {result['latency_ms_max']} ms; "
            f"202 pending: {result['pending_202']}, errors: {result['errors']} "
            f"{result['statuses']}{_cpu_note(result, 'write')}"
        )
    return 0 if result["errors"] == 0 else 1


def _cpu_pids(args: argparse.Namespace) -> dict[str, int]:
    """The processes whose CPU the benchmark reports, by name (ValueError: say what to fix)."""
    pids = dict(cpumeter.parse_named_pid(spec) for spec in args.cpu_of)
    if args.publisher_pid is not None:
        pids["publisher"] = args.publisher_pid
    if args.stack_cpu:
        from flagstream.stack.stack import Stack, resolve_config

        stack = Stack(resolve_config())
        for name, pid in (("kafka", stack.kafka.pid), ("redis", stack.redis.pid)):
            if pid is None:
                raise ValueError(f"--stack-cpu: the local stack's {name} is not running")
            pids[name] = pid
    for name, pid in pids.items():
        if not os.path.exists(f"/proc/{pid}/stat"):
            raise ValueError(f"no process {pid} ({name}) on this machine")
    return pids


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
