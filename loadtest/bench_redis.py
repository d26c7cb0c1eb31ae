"""Cost per command of the publisher's two Redis clients: redis-py beside ``publisher.resp``.

Run against the local stack's Redis::

    .venv/bin/flagstream stack up
    .venv/bin/python -m loadtest.bench_redis --calls 3000

For each client, ``--calls`` commands one after the other (what a lone write meets) of each
kind: PING; XRANGE of a 32-entry stream of ~600-byte entries (the forwarder's outbox read);
EVALSHA of a script given ~10 KB of arguments (the size of a small group commit). Reports the
round trip's p50 and this process's CPU per call (user + system, ``time.process_time``). The
stream lives under a fresh key and is deleted afterwards. Loopback Redis only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
import uvloop

from publisher.resp import RespClient

__all__ = ["main"]

_SCRIPT = "return #ARGV"
_SCRIPT_ARGS: list[str | bytes | int] = [b"a" * 1200 for _ in range(8)]


async def _measure(call: Callable[[], Awaitable[Any]], calls: int) -> dict[str, float]:
    for _ in range(min(100, calls)):  # connections, script loading, first-call paths
        await call()
    times = []
    cpu = time.process_time()
    for _ in range(calls):
        began = time.perf_counter()
        await call()
        times.append(time.perf_counter() - began)
    cpu = time.process_time() - cpu
    times.sort()
    return {
        "p50_us": round(times[len(times) // 2] * 1e6, 1),
        "cpu_us": round(cpu / calls * 1e6, 1),
    }


async def _run(url: str, calls: int) -> dict[str, dict[str, float]]:
    stream = f"bench:redis:{time.time_ns()}"
    py: Any = aioredis.Redis.from_url(url)
    lean = RespClient.for_url(url, connect_timeout=2.0, timeout=5.0)
    if lean is None:
        raise SystemExit("bench_redis: redis:// or unix:// URLs only")
    try:
        for i in range(32):
            await py.xadd(stream, {"env": "prod", "k": f"prod/flag/f{i}", "v": b"x" * 600, "t": 1})
        script_py = py.register_script(_SCRIPT)
        kinds: dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = {
            "ping": (py.ping, lambda: lean.call("PING")),
            "xrange32": (
                lambda: py.xrange(stream, "-", "+", count=32),
                lambda: lean.call("XRANGE", stream, "-", "+", "COUNT", 32),
            ),
            "evalsha10k": (
                lambda: script_py(keys=[stream], args=_SCRIPT_ARGS),
                lambda: lean.script(script_py.sha, script_py.script, [stream], _SCRIPT_ARGS),
            ),
        }
        figures: dict[str, dict[str, float]] = {}
        for kind, (with_py, with_lean) in kinds.items():
            figures[f"{kind}_redis_py"] = await _measure(with_py, calls)
            figures[f"{kind}_resp"] = await _measure(with_lean, calls)
        return figures
    finally:
        await py.delete(stream)
        await py.aclose()
        await lean.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_redis",
        description="Cost per command of redis-py and publisher.resp.",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("FLAGSTREAM_REDIS_URL", "redis://127.0.0.1:16379/0")
    )
    parser.add_argument("--calls", type=int, default=3000, help="measured calls per kind")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.redis_url.startswith(("redis://127.", "redis://localhost", "unix://")):
        print("bench_redis: a loopback Redis only (redis://127.0.0.1:PORT/DB)", file=sys.stderr)
        return 2
    if args.calls < 1:
        print("bench_redis: --calls must be at least 1", file=sys.stderr)
        return 2
    figures = uvloop.run(_run(args.redis_url, args.calls))  # the publisher runs on uvloop
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for name, row in figures.items():
        print(f"{name:22} p50 {row['p50_us']:8.1f} µs   CPU {row['cpu_us']:8.1f} µs/call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
