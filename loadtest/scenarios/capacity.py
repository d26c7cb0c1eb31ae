"""``capacity``: idle streams held open (heartbeats only) in steps up to a limit.

After each step: streams open, the relay's resident memory (from /proc, all its worker
processes) and this swarm's, the connect rate and connect latency, failures. It stops at
``--streams``, or when a step cannot open its streams (the limit: file descriptors, the
relay's max connections answering 503, memory). Memory per stream is the slope between the
first and last step, so the relay's fixed footprint does not count.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from loadtest import plots
from loadtest.progress import Progress
from loadtest.report import Result, Table, fmt_ms
from loadtest.scenarios.common import Context, ScenarioError, open_system, wait_env_visible
from loadtest.shard import Fleet, LocalFleet, ShardFleet
from loadtest.stats import summarize
from loadtest.swarm import Swarm, Target
from loadtest.sysinfo import LimitError, raise_nofile_limit, rss_bytes

NAME = "capacity"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--streams", type=int, default=10000, help="target streams (default 10000)")
    p.add_argument("--steps", type=int, default=5, help="measurement steps (default 5)")
    p.add_argument("--hold", type=float, default=3.0, help="seconds to hold after each step")
    p.add_argument("--connect-rate", type=float, help="max new connections/s (default: no cap)")
    p.add_argument("--flags", type=int, default=10, help="flags in the environment")
    p.add_argument("--relay-pid", type=int, help="pid of a given relay (for its memory)")
    p.add_argument(
        "--swarm-procs",
        type=int,
        default=1,
        help="hold the streams in N child processes (each has its own file-descriptor "
        "limit; give the relay --workers to match)",
    )


async def run(ctx: Context) -> Result:
    a = ctx.args
    if a.streams < 1 or a.steps < 1:
        raise ScenarioError("--streams and --steps must be >= 1")
    if a.swarm_procs < 1:
        raise ScenarioError("--swarm-procs must be >= 1")
    per_proc = -(-a.streams // a.swarm_procs)
    try:
        limit = raise_nofile_limit(per_proc + 256)
    except LimitError as exc:
        limit = raise_nofile_limit(0)
        cap = (limit - 256) * a.swarm_procs
        note = f"{exc}; capping at {cap} (more --swarm-procs hold more)"
        a.streams = cap
    else:
        note = ""
    result = ctx.result(
        NAME,
        {
            "streams": a.streams,
            "steps": a.steps,
            "hold_s": a.hold,
            "connect_rate": a.connect_rate,
            "flags": a.flags,
            "workers": a.workers,
            "swarm_procs": a.swarm_procs,
        },
    )
    if note:
        result.notes.append(note)
    rec = ctx.recorder
    t_start = time.perf_counter()
    system = await open_system(ctx, NAME)
    result.via = system.driver.via
    relay_pid = a.relay_pid
    if system.relays and system.relays[0] is not None:
        relay_pid = system.relays[0].pid
    env = f"lt-cap-{int(time.time())}"
    fleet: Fleet | None = None
    rows: list[dict[str, float | int]] = []
    try:
        sdk_key = await system.driver.create_environment(env, a.flags)
        await wait_env_visible(system.relay_urls[0], sdk_key)
        base_relay = rss_bytes(relay_pid) if relay_pid else 0
        if a.swarm_procs > 1:
            shards = ShardFleet(system.relay_urls[0], env, sdk_key, a.swarm_procs, a.source_ips)
            await shards.start()
            active: Fleet = shards
            await asyncio.sleep(0.5)  # first status lines: the shards' base memory
        else:
            swarm = Swarm([Target.from_url(system.relay_urls[0])], rec, source_ips=a.source_ips)
            active = LocalFleet(swarm, env, sdk_key)
        fleet = active
        base_self = active.rss()
        per_step = max(1, a.streams // a.steps)

        def render() -> str:
            if fleet is None:
                return "done"
            return (
                f"open {fleet.open_count}/{a.streams} attempts {fleet.attempts} "
                f"heartbeats {fleet.comments} errors {sum(fleet.errors.values())} "
                f"statuses {dict(fleet.statuses)}"
            )

        async with Progress(NAME, render, enabled=ctx.progress) as progress:
            target = 0
            while target < a.streams:
                n = min(per_step, a.streams - target)
                target += n
                errors_before = sum(active.errors.values())
                refused_before = sum(v for k, v in active.statuses.items() if k != 200)
                lat_before = len(active.latencies())
                t0 = time.perf_counter()
                await active.add(n, rate=a.connect_rate)
                reached = await active.wait_open(target, a.connect_timeout)
                t1 = time.perf_counter()
                comments_before = active.comments
                await asyncio.sleep(a.hold)
                lat = summarize(active.latencies()[lat_before:])
                row: dict[str, float | int] = {
                    "target": target,
                    "open": active.open_count,
                    "connect_rate": n / (t1 - t0),
                    "connect_p50": lat["p50"],
                    "connect_p99": lat["p99"],
                    "errors": sum(active.errors.values()) - errors_before,
                    "refused": sum(v for k, v in active.statuses.items() if k != 200)
                    - refused_before,
                    "heartbeats_per_s": (active.comments - comments_before) / max(a.hold, 1e-9),
                    "relay_rss": rss_bytes(relay_pid) if relay_pid else 0,
                    "swarm_rss": active.rss(),
                }
                rows.append(row)
                progress.note(
                    f"{active.open_count} open, {row['connect_rate']:.0f} conn/s, relay "
                    f"{int(row['relay_rss']) / 2**20:.0f} MiB, errors {row['errors']}"
                )
                if not reached:
                    result.notes.append(
                        f"limit: only {active.open_count}/{target} streams open after "
                        f"{a.connect_timeout:.0f}s (errors {dict(active.errors)}, "
                        f"statuses {dict(active.statuses)})"
                    )
                    break
            errors_total, statuses_total = dict(active.errors), dict(active.statuses)
            await active.close()
            fleet = None
        first, last = rows[0], rows[-1]
        d_streams = int(last["open"])
        relay_per = (
            (int(last["relay_rss"]) - base_relay) / d_streams if relay_pid and d_streams else None
        )
        swarm_per = (int(last["swarm_rss"]) - base_self) / d_streams if d_streams else None
        slope = None
        if relay_pid and int(last["open"]) > int(first["open"]):
            slope = (int(last["relay_rss"]) - int(first["relay_rss"])) / (
                int(last["open"]) - int(first["open"])
            )
        result.figures = {
            "streams_target": a.streams,
            "streams_open": int(last["open"]),
            "relay_rss_base": base_relay,
            "relay_bytes_per_stream": relay_per,
            "relay_bytes_per_stream_slope": slope,
            "swarm_bytes_per_stream": swarm_per,
            "steps": rows,
            "errors": errors_total,
            "statuses": statuses_total,
        }
        result.tables.append(
            Table(
                f"idle streams, {a.steps} steps, {a.hold:.0f} s hold each",
                [
                    "streams open",
                    "conn/s",
                    "connect p50",
                    "connect p99",
                    "relay RSS",
                    "swarm RSS",
                    "heartbeats/s",
                    "errors",
                    "non-200",
                ],
                [
                    [
                        str(r["open"]),
                        f"{r['connect_rate']:.0f}",
                        fmt_ms(r["connect_p50"]),
                        fmt_ms(r["connect_p99"]),
                        f"{int(r['relay_rss']) / 2**20:.0f} MiB" if relay_pid else "-",
                        f"{int(r['swarm_rss']) / 2**20:.0f} MiB",
                        f"{r['heartbeats_per_s']:.0f}",
                        str(r["errors"]),
                        str(r["refused"]),
                    ]
                    for r in rows
                ],
            )
        )
        if relay_per is not None:
            result.notes.append(
                f"relay memory per stream: {relay_per / 1024:.1f} KiB (RSS growth over its "
                f"{base_relay / 2**20:.0f} MiB base / streams)"
                + (f", {slope / 1024:.1f} KiB between first and last step" if slope else "")
            )
        else:
            result.notes.append("relay memory not measured (give --relay-pid)")
        result.series = {"steps": rows}
        if not a.no_plots and rows and relay_pid:
            result.plots.append(
                str(
                    plots.lines(
                        ctx.plot_path("memory"),
                        [float(r["open"]) for r in rows],
                        {
                            "relay RSS MiB": [int(r["relay_rss"]) / 2**20 for r in rows],
                            "swarm RSS MiB": [int(r["swarm_rss"]) / 2**20 for r in rows],
                        },
                        title="capacity: memory vs idle streams",
                        xlabel="streams open",
                        ylabel="MiB",
                    )
                )
            )
        result.ok = int(last["open"]) == a.streams
    finally:
        if fleet is not None:
            await fleet.close()
        await system.close()
        await ctx.cleanup()
    result.duration_s = time.perf_counter() - t_start
    return result
