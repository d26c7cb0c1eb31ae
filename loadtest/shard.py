"""Stream fleets for ``capacity``: the swarm in this process, or sharded over child processes.

One process can hold only as many streams as its file-descriptor hard limit allows (20 000
on the development machine, and only root can raise a hard limit). ``ShardFleet`` runs
``python -m loadtest.shard`` children, each an ordinary ``Swarm`` with its own limit, and
drives them over pipes:

- parent -> child, one command a line: ``add N`` (open N more streams), ``quit``;
- child -> parent, a JSON line every 0.2 s: cumulative ``open``, ``attempts``, ``comments``,
  ``errors``, ``statuses``, the process's ``rss``, and ``lat``: the connect latencies
  measured since the previous line (so none is sent twice).

Both fleets expose the same small surface, so the scenario does not care which it has.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections import Counter
from typing import Any, Protocol

from loadtest.recorder import DeliveryRecorder
from loadtest.swarm import Swarm, Target
from loadtest.sysinfo import raise_nofile_limit, rss_bytes

__all__ = ["Fleet", "LocalFleet", "ShardFleet"]


class Fleet(Protocol):
    """Idle streams to one relay. Counters are cumulative; ``add`` returns once the new
    streams' connection attempts have started (not when they are open)."""

    @property
    def open_count(self) -> int: ...

    @property
    def attempts(self) -> int: ...

    @property
    def comments(self) -> int: ...

    @property
    def errors(self) -> Counter[str]: ...

    @property
    def statuses(self) -> Counter[int]: ...

    async def add(self, n: int, *, rate: float | None = None) -> None: ...

    def latencies(self) -> list[float]: ...

    def rss(self) -> int: ...

    async def wait_open(self, count: int, within: float) -> bool: ...

    async def close(self) -> None: ...


class LocalFleet:
    """The swarm of this process."""

    def __init__(self, swarm: Swarm, env: str, sdk_key: str) -> None:
        self.swarm = swarm
        self.env = env
        self.sdk_key = sdk_key

    @property
    def open_count(self) -> int:
        return self.swarm.open_count

    @property
    def attempts(self) -> int:
        return self.swarm.attempts

    @property
    def comments(self) -> int:
        return self.swarm.comments

    @property
    def errors(self) -> Counter[str]:
        return self.swarm.errors

    @property
    def statuses(self) -> Counter[int]:
        return self.swarm.statuses

    async def add(self, n: int, *, rate: float | None = None) -> None:
        await self.swarm.connect_all(self.swarm.add(n, self.env, self.sdk_key), rate=rate)

    def latencies(self) -> list[float]:
        return list(self.swarm.connect_latency)

    def rss(self) -> int:
        return rss_bytes(os.getpid(), tree=False)

    async def wait_open(self, count: int, within: float) -> bool:
        return await self.swarm.wait_open(count, within)

    async def close(self) -> None:
        await self.swarm.close()


class _Shard:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.state: dict[str, Any] = {}
        self.lat: list[float] = []
        self.reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                state = json.loads(line)
            except ValueError:
                continue
            self.lat.extend(state.pop("lat", []))
            self.state = state


class ShardFleet:
    """``shards`` child processes, each a Swarm; streams are split evenly between them."""

    def __init__(self, url: str, env: str, sdk_key: str, shards: int, source_ips: int) -> None:
        self.url, self.env, self.sdk_key = url, env, sdk_key
        self.n_shards = shards
        self.source_ips = source_ips
        self._shards: list[_Shard] = []
        self._next = 0

    async def start(self) -> None:
        for i in range(self.n_shards):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "loadtest.shard",
                self.url,
                self.env,
                "--source-ips",
                str(self.source_ips),
                "--shard",
                str(i),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "FLAGSTREAM_LOADTEST_SDK_KEY": self.sdk_key},
            )
            shard = _Shard(proc)
            shard.reader = asyncio.ensure_future(shard.read())
            self._shards.append(shard)

    def _sum(self, name: str) -> int:
        return sum(int(s.state.get(name, 0)) for s in self._shards)

    @property
    def open_count(self) -> int:
        return self._sum("open")

    @property
    def attempts(self) -> int:
        return self._sum("attempts")

    @property
    def comments(self) -> int:
        return self._sum("comments")

    @property
    def errors(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for s in self._shards:
            out.update(s.state.get("errors", {}))
        return out

    @property
    def statuses(self) -> Counter[int]:
        out: Counter[int] = Counter()
        for s in self._shards:
            out.update({int(k): v for k, v in s.state.get("statuses", {}).items()})
        return out

    async def add(self, n: int, *, rate: float | None = None) -> None:
        k = len(self._shards)
        for i, shard in enumerate(self._shards):
            share = n // k + (1 if (i + self._next) % k < n % k else 0)
            if share and shard.proc.stdin is not None:
                per_rate = f" {rate / k}" if rate else ""
                shard.proc.stdin.write(f"add {share}{per_rate}\n".encode())
                await shard.proc.stdin.drain()
        self._next = (self._next + n) % k

    def latencies(self) -> list[float]:
        return [x for s in self._shards for x in s.lat]

    def rss(self) -> int:
        return sum(int(s.state.get("rss", 0)) for s in self._shards)

    async def wait_open(self, count: int, within: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.open_count < count:
            if loop.time() >= deadline or any(s.proc.returncode is not None for s in self._shards):
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        for s in self._shards:
            if s.proc.stdin is not None and s.proc.returncode is None:
                with contextlib.suppress(ConnectionError):
                    s.proc.stdin.write(b"quit\n")
                    await s.proc.stdin.drain()
        for s in self._shards:
            try:
                await asyncio.wait_for(s.proc.wait(), 10)
            except TimeoutError:
                s.proc.kill()
                await s.proc.wait()
            if s.reader is not None:
                s.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await s.reader


async def _child(url: str, env: str, sdk_key: str, source_ips: int) -> int:
    raise_nofile_limit(0)
    loop = asyncio.get_running_loop()
    swarm = Swarm([Target.from_url(url)], DeliveryRecorder(), source_ips=source_ips)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sent_lat = 0
    stop = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def report() -> None:
        nonlocal sent_lat
        while True:
            lat = list(swarm.connect_latency[sent_lat:])
            sent_lat += len(lat)
            line = {
                "open": swarm.open_count,
                "attempts": swarm.attempts,
                "comments": swarm.comments,
                "errors": dict(swarm.errors),
                "statuses": {str(k): v for k, v in swarm.statuses.items()},
                "rss": rss_bytes(os.getpid(), tree=False),
                "lat": lat,
            }
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
            if stop.is_set():
                return
            await asyncio.sleep(0.2)

    reporter = asyncio.ensure_future(report())
    while True:
        raw = await reader.readline()
        words = raw.decode().split()
        if not words or words[0] == "quit":
            break
        if words[0] == "add":
            rate = float(words[2]) if len(words) > 2 else None
            clients = swarm.add(int(words[1]), env, sdk_key)
            task = asyncio.ensure_future(swarm.connect_all(clients, rate=rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    await swarm.close()
    stop.set()
    await reporter
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a swarm shard (started by ShardFleet)")
    parser.add_argument("url")
    parser.add_argument("env")
    parser.add_argument("--source-ips", type=int, default=8)
    parser.add_argument("--shard", type=int, default=0)
    args = parser.parse_args(argv)
    sdk_key = os.environ.get("FLAGSTREAM_LOADTEST_SDK_KEY", "")
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_child(args.url, args.env, sdk_key, args.source_ips))


if __name__ == "__main__":
    sys.exit(main())
