"""Event-loop stall probe: poll ``/livez`` of spawned relays and report the longest gaps.

A relay worker answers ``/livez`` from its event loop, so the longest gap between two
answers to a poller that asks again as soon as it is answered (plus ``--pause``) bounds the
longest time the loop was busy with something else (a fan-out round, say) from below.

Run it beside a scenario that spawns relays, tagging them through the scenario's
``--relay-env`` so the probe finds them (it reads ``/proc/<pid>/environ`` of processes
carrying the tag, nothing else)::

    python -m loadtest.livezprobe --tag run1 --seconds 300 &
    flagstream loadtest client-fanout --spawn --relay-env FLAGSTREAM_LIVEZPROBE=run1 ...

Each relay (in the order they appeared) gets one line of JSON: its port, how many answers,
the longest gap and when it happened (seconds after the probe's first answer from it), and
the five longest gaps. The first ``--warmup`` seconds of each relay are left out.
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


def _tagged_ports(tag: str) -> set[int]:
    """Ports of the relay processes whose environment carries ``TAG_VAR=tag``."""
    ports: set[int] = set()
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
                ports.add(int(item.split(b"=", 1)[1]))
    return ports


async def _poll(port: int, pause: float, warmup: float, stop: asyncio.Event) -> dict[str, Any]:
    answers: list[float] = []
    failures = 0
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set() and failures < 20:
            try:
                async with session.get(f"http://127.0.0.1:{port}/livez") as resp:
                    await resp.read()
                    if resp.status == 200:
                        answers.append(time.perf_counter())
                        failures = 0
            except (aiohttp.ClientError, OSError, TimeoutError):
                failures += 1  # not up yet, or gone (the phase ended)
                await asyncio.sleep(0.05)
                continue
            if pause:
                await asyncio.sleep(pause)
    if not answers:
        return {"port": port, "answers": 0}
    start = answers[0]
    kept = [t for t in answers if t - start >= warmup]
    gaps = sorted(((b - a, a - start) for a, b in itertools.pairwise(kept)), reverse=True)
    return {
        "port": port,
        "answers": len(answers),
        "seconds": round(answers[-1] - start, 2),
        "longest_gap_ms": round(gaps[0][0] * 1000, 1) if gaps else None,
        "longest_gap_at_s": round(gaps[0][1], 2) if gaps else None,
        "top5_gaps_ms": [round(g * 1000, 1) for g, _ in gaps[:5]],
    }


async def main(tag: str, seconds: float, pause: float, warmup: float) -> None:
    stop = asyncio.Event()
    tasks: dict[int, asyncio.Task[dict[str, Any]]] = {}
    reported: set[int] = set()
    deadline = time.monotonic() + seconds
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        ports = _tagged_ports(tag)
        for port in ports - tasks.keys():
            tasks[port] = asyncio.create_task(_poll(port, pause, warmup, stop))
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
    parser.add_argument("--seconds", type=float, default=600.0, help="give up after this long")
    parser.add_argument("--pause", type=float, default=0.002, help="seconds between polls")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds left out per relay")
    args = parser.parse_args()
    if not os.path.isdir("/proc"):
        parser.error("needs Linux /proc to find the relays")
    asyncio.run(main(args.tag, args.seconds, args.pause, args.warmup))
