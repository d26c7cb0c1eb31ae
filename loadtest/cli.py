"""``flagstream loadtest SCENARIO [options]``: run one benchmark scenario, write its results.

Output: a progress line on stderr while running; ``{out}/{name}.json`` (every figure and raw
series), ``{out}/{name}.md`` (a summary with the exact command and machine facts, ready for
BENCHMARKS.md) and ``{out}/{name}-*.png`` plots; the Markdown is also printed on stdout.
Exit code 0 if the run completed with correct counts, 1 if it ran but counts were off, 2 for
bad arguments or an unreachable system (one line saying what to fix).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from types import ModuleType

from loadtest.report import Result
from loadtest.sysinfo import LimitError, raise_nofile_limit

__all__ = ["main"]


def _scenarios() -> dict[str, ModuleType]:
    from loadtest.scenarios import (
        capacity,
        client_fanout,
        cold_start,
        fanout,
        reconnect_storm,
        throughput,
    )

    modules = (fanout, throughput, capacity, reconnect_storm, cold_start, client_fanout)
    return {m.NAME: m for m in modules}


DEFAULT_VIA = {"fanout": "publisher"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagstream loadtest",
        description="Load generator and benchmark scenarios for flagstream relays.",
    )
    sub = parser.add_subparsers(dest="scenario", metavar="SCENARIO", required=True)
    sub.add_parser(
        "chaos",
        help="whole-system fault suite with invariant checks (flagstream loadtest chaos --help)",
        add_help=False,
    )
    for name, module in _scenarios().items():
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        g = p.add_argument_group("system under test")
        g.add_argument(
            "--spawn",
            action="store_true",
            help="start publisher/relays as subprocesses on a fresh topic of the local stack "
            "(the default when no --relay is given)",
        )
        g.add_argument("--relay", action="append", default=[], help="relay URL (repeatable)")
        g.add_argument("--publisher", help="publisher URL (with --via publisher and --relay)")
        g.add_argument(
            "--via",
            choices=("publisher", "kafka"),
            default=DEFAULT_VIA.get(name, "kafka"),
            help="write changes through the publisher API or straight into Kafka "
            f"(default {DEFAULT_VIA.get(name, 'kafka')})",
        )
        g.add_argument(
            "--kafka",
            default=os.environ.get("FLAGSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
            help="Kafka bootstrap (default $FLAGSTREAM_KAFKA_BOOTSTRAP or 127.0.0.1:19092)",
        )
        g.add_argument(
            "--redis",
            default=os.environ.get("FLAGSTREAM_REDIS_URL", "redis://127.0.0.1:16379/0"),
            help="Redis URL for a spawned publisher",
        )
        g.add_argument(
            "--topic",
            help="topic of the given relays (default $FLAGSTREAM_TOPIC or flagstream.state); "
            "with --spawn the prefix of the fresh topics this run creates",
        )
        g.add_argument(
            "--keep-topics", action="store_true", help="do not delete the topics a run created"
        )
        g.add_argument("--admin-token", default=os.environ.get("FLAGSTREAM_ADMIN_TOKEN"))
        g.add_argument("--workers", type=int, default=1, help="workers per spawned relay")
        g.add_argument(
            "--relay-env",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="extra environment for spawned relays, e.g. FLAGSTREAM_RELAY_HEARTBEAT_INTERVAL=1",
        )
        g.add_argument("--ready-timeout", type=float, default=60.0)
        c = p.add_argument_group("clients and output")
        c.add_argument(
            "--source-ips",
            type=int,
            default=8,
            help="spread streams over 127.0.0.2..127.0.0.(N+1) (0: kernel's choice)",
        )
        c.add_argument("--connect-timeout", type=float, default=60.0)
        c.add_argument("--settle", type=float, default=15.0, help="max wait for deliveries")
        c.add_argument("--out", default="loadtest/results", help="result directory")
        c.add_argument("--name", help="file name stem (default: the scenario)")
        c.add_argument("--no-plots", action="store_true")
        c.add_argument("--quiet", action="store_true", help="no progress line")
        module.add_arguments(p)
    return parser


def _run(coro_factory: Callable[[], Awaitable[Result]]) -> Result:
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro_factory())  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["chaos"]:  # its own options: see loadtest/chaos/cli.py
        from loadtest.chaos.cli import main as chaos_main

        return chaos_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    from loadtest.driver import DriverError
    from loadtest.procs import ServiceError
    from loadtest.scenarios.common import Context, ScenarioError

    module = _scenarios()[args.scenario]
    ctx = Context(args=args, argv=args_list)
    try:
        raise_nofile_limit(0)  # children (spawned relays) inherit the raised limit
        result = _run(lambda: module.run(ctx))
    except (ScenarioError, ServiceError, LimitError, DriverError) as exc:
        print(f"flagstream loadtest {args.scenario}: {exc}", file=sys.stderr)
        return 2
    finally:
        ctx.close_services()
    from pathlib import Path

    json_path, md_path = result.write(Path(args.out), args.name or args.scenario)
    sys.stdout.write(result.markdown(relative_to=Path(args.out)))
    print(f"\nresults: {json_path} {md_path}", file=sys.stderr)
    return 0 if result.ok else 1
