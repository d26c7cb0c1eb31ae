"""The system a chaos run breaks: its own Kafka and Redis, Kafka proxies, 2 publishers,
3 relays (the last with 2 workers), all on loopback ports chosen at start.

Rules:
- Kafka and Redis are private instances in the run's directory (never the shared stack),
  so the run may SIGKILL, SIGSTOP and restart them.
- Every relay and publisher reaches Kafka through its own *link*: a proxy port in front of
  a broker listener of its own that advertises that proxy port, so all its connections
  (bootstrap and partition leaders alike) pass the proxy and can be cut alone. The run
  itself reads the topic on the broker's plain listener.
- Services are subprocesses in their own process groups (``loadtest.procs``); a killed one
  is restarted on the same port with the same configuration. Every log file any incarnation
  wrote is kept in ``log_paths`` for the secret scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from flagstream.stack.errors import StackError
from flagstream.stack.kafka import KafkaBroker
from flagstream.stack.process import free_port, free_ports
from flagstream.stack.redis import RedisServer
from loadtest.procs import Service, spawn_publisher, spawn_relay, wait_ready

__all__ = ["Cluster", "ClusterConfig", "LinkedKafka"]


class LinkedKafka(KafkaBroker):
    """A broker with one extra listener per link, each advertising its proxy's port."""

    def __init__(
        self, data_dir: Path, port: int, controller_port: int, links: list[tuple[int, int]]
    ) -> None:
        super().__init__(data_dir, port, controller_port)
        self.links = links  # (broker listener port, proxy port) per link

    def _server_properties(self) -> str:
        lines = super()._server_properties().splitlines()
        names = [f"LINK{i}" for i in range(len(self.links))]
        listen = ",".join(
            f"{n}://127.0.0.1:{p}" for n, (p, _) in zip(names, self.links, strict=True)
        )
        advertise = ",".join(
            f"{n}://127.0.0.1:{q}" for n, (_, q) in zip(names, self.links, strict=True)
        )
        protocols = ",".join(f"{n}:PLAINTEXT" for n in names)
        out = []
        for line in lines:
            key, _, value = line.partition("=")
            if key == "listeners":
                value = f"{value},{listen}"
            elif key == "advertised.listeners":
                value = f"{value},{advertise}"
            elif key == "listener.security.protocol.map":
                value = f"{value},{protocols}"
            out.append(f"{key}={value}")
        return "\n".join(out) + "\n"


