"""``flagstream stack up|down|status``: the local Kafka + Redis stack.

``up`` prints ``FLAGSTREAM_KAFKA_BOOTSTRAP=…`` and ``FLAGSTREAM_REDIS_URL=…`` on stdout (and
nothing else, so ``set -a; eval "$(flagstream stack up)"`` works); progress goes to stderr.
Failures a user can fix print one line and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from flagstream.stack.errors import StackError
from flagstream.stack.jars import kafka_version
from flagstream.stack.stack import Stack, resolve_config


def _say(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagstream stack",
        description="Run a local Apache Kafka (KRaft) broker and Redis on 127.0.0.1.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        help="data, logs and PID files (env FLAGSTREAM_STACK_DIR; "
        "default ~/.cache/flagstream/stack)",
    )
    common.add_argument(
        "--kafka-port", type=_port, help="broker port (env FLAGSTREAM_STACK_KAFKA_PORT; 19092)"
    )
    common.add_argument(
        "--controller-port",
        type=_port,
        help="KRaft controller port (env FLAGSTREAM_STACK_CONTROLLER_PORT; 19093)",
    )
    common.add_argument(
        "--redis-port", type=_port, help="Redis port (env FLAGSTREAM_STACK_REDIS_PORT; 16379)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status}")
    up = sub.add_parser("up", parents=[common], help="start the stack (reuses a running one)")
    up.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for Kafka (default 180)"
    )
    down = sub.add_parser("down", parents=[common], help="stop what 'up' started")
    down.add_argument("--purge", action="store_true", help="also delete the data directory")
    sub.add_parser("status", parents=[common], help="show what runs where (exit 1 if not up)")
    return parser


def _up(stack: Stack, timeout: float) -> int:
    stack.up(timeout, _say)
    for line in stack.env_lines():
        print(line, flush=True)
    return 0


def _down(stack: Stack, purge: bool) -> int:
    stack.down(_say)
    if purge and stack.config.data_dir.exists():
        shutil.rmtree(stack.config.data_dir, ignore_errors=True)
        _say(f"deleted {stack.config.data_dir}")
    return 0


def _status(stack: Stack) -> int:
    rows = [
        (
            "kafka",
            stack.kafka.pid,
            stack.kafka.bootstrap,
            stack.kafka.is_ready(),
            stack.kafka.log_path,
        ),
        ("redis", stack.redis.pid, stack.redis.url, stack.redis.is_ready(), stack.redis.log_path),
    ]
    for name, pid, address, ready, log in rows:
        if pid is None:
            state = "stopped"
        else:
            state = f"running pid {pid}, {'ready' if ready else 'NOT answering'}"
        print(f"{name}: {state}  {address}  log {log}")
    print(f"data: {stack.config.data_dir}  kafka version {kafka_version()}")
    return 0 if all(ready for _, _, _, ready, _ in rows) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        stack = Stack(
            resolve_config(args.data_dir, args.kafka_port, args.controller_port, args.redis_port)
        )
        if args.command == "up":
            return _up(stack, args.timeout)
        if args.command == "down":
            return _down(stack, args.purge)
        return _status(stack)
    except StackError as error:
        print(f"flagstream stack: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"flagstream stack: error: {error}", file=sys.stderr)
        return 1
