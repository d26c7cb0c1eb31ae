"""``cold-start``: relay start to ready with 10k / 100k / 1M flags in the topic.

For each size a fresh topic is filled straight through Kafka (batched, idempotent producer),
then a relay process is started on it and timed from ``exec`` to ``/readyz`` answering 200
(ready = the bootstrap read reached every partition's high watermark). Also reported: the
relay's memory when ready, the time until the relay compiled every flag for evaluation (it
compiles in the background once ready: ``flagstream_relay_evaluation_items_pending`` reaches
0) and its memory then, and the fill rate. Topics are deleted afterwards. Needs --spawn.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from loadtest import plots
from loadtest.driver import DriverError, KafkaDriver
from loadtest.progress import Progress
from loadtest.report import Result, Table
from loadtest.scenarios.common import (
    Context,
    ScenarioError,
    ServiceError,
    scrape_metrics,
    start_relay,
)
from loadtest.sysinfo import rss_bytes

NAME = "cold-start"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated integers") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("sizes must be >= 1")
    return sizes


PENDING = "flagstream_relay_evaluation_items_pending"


async def _compiled_after(url: str, within: float) -> float | None:
    """Seconds until the relay reports nothing left to compile (None: not within; 0 for a
    relay without the metric, which compiled everything before it was ready)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < within:
        metrics = await scrape_metrics(url)
        pending = metrics.get(PENDING)
        if pending == 0.0 or (pending is None and "flagstream_relay_ready" in metrics):
            return time.perf_counter() - t0 if pending == 0.0 else 0.0
        await asyncio.sleep(0.1)
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=_sizes("10000,100000,1000000"),
        help="flags in the topic per run (default 10000,100000,1000000)",
    )
    p.add_argument("--envs", type=int, default=10, help="environments the flags spread over")
    p.add_argument(
        "--bootstrap-timeout",
        type=float,
        default=300.0,
        help="max seconds from relay start to ready, per size (default 300)",
    )


async def _fill(ctx: Context, topic: str, size: int, envs: int, counter: list[int]) -> float:
    """Write ``size`` flags over ``envs`` environments; return the seconds it took."""
    driver = KafkaDriver(ctx.args.kafka, topic, ctx.recorder, linger_ms=50)
    try:
        await driver.start()
    except DriverError as exc:
        raise ScenarioError(f"{exc} (is the local stack up? `flagstream stack up`)") from exc

    def advance(k: int) -> None:
        counter[0] += k

    t0 = time.perf_counter()
    try:
        per_env = [size // envs + (1 if i < size % envs else 0) for i in range(envs)]
        for i, n in enumerate(per_env):
            env = f"lt-cold-{i}"
            await driver.create_environment(env, 0)
            await driver.fill_flags(env, n, advance)
    finally:
        await driver.stop()
    return time.perf_counter() - t0


async def run(ctx: Context) -> Result:
    a = ctx.args
    if not ctx.spawn:
        raise ScenarioError("cold-start starts relays itself: run it with --spawn")
    if a.via != "kafka":
        raise ScenarioError("cold-start fills topics straight through Kafka: use --via kafka")
    result = ctx.result(NAME, {"sizes": a.sizes, "envs": a.envs, "workers": a.workers})
    result.via = "kafka"
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    counter = [0]
    state = {"size": 0, "phase": "fill"}

    def render() -> str:
        return f"{state['size']} flags: {state['phase']} ({counter[0]} written)"

    async with Progress(NAME, render, enabled=ctx.progress) as progress:
        for size in a.sizes:
            topic = ctx.new_topic(f"cold{size}")
            state["size"], state["phase"] = size, "fill"
            counter[0] = 0
            try:
                fill_s = await _fill(ctx, topic, size, a.envs, counter)
                progress.note(f"{size} flags written in {fill_s:.1f}s; starting a relay")
                state["phase"] = "relay bootstrap"
                fill = {
                    "flags": size,
                    "envs": a.envs,
                    "fill_s": fill_s,
                    "fill_rate": size / fill_s if fill_s else 0,
                }
                try:
                    relay = await start_relay(
                        ctx, topic, name=f"relay-{size}", within=a.bootstrap_timeout
                    )
                except ServiceError as exc:
                    first_line = str(exc).splitlines()[0]
                    rows.append({**fill, "ready_s": None, "relay_rss": None, "error": first_line})
                    result.notes.append(f"{size} flags: {first_line}")
                    progress.note(f"{size} flags: {first_line}")
                    continue
                # relay.started is taken right after spawn: the real start-to-ready time
                ready_from_exec = time.perf_counter() - relay.started
                rss = rss_bytes(relay.pid)
                state["phase"] = "compiling"
                compiled_s = await _compiled_after(relay.url, a.bootstrap_timeout)
                rss_compiled = rss_bytes(relay.pid) if compiled_s is not None else None
                rows.append(
                    {
                        **fill,
                        "ready_s": ready_from_exec,
                        "relay_rss": rss,
                        "compiled_after_ready_s": compiled_s,
                        "relay_rss_compiled": rss_compiled,
                    }
                )
                progress.note(
                    f"{size} flags: ready after {ready_from_exec:.2f}s, RSS {rss / 2**20:.0f} MiB"
                    + (
                        f"; compiled {compiled_s:.2f}s later, RSS {rss_compiled / 2**20:.0f} MiB"
                        if compiled_s is not None and rss_compiled
                        else "; not compiled within the timeout"
                    )
                )
            finally:
                await ctx.cleanup()  # one topic at a time: 1M flags take disk space
    result.figures = {"runs": rows}
    result.tables.append(
        Table(
            f"relay start -> /readyz 200, flags over {a.envs} environments, {a.workers} worker(s)",
            [
                "flags",
                "start to ready",
                "relay RSS at ready",
                "ready to all compiled",
                "relay RSS compiled",
                "topic fill (via kafka)",
            ],
            [
                [
                    f"{r['flags']:,}",
                    f"{r['ready_s']:.2f} s" if r["ready_s"] is not None else "not ready",
                    f"{r['relay_rss'] / 2**20:.0f} MiB" if r["relay_rss"] else "-",
                    f"{r['compiled_after_ready_s']:.2f} s"
                    if r.get("compiled_after_ready_s") is not None
                    else "-",
                    f"{r['relay_rss_compiled'] / 2**20:.0f} MiB"
                    if r.get("relay_rss_compiled")
                    else "-",
                    f"{r['fill_s']:.1f} s ({r['fill_rate']:.0f}/s)",
                ]
                for r in rows
            ],
        )
    )
    result.series = {"runs": rows}
    if not a.no_plots and rows:
        result.plots.append(
            str(
                plots.bars(
                    ctx.plot_path("ready"),
                    [f"{r['flags']:,}" for r in rows],
                    {"start to ready (s)": [r["ready_s"] or 0.0 for r in rows]},
                    title="cold start: relay start to ready",
                    ylabel="seconds",
                )
            )
        )
    result.ok = len(rows) == len(a.sizes) and all(r["ready_s"] is not None for r in rows)
    result.duration_s = time.perf_counter() - t_start
    return result
