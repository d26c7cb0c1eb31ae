"""``throughput``: many environments, a rising change rate until p99 delay passes a bound.

Each step writes changes round-robin over every environment's flags at a fixed rate for
``--step-seconds``; each change is delivered to that environment's streams. A step passes
if the p99 delay (accept -> receipt) of its changes is within ``--p99-bound`` and the
driver achieved at least 90% of the rate. The figure is the deliveries per second of the
last passing step.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from loadtest import plots
from loadtest.driver import flag_key
from loadtest.progress import Progress
from loadtest.report import Result, Table, fmt_ms
from loadtest.scenarios.common import Context, ScenarioError, drive, open_system, wait_env_visible
from loadtest.stats import summarize
from loadtest.swarm import Swarm, Target
from loadtest.sysinfo import cpu_seconds, raise_nofile_limit

NAME = "throughput"


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated numbers") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates must be positive")
    return rates


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{float(share):.0%}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--envs", type=int, default=20, help="environments (default 20)")
    p.add_argument("--streams-per-env", type=int, default=50, help="streams each (default 50)")
    p.add_argument("--flags", type=int, default=10, help="flags per environment")
    p.add_argument(
        "--rates",
        type=_rates,
        default=_rates("50,100,200,400,800,1600,3200,6400"),
        help="changes/s per step (default 50,100,...,6400)",
    )
    p.add_argument("--step-seconds", type=float, default=5.0, help="length of each step")
    p.add_argument("--p99-bound", type=float, default=0.5, help="p99 delay bound in seconds")
    p.add_argument("--inflight", type=int, default=256, help="max outstanding writes")


async def run(ctx: Context) -> Result:
    a = ctx.args
    streams = a.envs * a.streams_per_env
    if a.envs < 1 or a.streams_per_env < 1 or a.flags < 1:
        raise ScenarioError("--envs, --streams-per-env and --flags must be >= 1")
    raise_nofile_limit(streams + 256)
    result = ctx.result(
        NAME,
        {
            "envs": a.envs,
            "streams_per_env": a.streams_per_env,
            "flags": a.flags,
            "rates": a.rates,
            "step_seconds": a.step_seconds,
            "p99_bound_s": a.p99_bound,
            "workers": a.workers,
        },
    )
    rec = ctx.recorder
    t_start = time.perf_counter()
    system = await open_system(ctx, NAME)
    result.via = system.driver.via
    stamp = int(time.time())
    envs = [f"lt-tp-{stamp}-{i}" for i in range(a.envs)]
    swarm: Swarm | None = None
    steps: list[dict[str, Any]] = []
    try:
        keys = await asyncio.gather(*(system.driver.create_environment(e, a.flags) for e in envs))
        for k in keys:
            await wait_env_visible(system.relay_urls[0], k)
        swarm = Swarm([Target.from_url(u) for u in system.relay_urls], rec, source_ips=a.source_ips)
        clients = []
        for env, key in zip(envs, keys, strict=True):
            clients += swarm.add(a.streams_per_env, env, key)
        targets = [(e, flag_key(f)) for f in range(a.flags) for e in envs]
        # CPU shares per step: the relay (all workers) and this process (swarm + driver)
        # (the relays are children of this process: count this process alone, no tree)
        me = os.getpid()
        pids = [r.pid for r in system.relays if r is not None] + [me]
        state = {"rate": 0.0}

        def render() -> str:
            if swarm is None:
                return "done"
            return (
                f"rate {state['rate']:.0f}/s open {swarm.open_count}/{streams} "
                f"changes {rec.accepted_count} deliveries {len(rec.receipt_time)} "
                f"errors {sum(swarm.errors.values())}"
            )

        async with Progress(NAME, render, enabled=ctx.progress) as progress:
            await swarm.connect_all(clients)
            if not await swarm.wait_until(lambda: rec.puts >= streams, a.connect_timeout):
                raise ScenarioError(
                    f"only {rec.puts}/{streams} streams got their put "
                    f"(errors {dict(swarm.errors)}, statuses {dict(swarm.statuses)})"
                )
            for rate in a.rates:
                state["rate"] = rate
                before = len(rec.receipt_time)
                cpu0 = [cpu_seconds(pid, tree=pid != me) for pid in pids]
                t0 = time.perf_counter()
                stats = await drive(
                    system.driver,
                    targets,
                    rate=rate,
                    duration=a.step_seconds,
                    inflight=a.inflight,
                )
                t1 = time.perf_counter()
                cpu = [
                    (cpu_seconds(pid, tree=pid != me) - c) / (t1 - t0)
                    for pid, c in zip(pids, cpu0, strict=True)
                ]
                expected = before + stats.accepted * a.streams_per_env
                await swarm.wait_deliveries(expected, a.settle)
                delays = rec.delays(since=t0, until=t1)
                s = summarize(delays)
                in_window = sum(1 for t in rec.receipt_time[before:] if t0 <= t < t1)
                deliveries_per_s = len(delays) / (t1 - t0)
                achieved = stats.accepted / (t1 - t0)
                passed = (
                    s["count"] > 0
                    and float(s["p99"]) <= a.p99_bound
                    and achieved >= 0.9 * rate
                    and stats.errors == 0
                )
                steps.append(
                    {
                        "rate": rate,
                        "achieved_rate": achieved,
                        "accepted": stats.accepted,
                        "errors": stats.errors,
                        "deliveries": len(delays),
                        "deliveries_expected": stats.accepted * a.streams_per_env,
                        "deliveries_per_s": deliveries_per_s,
                        "received_in_window": in_window,
                        "p50": s["p50"],
                        "p99": s["p99"],
                        "max": s["max"],
                        "passed": passed,
                        "relay_cpu": cpu[0] if len(cpu) > 1 else None,
                        "loadtest_cpu": cpu[-1],
                    }
                )
                progress.note(
                    f"{rate:.0f}/s: achieved {achieved:.0f}/s, {deliveries_per_s:.0f} "
                    f"deliveries/s, p99 {fmt_ms(s['p99'])} -> {'pass' if passed else 'stop'}"
                )
                if not passed:
                    break
            by_env = swarm.streams_by_env()
            await swarm.close()
            swarm = None
        lagging = rec.lagging_streams(by_env)
        good = [s for s in steps if s["passed"]]
        best = good[-1] if good else None
        stop = steps[-1] if steps and not steps[-1]["passed"] else None
        reason = "all steps passed (raise --rates)"
        if stop is not None:
            if stop["errors"]:
                reason = "write errors"
            elif float(stop["achieved_rate"]) < 0.9 * float(stop["rate"]):
                reason = f"driver ({result.via}) could not keep the rate"
            else:
                reason = f"p99 above {fmt_ms(a.p99_bound)}"
        result.figures = {
            "streams": streams,
            "steps": steps,
            "sustained_deliveries_per_s": best["deliveries_per_s"] if best else 0,
            "sustained_changes_per_s": best["achieved_rate"] if best else 0,
            "stopped_because": reason,
            "streams_not_converged": lagging,
            "deliveries_missing": sum(
                int(s["deliveries_expected"]) - int(s["deliveries"]) for s in steps
            ),
        }
        result.tables.append(
            Table(
                f"{a.envs} environments x {a.streams_per_env} streams, "
                f"{a.step_seconds:.0f} s per step",
                [
                    "changes/s asked",
                    "achieved",
                    "deliveries/s",
                    "p50",
                    "p99",
                    "max",
                    "relay CPU",
                    "loadtest CPU",
                    "",
                ],
                [
                    [
                        f"{s['rate']:.0f}",
                        f"{s['achieved_rate']:.0f}",
                        f"{s['deliveries_per_s']:.0f}",
                        fmt_ms(s["p50"]),
                        fmt_ms(s["p99"]),
                        fmt_ms(s["max"]),
                        _pct(s["relay_cpu"]),
                        _pct(s["loadtest_cpu"]),
                        "pass" if s["passed"] else "stop",
                    ]
                    for s in steps
                ],
            )
        )
        result.notes.append(
            f"sustained: {result.figures['sustained_deliveries_per_s']:.0f} deliveries/s "
            f"({result.figures['sustained_changes_per_s']:.0f} changes/s); stopped: {reason}"
        )
        result.series = {"steps": steps}
        if not a.no_plots and steps:
            result.plots.append(
                str(
                    plots.lines(
                        ctx.plot_path("ramp"),
                        [float(s["achieved_rate"]) for s in steps],
                        {
                            "p50 ms": [float(s["p50"]) * 1000 for s in steps],
                            "p99 ms": [float(s["p99"]) * 1000 for s in steps],
                        },
                        title=f"throughput: {streams} streams over {a.envs} environments",
                        xlabel="changes/s achieved",
                        ylabel="delay (ms)",
                        logy=True,
                        secondary={"deliveries/s": [float(s["deliveries_per_s"]) for s in steps]},
                        secondary_label="deliveries/s",
                    )
                )
            )
        result.notes.append(f"streams not holding the final version of every flag: {lagging}")
        result.ok = bool(steps) and lagging == 0
    finally:
        if swarm is not None:
            await swarm.close()
        await system.close()
        await ctx.cleanup()
    result.duration_s = time.perf_counter() - t_start
    return result
