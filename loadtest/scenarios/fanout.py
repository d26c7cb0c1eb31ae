"""``fanout``: one environment, N streams, one change per interval.

Per change: the delay from acceptance until the first and until the last stream received it,
and the spread between them (the fan-out proper). Then, in the same run, the kernel floor for
the same N and frame size, and every fan-out figure as a multiple of it.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

from loadtest import plots
from loadtest.floor import measure_floor
from loadtest.progress import Progress
from loadtest.report import Result, Table, fmt_ms
from loadtest.scenarios.common import Context, ScenarioError, drive, open_system, wait_env_visible
from loadtest.stats import summarize
from loadtest.swarm import Swarm, Target
from loadtest.sysinfo import cpu_seconds, raise_nofile_limit

NAME = "fanout"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--streams", type=int, default=1000, help="SSE streams (default 1000)")
    p.add_argument("--changes", type=int, default=50, help="changes to write (default 50)")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between changes")
    p.add_argument("--flags", type=int, default=10, help="flags in the environment")
    p.add_argument("--floor-rounds", type=int, default=20, help="rounds of the kernel floor")
    p.add_argument("--no-floor", action="store_true", help="skip the kernel floor")


def _row(name: str, s: dict[str, Any], floor: float | None = None) -> list[str]:
    row = [name] + [fmt_ms(s[k]) for k in ("p50", "p90", "p99", "max")]
    if floor:
        row.append(f"{s['p50'] / floor:.1f}x" if not math.isnan(s["p50"]) else "-")
    else:
        row.append("")
    return row


async def run(ctx: Context) -> Result:
    a = ctx.args
    if a.streams < 1 or a.changes < 1 or a.interval <= 0:
        raise ScenarioError("--streams, --changes and --interval must be positive")
    raise_nofile_limit(a.streams + 256)
    result = ctx.result(
        NAME,
        {
            "streams": a.streams,
            "changes": a.changes,
            "interval_s": a.interval,
            "flags": a.flags,
            "workers": a.workers,
        },
    )
    rec = ctx.recorder
    t_start = time.perf_counter()
    system = await open_system(ctx, NAME)
    result.via = system.driver.via
    env = f"lt-fanout-{int(time.time())}"
    swarm: Swarm | None = None
    try:
        sdk_key = await system.driver.create_environment(env, a.flags)
        await wait_env_visible(system.relay_urls[0], sdk_key, flags=a.flags)
        swarm = Swarm([Target.from_url(system.relay_urls[0])], rec, source_ips=a.source_ips)
        clients = swarm.add(a.streams, env, sdk_key)
        phase = ["connecting"]

        def render() -> str:
            if swarm is None:
                return "done"
            got = len(rec.receipt_time)
            return (
                f"{phase[0]}: open {swarm.open_count}/{a.streams} puts {rec.puts} "
                f"changes {rec.accepted_count}/{a.changes} deliveries {got}/"
                f"{rec.accepted_count * a.streams} errors {sum(swarm.errors.values())}"
            )

        async with Progress(NAME, render, enabled=ctx.progress) as progress:
            await swarm.connect_all(clients)
            ok = await swarm.wait_until(
                lambda: swarm is not None and rec.puts >= a.streams, a.connect_timeout
            )
            if not ok:
                raise ScenarioError(
                    f"only {rec.puts}/{a.streams} streams got their initial put in "
                    f"{a.connect_timeout:.0f}s (errors {dict(swarm.errors)}, "
                    f"statuses {dict(swarm.statuses)})"
                )
            progress.note(f"{a.streams} streams open; writing {a.changes} changes")
            phase[0] = "changing"
            bytes_before, events_before = swarm.bytes_received, rec.patches
            pids = [r.pid for r in system.relays if r is not None]
            cpu0 = [cpu_seconds(p) for p in pids], cpu_seconds(os.getpid(), tree=False)
            t0 = time.perf_counter()
            stats = await drive(
                system.driver, [(env, "flag-0")], rate=1 / a.interval, count=a.changes
            )
            phase[0] = "draining"
            expected = stats.accepted * a.streams
            await swarm.wait_deliveries(expected, a.settle)
            span = time.perf_counter() - t0
            relay_cpu = sum(cpu_seconds(p) for p in pids) - sum(cpu0[0]) if pids else None
            self_cpu = cpu_seconds(os.getpid(), tree=False) - cpu0[1]
            frame_bytes = max(
                1,
                round((swarm.bytes_received - bytes_before) / max(1, rec.patches - events_before)),
            )
            by_env = swarm.streams_by_env()
            await swarm.close()
            swarm = None
        lagging = rec.lagging_streams(by_env)
        changes = rec.changes()
        first = [c.first - c.sent for c in changes if c.receivers]
        last = [c.last - c.sent for c in changes if c.receivers]
        spread = [c.last - c.first for c in changes if c.receivers]
        write_latency = rec.write_latencies()
        all_delays = rec.delays()
        received = len(rec.receipt_time)
        s_first, s_last, s_spread = summarize(first), summarize(last), summarize(spread)
        s_all = summarize(all_delays)
        floor = None
        if not a.no_floor:
            floor = measure_floor(a.streams, frame_bytes, rounds=a.floor_rounds)
        floor_p50 = float(floor.delivered_s["p50"]) if floor else None
        result.figures = {
            "changes_requested": stats.requested,
            "changes_accepted": stats.accepted,
            "write_errors": stats.errors,
            "first_write_error": stats.first_error,
            "deliveries_expected": expected,
            "deliveries_received": received,
            "deliveries_missing": expected - received,
            "streams_not_converged": lagging,
            "changes_incomplete": sum(1 for c in changes if c.receivers < a.streams),
            "frame_bytes": frame_bytes,
            "first_s": s_first,
            "last_s": s_last,
            "spread_s": s_spread,
            "all_s": s_all,
            "write_ack_s": summarize(write_latency),
            "relay_cpu_share": relay_cpu / span if relay_cpu is not None else None,
            "loadtest_cpu_share": self_cpu / span,
            "floor": floor.to_json() if floor else None,
            "last_over_floor_p50": (float(s_last["p50"]) / floor_p50) if floor_p50 else None,
            "spread_over_floor_p50": (float(s_spread["p50"]) / floor_p50) if floor_p50 else None,
        }
        headers = ["delay from the write", "p50", "p90", "p99", "max", "p50 / floor"]
        rows = [
            _row("first stream", s_first, floor_p50),
            _row("last stream", s_last, floor_p50),
            _row("spread (last - first)", s_spread, floor_p50),
            _row("every delivery", s_all, floor_p50),
            _row(f"({system.driver.via} acknowledged the write)", summarize(write_latency)),
        ]
        if floor:
            rows.append(_row("floor: send() loop", floor.send_loop_s))
            rows.append(_row("floor: all read by sink", floor.delivered_s))
        result.tables.append(
            Table(
                f"{a.streams} streams x {stats.accepted} changes, {frame_bytes} B per event",
                headers,
                rows,
            )
        )
        result.notes.append(
            f"deliveries {received}/{expected} "
            f"({expected - received} not delivered: coalesced or lost), "
            f"streams not holding the final version: {lagging}, write errors {stats.errors}"
        )
        if relay_cpu is not None:
            result.notes.append(
                f"CPU while changing: relay {relay_cpu / span:.0%} of a core, this process "
                f"(swarm + driver) {self_cpu / span:.0%}"
            )
        result.series = {"first": first, "last": last, "spread": spread}
        if not a.no_plots and changes:
            result.plots.append(
                str(
                    plots.cdf(
                        ctx.plot_path("cdf"),
                        {"first stream": first, "last stream": last, "spread": spread},
                        title=f"fanout: {a.streams} streams, delay per change",
                        xlabel="ms after the write was sent",
                    )
                )
            )
        result.ok = lagging == 0 and stats.errors == 0 and stats.accepted == a.changes
    finally:
        if swarm is not None:
            await swarm.close()
        await system.close()
        await ctx.cleanup()
    result.duration_s = time.perf_counter() - t_start
    return result
