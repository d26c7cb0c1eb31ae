"""The shared stack: one Kafka broker and one Redis under one data directory.

``<data_dir>/kafka/`` belongs to a :class:`KafkaBroker`, ``<data_dir>/redis/`` to a
:class:`RedisServer`; ``<data_dir>/stack.json`` records the ports of the last ``up`` so that
``status`` and ``down`` find the same processes without repeating the flags.
Every operation holds ``<data_dir>/.lock``, so concurrent ``up`` calls (several test
sessions starting at once) start one stack, not two.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from flagstream.stack import process
from flagstream.stack.errors import StackError
from flagstream.stack.kafka import KafkaBroker
from flagstream.stack.paths import (
    DEFAULT_CONTROLLER_PORT,
    DEFAULT_KAFKA_PORT,
    DEFAULT_REDIS_PORT,
    default_data_dir,
)
from flagstream.stack.redis import RedisServer


@dataclass(frozen=True, slots=True)
class StackConfig:
    data_dir: Path
    kafka_port: int
    controller_port: int
    redis_port: int


def _env_port(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{name}={raw!r} is not a port number (1-65535)")
    return int(raw)


def resolve_config(
    data_dir: Path | None = None,
    kafka_port: int | None = None,
    controller_port: int | None = None,
    redis_port: int | None = None,
) -> StackConfig:
    """Each setting from: the argument, else FLAGSTREAM_STACK_* env, else the ports the
    last ``up`` of this data dir used, else the defaults."""
    root = (data_dir or default_data_dir()).expanduser().resolve()
    recorded: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads((root / "stack.json").read_text())

    def pick(arg: int | None, env: str, key: str, default: int) -> int:
        if arg is not None:
            return arg
        from_env = _env_port(env)
        if from_env is not None:
            return from_env
        value = recorded.get(key)
        return value if isinstance(value, int) else default

    return StackConfig(
        data_dir=root,
        kafka_port=pick(
            kafka_port, "FLAGSTREAM_STACK_KAFKA_PORT", "kafka_port", DEFAULT_KAFKA_PORT
        ),
        controller_port=pick(
            controller_port,
            "FLAGSTREAM_STACK_CONTROLLER_PORT",
            "controller_port",
            DEFAULT_CONTROLLER_PORT,
        ),
        redis_port=pick(
            redis_port, "FLAGSTREAM_STACK_REDIS_PORT", "redis_port", DEFAULT_REDIS_PORT
        ),
    )


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.kafka = KafkaBroker(
            config.data_dir / "kafka", config.kafka_port, config.controller_port
        )
        self.redis = RedisServer(config.data_dir / "redis", config.redis_port)

    @property
    def lock_path(self) -> Path:
        return self.config.data_dir / ".lock"

    def env_lines(self) -> list[str]:
        return [
            f"FLAGSTREAM_KAFKA_BOOTSTRAP={self.kafka.bootstrap}",
            f"FLAGSTREAM_REDIS_URL={self.redis.url}",
        ]

    def record(self) -> None:
        fields = asdict(self.config)
        fields.pop("data_dir")
        (self.config.data_dir / "stack.json").write_text(json.dumps(fields) + "\n")

    def up(self, timeout: float = 180.0, say: Callable[[str], None] = lambda _: None) -> None:
        """Start Redis and Kafka, reusing whichever already runs; return once both answer."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        with process.file_lock(self.lock_path):
            redis, kafka = self.redis, self.kafka
            if redis.is_running():
                say(f"redis already running (pid {redis.pid}) on {redis.url}")
            redis.start()
            say(f"redis ready on {redis.url}")
            if kafka.is_running():
                say(f"kafka already running (pid {kafka.pid}) on {kafka.bootstrap}")
            else:
                say(f"starting kafka {kafka.version} on {kafka.bootstrap} (log {kafka.log_path})")
            kafka.start(timeout)
            say(f"kafka ready on {kafka.bootstrap} ({kafka.last_start_seconds or 0:.1f}s)")
            self.record()

    def down(self, say: Callable[[str], None] = lambda _: None) -> None:
        """Stop exactly the processes this data dir's PID files name; no-op when none run."""
        if not self.config.data_dir.exists():
            say(f"nothing to stop ({self.config.data_dir} does not exist)")
            return
        with process.file_lock(self.lock_path):
            servers: tuple[tuple[str, KafkaBroker | RedisServer], ...] = (
                ("kafka", self.kafka),
                ("redis", self.redis),
            )
            for name, server in servers:
                pid = server.pid
                server.stop()  # also when the PID file is lost (KafkaBroker looks for it)
                say(f"{name} stopped (pid {pid})" if pid else f"{name} not running")