@dataclass(frozen=True)
class ClusterConfig:
    topic: str
    admin_token: str
    partitions: int = 3
    relays: int = 3
    relay_workers: tuple[int, ...] = (1, 1, 2)
    publishers: int = 2
    lease_ttl: float = 3.0
    relay_env: dict[str, str] = field(default_factory=dict)
    publisher_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Cluster:
    """Everything a chaos run starts; ``close()`` stops all of it."""

    config: ClusterConfig
    run_dir: Path
    kafka: LinkedKafka
    redis: RedisServer
    proxy: subprocess.Popen[bytes] | None = None
    publishers: list[Service | None] = field(default_factory=list)
    relays: list[Service | None] = field(default_factory=list)
    publisher_ports: list[int] = field(default_factory=list)
    relay_ports: list[int] = field(default_factory=list)
    log_paths: list[Path] = field(default_factory=list)
    _proxy_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # --- bring-up ------------------------------------------------------------------------
    @classmethod
    def create(cls, config: ClusterConfig, run_dir: Path) -> Cluster:
        links = config.relays + config.publishers
        ports = free_ports(2 + 2 * links)
        kafka_port, controller_port = ports[:2]
        listener_ports = ports[2 : 2 + links]
        proxy_ports = ports[2 + links :]
        kafka = LinkedKafka(
            run_dir / "kafka",
            kafka_port,
            controller_port,
            list(zip(listener_ports, proxy_ports, strict=True)),
        )
        redis = RedisServer(run_dir / "redis", free_port())
        return cls(config=config, run_dir=run_dir, kafka=kafka, redis=redis)

    @property
    def links(self) -> list[tuple[int, int]]:
        return self.kafka.links

    def relay_link(self, index: int) -> int:
        return index

    def publisher_link(self, index: int) -> int:
        return self.config.relays + index

    def link_bootstrap(self, link: int) -> str:
        return f"127.0.0.1:{self.links[link][1]}"

    async def start(self, ready_timeout: float = 120.0) -> None:
        await asyncio.to_thread(self.redis.start)
        await asyncio.to_thread(self.kafka.start, 240.0)
        self.log_paths += [self.kafka.log_path, self.kafka.stdout_path, self.redis.log_path]
        self._start_proxy()
        self.publisher_ports = [free_port() for _ in range(self.config.publishers)]
        self.relay_ports = [free_port() for _ in range(self.config.relays)]
        self.publishers = [self._spawn_publisher(i) for i in range(self.config.publishers)]
        for i, service in enumerate(self.publishers):
            assert service is not None
            await wait_ready(service.url, within=ready_timeout, service=service)
            if i == 0:
                await self.wait_leader(ready_timeout)  # the first one creates the topic
        self.relays = [self._spawn_relay(i) for i in range(self.config.relays)]
        for service in self.relays:
            assert service is not None
            await wait_ready(service.url, within=ready_timeout, service=service)

    def _start_proxy(self) -> None:
        log = self.run_dir / "proxy.log"
        self.log_paths.append(log)
        with log.open("ab") as err:
            self.proxy = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "loadtest.chaos.proxy",
                    *(f"{proxy}:{listener}" for listener, proxy in self.links),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        assert self.proxy.stdout is not None
        line = self.proxy.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the Kafka proxy did not start: {line!r}")

    async def proxy_command(self, command: str) -> None:
        async with self._proxy_lock:
            proc = self.proxy
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(command.encode() + b"\n")
            proc.stdin.flush()
            answer = await asyncio.to_thread(proc.stdout.readline)
            if answer.strip() != b"ok":
                raise RuntimeError(f"proxy: {command!r} -> {answer!r}")

    def _spawn_publisher(self, index: int) -> Service:
        cfg = self.config
        service = spawn_publisher(
            kafka_bootstrap=self.link_bootstrap(self.publisher_link(index)),
            redis_url=self.redis.url,
            topic=cfg.topic,
            admin_token=cfg.admin_token,
            port=self.publisher_ports[index],
            extra_env={
                "FLAGSTREAM_TOPIC_PARTITIONS": str(cfg.partitions),
                "FLAGSTREAM_PUBLISHER_LEASE_TTL": str(cfg.lease_ttl),
                **cfg.publisher_env,
            },
        )
        service.name = f"publisher-{index}"
        self.log_paths.append(service.log_path)
        return service

    def _spawn_relay(self, index: int) -> Service:
        cfg = self.config
        service = spawn_relay(
            kafka_bootstrap=self.link_bootstrap(self.relay_link(index)),
            topic=cfg.topic,
            workers=cfg.relay_workers[index],
            port=self.relay_ports[index],
            extra_env=cfg.relay_env,
            name=f"relay-{index}",
        )
        self.log_paths.append(service.log_path)
        return service

    # --- what the faults need ------------------------------------------------------------
    @property
    def publisher_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.publisher_ports]

    @property
    def relay_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.relay_ports]

    async def leader(self) -> int | None:
        """Index of the publisher that holds the forwarder lease (by its metrics), if any."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for i, url in enumerate(self.publisher_urls):
                if self.publishers[i] is None:
                    continue
                try:
                    async with session.get(url + "/metrics") as resp:
                        text = await resp.text()
                except (aiohttp.ClientError, TimeoutError):
                    continue
                for line in text.splitlines():
                    name, _, value = line.partition(" ")
                    if name == "flagstream_publisher_forwarder_leader" and float(value) == 1.0:
                        return i
        return None

    async def wait_leader(self, within: float, *, other_than: int | None = None) -> int:
        deadline = time.monotonic() + within
        while True:
            leader = await self.leader()
            if leader is not None and leader != other_than:
                return leader
            if time.monotonic() > deadline:
                raise RuntimeError("no publisher took the forwarder lease")
            await asyncio.sleep(0.2)

    def kill_publisher(self, index: int) -> None:
        service = self.publishers[index]
        if service is not None:
            service.kill()
            self.publishers[index] = None

    async def restart_publisher(self, index: int, within: float = 60.0) -> None:
        service = self.publishers[index] = self._spawn_publisher(index)
        await wait_ready(service.url, within=within, service=service)

    def signal_publisher(self, index: int, sig: signal.Signals) -> None:
        service = self.publishers[index]
        assert service is not None
        os.kill(service.pid, sig)

    def kill_relay(self, index: int) -> None:
        service = self.relays[index]
        if service is not None:
            service.kill()
            self.relays[index] = None

    async def restart_relay(self, index: int, within: float = 120.0) -> None:
        service = self.relays[index] = self._spawn_relay(index)
        await wait_ready(service.url, within=within, service=service)

    def relay_worker_pids(self, index: int) -> list[int]:
        """The worker processes of a relay started with ``--workers`` > 1."""
        service = self.relays[index]
        if service is None:
            return []
        path = Path(f"/proc/{service.pid}/task/{service.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def relay_pids(self) -> dict[int, list[int]]:
        """Every relay process (supervisor and workers) by relay index."""
        out: dict[int, list[int]] = {}
        for i, service in enumerate(self.relays):
            if service is not None:
                out[i] = [service.pid, *self.relay_worker_pids(i)]
        return out

    async def restart_kafka(self, on_killed: Callable[[], None] | None = None) -> None:
        await asyncio.to_thread(self.kafka.kill)
        if on_killed is not None:
            on_killed()
        await self._start_again(self.kafka.start, 240.0)

    def signal_kafka(self, sig: signal.Signals) -> None:
        pid = self.kafka.pid
        assert pid is not None
        os.kill(pid, sig)

    async def restart_redis(self, on_killed: Callable[[], None] | None = None) -> None:
        await asyncio.to_thread(self.redis.kill)
        if on_killed is not None:
            on_killed()
        await self._start_again(self.redis.start, 60.0)

    async def _start_again(self, start: Callable[[float], None], start_timeout: float) -> None:
        """Start a killed server on its port; the port may stay busy for a while after a
        SIGKILL (connections of the dead process still closing), so retry for up to 90 s."""
        deadline = time.monotonic() + 90
        while True:
            try:
                await asyncio.to_thread(start, start_timeout)
                return
            except StackError as exc:
                if "in use" not in str(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)

    # --- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        for service in [*self.relays, *self.publishers]:
            if service is not None:
                with contextlib.suppress(Exception):
                    service.close(timeout=5.0)
        self.relays = [None] * len(self.relays)
        self.publishers = [None] * len(self.publishers)
        if self.proxy is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proxy.pid, signal.SIGKILL)
            self.proxy.wait()
            self.proxy = None
        with contextlib.suppress(Exception):
            pid = self.kafka.pid
            if pid is not None:
                os.kill(pid, signal.SIGCONT)  # a stopped JVM ignores SIGKILL's reaping
        with contextlib.suppress(Exception):
            self.kafka.kill()
        with contextlib.suppress(Exception):
            self.redis.kill()
