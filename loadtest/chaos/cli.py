"""``flagstream loadtest chaos``: the whole-system fault suite with invariant checks.

Exit code 0 when every invariant held, 1 when one failed (the table says which; the event
timeline and the services' logs are saved), 2 for bad arguments or a system that could not
be started (one line saying what to fix).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest.chaos.schedule import FAULT_KINDS, VARIANTS, is_known

if TYPE_CHECKING:
    from loadtest.chaos.run import ChaosResult

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagstream loadtest chaos",
        description=(
            "Start a private Kafka, Redis, 2 publishers and 3 relays (one with 2 workers), "
            "load them with SSE clients, 2 LaunchDarkly SDKs and If-Match writers, inject a "
            "seeded schedule of faults, then check no loss, monotonicity, convergence, "
            "bounded relay memory and that no secret reached a log."
        ),
    )
    parser.add_argument("--duration", type=float, default=600.0, help="fault phase, seconds")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault schedule")
    parser.add_argument(
        "--faults",
        default="all",
        help="comma-separated fault kinds, or 'all' (default); e.g. --faults zombie:held. "
        "Kinds: "
        + ", ".join(FAULT_KINDS)
        + "; variants: "
        + ", ".join(f"{k}:{v}" for k, vs in VARIANTS.items() for v in vs),
    )
    parser.add_argument("--envs", type=int, default=5, help="environments")
    parser.add_argument("--flags", type=int, default=200, help="flags, spread over the envs")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--write-rate", type=float, default=40.0, help="writes/s, all writers")
    parser.add_argument("--clients", type=int, default=100, help="SSE streams in the swarm")
    parser.add_argument("--stalled", type=int, default=4, help="clients that stop reading")
    parser.add_argument("--relay-rss-bound-mb", type=float, default=300.0)
    parser.add_argument("--converge-timeout", type=float, default=120.0)
    parser.add_argument("--out", default="loadtest/results", help="result directory")
    parser.add_argument("--name", help="file name stem (default chaos-seedN)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


async def _until_signalled(run: Coroutine[Any, Any, ChaosResult]) -> ChaosResult:
    """Run ``run``; SIGINT or SIGTERM cancels it, so that it stops everything it started
    (its ``finally`` blocks) instead of leaving brokers and relays behind."""
    task = asyncio.ensure_future(run)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    kinds = tuple(FAULT_KINDS) if args.faults == "all" else tuple(args.faults.split(","))
    unknown = [k for k in kinds if not is_known(k)]
    if unknown:
        print(
            f"flagstream loadtest chaos: unknown fault kind(s) {', '.join(unknown)}; "
            f"choose from {', '.join(FAULT_KINDS)} (or kind:variant, see --help)",
            file=sys.stderr,
        )
        return 2
    for name in ("duration", "write_rate"):
        if getattr(args, name) <= 0:
            print(
                f"flagstream loadtest chaos: --{name.replace('_', '-')} must be > 0",
                file=sys.stderr,
            )
            return 2
    if args.envs < 1 or args.flags < args.envs or args.clients < args.envs or args.writers < 1:
        print(
            "flagstream loadtest chaos: need --envs >= 1, --flags and --clients >= --envs, "
            "--writers >= 1",
            file=sys.stderr,
        )
        return 2
    from loadtest.chaos.run import ChaosOptions, run_chaos
    from loadtest.report import command_line
    from loadtest.sysinfo import raise_nofile_limit

    opts = ChaosOptions(
        duration=args.duration,
        seed=args.seed,
        kinds=kinds,
        envs=args.envs,
        flags=args.flags,
        writers=args.writers,
        write_rate=args.write_rate,
        clients=args.clients,
        stalled=args.stalled,
        relay_rss_bound_mb=args.relay_rss_bound_mb,
        converge_timeout=args.converge_timeout,
        out=Path(args.out),
        name=args.name,
        progress=not args.quiet,
    )
    raise_nofile_limit(0)
    command = command_line(["chaos", *argv])
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(_until_signalled(run_chaos(opts, command)))
    except asyncio.CancelledError:
        print(
            "flagstream loadtest chaos: interrupted; everything it started was stopped",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        from flagstream.stack.errors import StackError

        if isinstance(exc, (StackError, RuntimeError, OSError)):
            print(f"flagstream loadtest chaos: could not run: {exc}", file=sys.stderr)
            return 2
        raise
    sys.stdout.write(result.markdown)
    print("results: " + " ".join(str(p) for p in result.files), file=sys.stderr)
    return 0 if result.ok else 1
