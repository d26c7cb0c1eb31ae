"""Spawned services (``--spawn``): relays and a publisher as subprocesses on free ports.

Each child runs ``python -m flagstream relay|publisher`` with its configuration in
``FLAGSTREAM_*`` variables, output to a log file (its tail is shown on failure; the file is
removed on close unless FLAGSTREAM_LOADTEST_KEEP_LOGS is set), and inherits this process's
raised file-descriptor limit. ``Service.close`` sends SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from flagstream import procgroup
from flagstream.stack.process import free_port

__all__ = ["Service", "ServiceError", "free_port", "spawn_publisher", "spawn_relay", "wait_ready"]


class ServiceError(Exception):
    """A service did not start or did not become ready; the message has its log's tail."""


@dataclass
class Service:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.perf_counter)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        return procgroup.log_tail(self.log_path, lines)

    def kill(self) -> None:
        """SIGKILL the whole process group (the relay's workers too): a crash."""
        procgroup.kill_group(self.proc)

    def close(self, timeout: float = 10.0) -> None:
        procgroup.stop_group(self.proc, timeout)
        if not os.environ.get("FLAGSTREAM_LOADTEST_KEEP_LOGS"):
            self.log_path.unlink(missing_ok=True)


def _spawn(name: str, args: list[str], env: dict[str, str], url: str) -> Service:
    log = Path(tempfile.mkstemp(prefix=f"flagstream-loadtest-{name}-", suffix=".log")[1])
    child_env = {**os.environ, **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flagstream", *args],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: kill() reaches every worker
        )
    return Service(name=name, url=url, proc=proc, log_path=log)


def spawn_relay(
    *,
    kafka_bootstrap: str,
    topic: str,
    workers: int = 1,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    name: str = "relay",
) -> Service:
    port = port or free_port()
    env = {
        "FLAGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLAGSTREAM_TOPIC": topic,
        "FLAGSTREAM_RELAY_HOST": "127.0.0.1",
        "FLAGSTREAM_RELAY_PORT": str(port),
        "FLAGSTREAM_RELAY_WORKERS": str(workers),
        **(extra_env or {}),
    }
    return _spawn(name, ["relay"], env, f"http://127.0.0.1:{port}")


def publisher_redis_prefix(topic: str) -> str:
    """The Redis key prefix of a publisher spawned for ``topic`` (deleted after the run)."""
    return f"flagstream-loadtest:{topic}:"


def spawn_publisher(
    *,
    kafka_bootstrap: str,
    redis_url: str,
    topic: str,
    admin_token: str,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Service:
    port = port or free_port()
    env = {
        "FLAGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLAGSTREAM_REDIS_URL": redis_url,
        "FLAGSTREAM_TOPIC": topic,
        "FLAGSTREAM_ADMIN_TOKEN": admin_token,
        # its own key space: outboxes of concurrent publishers must not mix
        "FLAGSTREAM_PUBLISHER_REDIS_PREFIX": publisher_redis_prefix(topic),
        "FLAGSTREAM_PUBLISHER_HOST": "127.0.0.1",
        "FLAGSTREAM_PUBLISHER_PORT": str(port),
        **(extra_env or {}),
    }
    return _spawn("publisher", ["publisher"], env, f"http://127.0.0.1:{port}")


async def wait_ready(
    url: str, *, within: float = 60.0, service: Service | None = None, path: str = "/readyz"
) -> float:
    """Poll ``url + path`` until 200; return the seconds waited. Raises ServiceError."""
    start = time.perf_counter()
    deadline = start + within
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if service is not None and service.proc.poll() is not None:
                raise ServiceError(
                    f"{service.name} exited with code {service.proc.returncode} before "
                    f"ready; its log ({service.log_path}):\n{service.log_tail()}"
                )
            try:
                async with session.get(url + path) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - start
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            if time.perf_counter() >= deadline:
                tail = f"\nits log ({service.log_path}):\n{service.log_tail()}" if service else ""
                raise ServiceError(f"{url}{path} not ready after {within:.0f}s ({last}){tail}")
            await asyncio.sleep(0.02)
