"""``reconnect-storm``: relay A is killed, every stream reconnects to relay B.

Phase 1 (with ``Last-Event-ID``): N streams on A; A is SIGKILLed; changes keep being written;
every stream fails over to B and resumes from its position. Measured from the kill: time until
each stream holds the final version (caught up), bytes received, full puts vs resumptions
(as seen by the clients, and from B's metrics). Phase 2 repeats the storm from B to a fresh
relay C with streams that send no id, so every one needs a full ``put``. Needs ``--spawn``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from loadtest import plots
from loadtest.progress import Progress
from loadtest.report import Result, Table, fmt_ms
from loadtest.scenarios.common import (
    Context,
    ScenarioError,
    System,
    drive,
    open_system,
    scrape_metrics,
    start_relay,
    wait_env_visible,
)
from loadtest.stats import summarize
from loadtest.swarm import Swarm, Target
from loadtest.sysinfo import raise_nofile_limit

NAME = "reconnect-storm"
WATCH_KEY = "flag-0"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--streams", type=int, default=2000, help="streams (default 2000)")
    p.add_argument("--flags", type=int, default=100, help="flags in the environment")
    p.add_argument("--changes-during", type=int, default=5, help="changes written after kill")
    p.add_argument(
        "--reconnect-delay",
        type=float,
        default=1.0,
        help="streams reconnect after uniform(0, this) seconds, like an SDK's jittered backoff",
    )


async def _storm(
    ctx: Context,
    system: System,
    env: str,
    sdk_key: str,
    src: Any,
    dst: Any,
    *,
    resume: bool,
    label: str,
) -> dict[str, Any]:
    a = ctx.args
    rec = ctx.recorder
    rec.watch = (env, WATCH_KEY)
    rec.watch_version.clear()
    rec.watch_time.clear()
    swarm = Swarm(
        [Target.from_url(src.url), Target.from_url(dst.url)],
        rec,
        source_ips=a.source_ips,
        resume=resume,
        reconnect_delay=a.reconnect_delay,
    )
    clients = swarm.add(a.streams, env, sdk_key)
    puts0 = rec.puts
    phase = ["connecting"]
    state = {"final": 1 << 62}

    def caught(version: int) -> int:
        """Streams holding ``version`` (or later) of the watched flag."""
        return sum(1 for v in rec.watch_version.values() if v >= version)

    def render() -> str:
        return (
            f"{label} {phase[0]}: open {swarm.open_count}/{a.streams} caught up "
            f"{caught(state['final'])}/{a.streams} bytes {swarm.bytes_received / 2**20:.1f} MiB "
            f"puts {rec.puts - puts0} errors {sum(swarm.errors.values())}"
        )

    try:
        async with Progress(f"{NAME} {label}", render, enabled=ctx.progress) as progress:
            await swarm.connect_all(clients)
            if not await swarm.wait_until(lambda: rec.puts - puts0 >= a.streams, a.connect_timeout):
                raise ScenarioError(
                    f"{label}: only {rec.puts - puts0}/{a.streams} streams got their put "
                    f"(errors {dict(swarm.errors)}, statuses {dict(swarm.statuses)})"
                )
            # a few live changes first, so every stream has a position beyond the put
            phase[0] = "warming"
            warm = await drive(system.driver, [(env, WATCH_KEY)], rate=20, count=3)
            if warm.errors:
                raise ScenarioError(f"writes failed: {warm.first_error}")
            state["final"] = rec.final_version(env, WATCH_KEY)
            await swarm.wait_until(lambda: caught(state["final"]) >= a.streams, a.settle)
            before = await scrape_metrics(dst.url)
            bytes0, puts1, patches1, opened0 = (
                swarm.bytes_received,
                rec.puts,
                rec.patches,
                swarm.opened_total,
            )
            attempts0 = swarm.attempts
            latency0 = len(swarm.connect_latency)
            phase[0] = "storm"
            state["final"] = 1 << 62
            progress.note(f"killing {src.name}; {a.streams} streams fail over to {dst.name}")
            t_kill = time.perf_counter()
            src.kill()
            stats = await drive(system.driver, [(env, WATCH_KEY)], rate=50, count=a.changes_during)
            final = rec.final_version(env, WATCH_KEY)
            state["final"] = final
            all_caught = await swarm.wait_until(
                lambda: caught(final) >= a.streams,
                a.settle + a.reconnect_delay,
            )
            t_end = time.perf_counter()
            caught_times = [
                rec.watch_time[s] - t_kill
                for s, v in rec.watch_version.items()
                if v >= final and s in rec.watch_time
            ]
            after = await scrape_metrics(dst.url)
            out = {
                "resume": resume,
                "streams": a.streams,
                "all_caught_up": all_caught,
                "caught_up": len(caught_times),
                "caught_up_s": summarize(caught_times),
                "all_caught_up_s": max(caught_times) if all_caught and caught_times else None,
                "bytes_received": swarm.bytes_received - bytes0,
                "full_puts": rec.puts - puts1,
                "patch_events": rec.patches - patches1,
                "reconnects": swarm.opened_total - opened0,
                # connect start -> 200 head of every reconnect: the relay's accept+auth path
                "reconnect_head_s": summarize(swarm.connect_latency[latency0:]),
                "connect_attempts": swarm.attempts - attempts0,
                "changes_during": stats.accepted,
                "write_errors": stats.errors,
                "relay_resumptions": after.get("flagstream_relay_resumptions_total", 0)
                - before.get("flagstream_relay_resumptions_total", 0),
                "relay_full_puts": after.get("flagstream_relay_full_puts_total", 0)
                - before.get("flagstream_relay_full_puts_total", 0),
                "relay_metrics_found": any("resumptions" in k for k in after),
                "relay_counters_delta": {
                    k: after[k] - before.get(k, 0.0)
                    for k in sorted(after)
                    if k.endswith("_total") and after[k] != before.get(k, 0.0)
                },
                "wall_s": t_end - t_kill,
                "catch_up_series": caught_times,
            }
            progress.note(
                f"{'with' if resume else 'without'} ids: {out['caught_up']}/{a.streams} "
                f"caught up, last after {fmt_ms(out['all_caught_up_s'])}, "
                f"{out['full_puts']} full puts, {out['bytes_received'] / 2**20:.1f} MiB"
            )
            return out
    finally:
        await swarm.close()


async def _relay(ctx: Context, system: System, sdk_key: str, name: str) -> Any:
    relay = await start_relay(ctx, system.topic, name=name)
    await wait_env_visible(relay.url, sdk_key)
    return relay


async def run(ctx: Context) -> Result:
    a = ctx.args
    if not ctx.spawn:
        raise ScenarioError("reconnect-storm kills relays: run it with --spawn")
    if a.streams < 1:
        raise ScenarioError("--streams must be >= 1")
    raise_nofile_limit(a.streams + 256)
    result = ctx.result(
        NAME,
        {
            "streams": a.streams,
            "flags": a.flags,
            "changes_during": a.changes_during,
            "reconnect_delay_s": a.reconnect_delay,
            "workers": a.workers,
        },
    )
    t_start = time.perf_counter()
    system = await open_system(ctx, NAME, relays=2)
    result.via = system.driver.via
    env = f"lt-storm-{int(time.time())}"
    phases: list[dict[str, Any]] = []
    try:
        sdk_key = await system.driver.create_environment(env, a.flags)
        relay_a, relay_b = system.relays
        assert relay_a is not None and relay_b is not None
        relay_a.name, relay_b.name = "relay A", "relay B"
        for url in system.relay_urls:
            await wait_env_visible(url, sdk_key)
        phases.append(
            await _storm(ctx, system, env, sdk_key, relay_a, relay_b, resume=True, label="ids")
        )
        relay_c = await _relay(ctx, system, sdk_key, "relay C")
        phases.append(
            await _storm(ctx, system, env, sdk_key, relay_b, relay_c, resume=False, label="no-ids")
        )
    finally:
        await system.close()
        await ctx.cleanup()
    rows = []
    for p in phases:
        s = p["caught_up_s"]
        rows.append(
            [
                "with Last-Event-ID" if p["resume"] else "without id",
                f"{p['caught_up']}/{p['streams']}",
                fmt_ms(s["p50"]),
                fmt_ms(s["p99"]),
                fmt_ms(p["all_caught_up_s"]),
                fmt_ms(p["reconnect_head_s"]["p50"]),
                f"{p['bytes_received'] / 2**20:.2f} MiB",
                str(p["full_puts"]),
                str(p["patch_events"]),
                (f"{p['relay_resumptions']:.0f} / {p['relay_full_puts']:.0f}")
                if p["relay_metrics_found"]
                else "-",
            ]
        )
    result.tables.append(
        Table(
            f"{a.streams} streams, {a.flags} flags, {a.changes_during} changes during the "
            f"storm, reconnect jitter 0-{a.reconnect_delay:g} s",
            [
                "storm",
                "caught up",
                "p50 from kill",
                "p99",
                "all caught up",
                "reconnect to 200, p50",
                "bytes to clients",
                "full puts",
                "patches",
                "relay resumed / full puts",
            ],
            rows,
        )
    )
    result.figures = {
        "phases": [{k: v for k, v in p.items() if k != "catch_up_series"} for p in phases],
    }
    result.series = {("ids" if p["resume"] else "no_ids"): p["catch_up_series"] for p in phases}
    if len(phases) == 2 and phases[1]["bytes_received"]:
        ratio = phases[0]["bytes_received"] / phases[1]["bytes_received"]
        result.notes.append(
            f"with ids the storm moved {ratio:.1%} of the bytes of the storm without ids"
        )
    if not a.no_plots and phases:
        result.plots.append(
            str(
                plots.cdf(
                    ctx.plot_path("catchup"),
                    {
                        ("with Last-Event-ID" if p["resume"] else "without id"): p[
                            "catch_up_series"
                        ]
                        for p in phases
                    },
                    title=f"reconnect storm: {a.streams} streams, time to caught up",
                    xlabel="ms after relay was killed",
                )
            )
        )
    result.ok = len(phases) == 2 and all(p["all_caught_up"] for p in phases)
    result.duration_s = time.perf_counter() - t_start
    return result
