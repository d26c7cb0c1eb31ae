"""Event-loop stall probe: poll ``/livez`` of spawned relays and report the longest gaps.

A relay worker answers ``/livez`` from its event loop, so the longest gap between two
answers to a poller that asks again as soon as it is answered (plus ``--pause``) bounds the
longest time the loop was busy with something else (a fan-out round, say) from below.

Run it beside a scenario that spawns relays, tagging them through the scenario's
``--relay-env`` so the probe finds them (it reads ``/proc/<pid>/environ`` of processes
carrying the tag, nothing else)::

    python -m loadtest.livezprobe --tag run1 --seconds 300 &
    flagstream loadtest client-fanout --spawn --relay-env FLAGSTREAM_LIVEZPROBE=run1 ...

Each relay (in the order they ended) gets one line of JSON: its port, how many answers,
the longest gap and when it happened (seconds after the probe's first answer from it), and
the five longest gaps (the first ``--warmup`` seconds of each relay left out); with
``--streams N``, the same for the gaps that lie wholly inside the window where the relay
held at least N descriptors (every stream open: opening and closing 10,000 streams stall
the loop too, the scenario's one change is the only work inside it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

TAG_VAR = "FLAGSTREAM_LIVEZPROBE"


def _tagged_ports(tag: str) -> dict[int, list[int]]:
    """Ports of the relay processes whose environment carries ``TAG_VAR=tag``, with their
    process ids."""
    ports: dict[int, list[int]] = {}
    want = f"{TAG_VAR}={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if want not in environ:
            continue
        for item in environ:
            if item.startswith(b"FLAGSTREAM_RELAY_PORT="):
                ports.setdefault(int(item.split(b"=", 1)[1]), []).append(int(entry.name))
    return ports


def _open_files(pids: list[int]) -> int:
    """Descriptors held by the busiest of ``pids`` (the worker holding the streams)."""
    most = 0
    for pid in pids:
        try:
            most = max(most, len(os.listdir(f"/proc/{pid}/fd")))
        except OSError:
            continue
    return most


async def _count_streams(
    pids: list[int], stop: asyncio.Event, out: list[tuple[float, int]]
) -> None:
    while not stop.is_set():
        out.append((time.perf_counter(), _open_files(pids)))
        await asyncio.sleep(0.05)


async def _poll(
    port: int, pids: list[int], streams: int, pause: float, warmup: float, stop: asyncio.Event
) -> dict[str, Any]:
    answers: list[float] = []
    failures = 0.0
    samples: list[tuple[float, int]] = []
    done = asyncio.Event()
    counter = asyncio.create_task(_count_streams(pids, done, samples))
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set() and failures < 20:
            try:
                async with session.get(f"http://127.0.0.1:{port}/livez") as resp:
                    await resp.read()
                    if resp.status == 200:
                        answers.append(time.perf_counter())
                        failures = 0.0
            except (aiohttp.ClientError, OSError, TimeoutError):
                # Not up yet (a relay takes seconds to start: wait up to a minute), or gone.
                failures += 1 if answers else 20 / 1200
                await asyncio.sleep(0.05)
                continue
            if pause:
                await asyncio.sleep(pause)
    done.set()
    await counter
    if not answers:
        return {"port": port, "answers": 0}
    start = answers[0]
    kept = [t for t in answers if t - start >= warmup]
    gaps = sorted(((b - a, a - start) for a, b in itertools.pairwise(kept)), reverse=True)
    out: dict[str, Any] = {
        "port": port,
        "answers": len(answers),
        "seconds": round(answers[-1] - start, 2),
        "longest_gap_ms": round(gaps[0][0] * 1000, 1) if gaps else None,
        "longest_gap_at_s": round(gaps[0][1], 2) if gaps else None,
        "top5_gaps_ms": [round(g * 1000, 1) for g, _ in gaps[:5]],
    }
    if streams:
        # While every stream is open (descriptors >= --streams) the scenario's change is
        # the relay's only work: the gaps that lie wholly inside that window.
        full = [t for t, n in samples if n >= streams]
        if full:
            lo, hi = full[0], full[-1]
            inside = sorted(
                (b - a for a, b in itertools.pairwise(answers) if a >= lo and b <= hi),
                reverse=True,
            )
            out["all_open_s"] = round(hi - lo, 2)
            out["all_open_answers"] = sum(1 for t in answers if lo <= t <= hi)
            out["all_open_longest_gap_ms"] = round(inside[0] * 1000, 1) if inside else None
            out["all_open_top5_gaps_ms"] = [round(g * 1000, 1) for g in inside[:5]]
    return out


async def main(tag: str, streams: int, seconds: float, pause: float, warmup: float) -> None:
    stop = asyncio.Event()
    tasks: dict[int, asyncio.Task[dict[str, Any]]] = {}
    reported: set[int] = set()
    deadline = time.monotonic() + seconds
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        ports = _tagged_ports(tag)
        for port in ports.keys() - tasks.keys():
            tasks[port] = asyncio.create_task(
                _poll(port, ports[port], streams, pause, warmup, stop)
            )
        for port, task in tasks.items():
            if task.done() and port not in reported:
                reported.add(port)
                print(json.dumps(task.result()), flush=True)
        if ports or len(reported) < len(tasks):
            idle_since = time.monotonic()
        elif tasks and time.monotonic() - idle_since > 30:
            break  # every relay seen has gone and none came for 30 s: the run is over
        await asyncio.sleep(0.2)
    stop.set()
    for port, task in tasks.items():
        if port not in reported:
            print(json.dumps(await task), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", required=True, help=f"the value of {TAG_VAR} to look for")
    parser.add_argument(
        "--streams", type=int, default=0, help="the scenario's streams (window: all open)"
    )
    parser.add_argument("--seconds", type=float, default=600.0, help="give up after this long")
    parser.add_argument("--pause", type=float, default=0.002, help="seconds between polls")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds left out per relay")
    args = parser.parse_args()
    if not os.path.isdir("/proc"):
        parser.error("needs Linux /proc to find the relays")
    asyncio.run(main(args.tag, args.streams, args.seconds, args.pause, args.warmup))
