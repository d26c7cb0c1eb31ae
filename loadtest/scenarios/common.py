"""What every scenario shares: the system under test, the write loop, waiting helpers.

A scenario either spawns its own publisher and relays (``--spawn``, the default when no
``--relay`` URL is given: a fresh topic per run on the local stack, services on free ports)
or targets running services by URL. The order of bring-up matters: the topic must exist
before a relay can become ready (relays never create it), so the driver (which creates it,
or the publisher, which creates it at start) comes first, then the relays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.driver import Driver, DriverError, KafkaDriver, PublisherDriver, delete_topic
from loadtest.procs import (
    Service,
    ServiceError,
    publisher_redis_prefix,
    spawn_publisher,
    spawn_relay,
    wait_ready,
)
from loadtest.recorder import DeliveryRecorder
from loadtest.report import Result, command_line
from loadtest.sysinfo import machine_facts

__all__ = [
    "Context",
    "DriveStats",
    "ScenarioError",
    "System",
    "drive",
    "open_system",
    "wait_env_visible",
]


class ScenarioError(Exception):
    """The scenario cannot run as asked; the message says what to change."""


@dataclass
class Context:
    """The parsed command line plus what every scenario needs around it."""

    args: argparse.Namespace
    argv: list[str]
    recorder: DeliveryRecorder = field(default_factory=DeliveryRecorder)
    services: list[Service] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)  # created by this run, deleted after
    redis_prefixes: list[str] = field(default_factory=list)  # spawned publishers' keys

    @property
    def spawn(self) -> bool:
        return bool(self.args.spawn or not self.args.relay)

    @property
    def out_dir(self) -> Path:
        return Path(self.args.out)

    @property
    def progress(self) -> bool:
        return not self.args.quiet

    def result(self, scenario: str, config: dict[str, Any]) -> Result:
        return Result(
            scenario=scenario,
            command=command_line(self.argv),
            machine=machine_facts(),
            config=config,
        )

    def plot_path(self, name: str) -> Path:
        return self.out_dir / f"{self.args.name or self.args.scenario}-{name}.png"

    def close_services(self) -> None:
        for s in reversed(self.services):
            s.close()
        self.services.clear()

    def new_topic(self, suffix: str) -> str:
        """A fresh topic for a spawned run (``--topic`` as its prefix if given)."""
        base = self.args.topic or f"loadtest.{secrets.token_hex(4)}"
        topic = f"{base}.{suffix}"
        self.topics.append(topic)
        return topic

    async def cleanup(self) -> None:
        """Stop spawned services, then delete the topics this run created."""
        self.close_services()
        if self.args.keep_topics:
            return
        for topic in self.topics:
            with contextlib.suppress(Exception):
                await delete_topic(self.args.kafka, topic)
        if self.redis_prefixes:
            with contextlib.suppress(Exception):
                await _delete_redis_keys(self.args.redis, self.redis_prefixes)
        self.topics.clear()
        self.redis_prefixes.clear()


@dataclass
class System:
    """The services a scenario talks to, and the driver that writes to them."""

    ctx: Context
    topic: str
    relay_urls: list[str]
    relays: list[Service | None]
    driver: Driver
    publisher: Service | None = None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.driver.stop()


async def start_relay(
    ctx: Context, topic: str, *, name: str = "relay", within: float | None = None
) -> Service:
    """Spawn a relay on ``topic`` and wait until it is ready (ServiceError if not)."""
    a = ctx.args
    extra = dict(kv.split("=", 1) for kv in a.relay_env)
    relay = spawn_relay(
        kafka_bootstrap=a.kafka, topic=topic, workers=a.workers, extra_env=extra, name=name
    )
    ctx.services.append(relay)
    await wait_ready(relay.url, within=within or a.ready_timeout, service=relay)
    return relay


async def open_system(ctx: Context, scenario: str, *, relays: int = 1) -> System:
    """Bring up (or attach to) the publisher/Kafka driver and ``relays`` relays."""
    a = ctx.args
    if ctx.spawn:
        topic = ctx.new_topic(scenario)
    else:
        topic = a.topic or os.environ.get("FLAGSTREAM_TOPIC", "flagstream.state")
    publisher: Service | None = None
    driver: Driver
    if a.via == "publisher":
        token = a.admin_token or secrets.token_urlsafe(24)
        if ctx.spawn:
            publisher = spawn_publisher(
                kafka_bootstrap=a.kafka, redis_url=a.redis, topic=topic, admin_token=token
            )
            ctx.services.append(publisher)
            ctx.redis_prefixes.append(publisher_redis_prefix(topic))
            await wait_ready(publisher.url, within=a.ready_timeout, service=publisher)
            url = publisher.url
        elif a.publisher:
            if not a.admin_token:
                raise ScenarioError("--publisher needs --admin-token (or FLAGSTREAM_ADMIN_TOKEN)")
            url = a.publisher
        else:
            raise ScenarioError("--via publisher with --relay needs --publisher URL")
        driver = PublisherDriver(url, token, ctx.recorder)
    else:
        driver = KafkaDriver(a.kafka, topic, ctx.recorder)
    try:
        await driver.start()
    except DriverError as exc:
        raise ScenarioError(f"{exc} (is the local stack up? `flagstream stack up`)") from exc
    if ctx.spawn:
        spawned: list[Service | None] = [
            await start_relay(ctx, topic, name=f"relay{i}") for i in range(relays)
        ]
        urls = [s.url for s in spawned if s is not None]
    else:
        if len(a.relay) < relays:
            raise ScenarioError(f"{scenario} needs {relays} relay URL(s) (--relay), or --spawn")
        urls = list(a.relay[:relays])
        spawned = [None] * relays
    return System(ctx, topic, urls, spawned, driver, publisher)


async def wait_env_visible(
    relay_url: str, sdk_key: str, *, within: float = 30.0, flags: int = 0
) -> None:
    """Wait until the relay knows ``sdk_key`` (polling endpoint answers 200, not 401) and
    holds at least ``flags`` flags of it (streams opened earlier would count the remaining
    creations as extra patches)."""
    deadline = time.perf_counter() + within
    status = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.perf_counter() < deadline:
            try:
                async with session.get(
                    relay_url + "/sdk/latest-all", headers={"Authorization": sdk_key}
                ) as resp:
                    status = resp.status
                    body = await resp.read()
                    if status == 200 and (
                        flags <= 0 or len(json.loads(body).get("flags", {})) >= flags
                    ):
                        return
            except (aiohttp.ClientError, TimeoutError):
                status = -1
            await asyncio.sleep(0.05)
    raise ScenarioError(
        f"relay {relay_url} did not learn the environment in {within:.0f}s (last status {status})"
    )


@dataclass
class DriveStats:
    requested: int = 0
    accepted: int = 0
    errors: int = 0
    first_error: str = ""
    started: float = 0.0
    finished: float = 0.0
    max_lag: float = 0.0  # how far behind its schedule the driver fell (s)

    @property
    def achieved_rate(self) -> float:
        span = self.finished - self.started
        return self.accepted / span if span > 0 else 0.0


async def drive(
    driver: Driver,
    targets: list[tuple[str, str]],
    *,
    rate: float,
    count: int | None = None,
    duration: float | None = None,
    inflight: int = 64,
) -> DriveStats:
    """Write changes round-robin over ``targets`` at ``rate``/s, ``count`` of them or for
    ``duration`` seconds; at most ``inflight`` writes outstanding (a full pipe shows up as
    lag behind the schedule, not as a burst later)."""
    if count is None and duration is None:
        raise ValueError("give count or duration")
    stats = DriveStats(started=time.perf_counter())
    sem = asyncio.Semaphore(inflight)
    tasks: set[asyncio.Task[None]] = set()

    async def one(env: str, key: str) -> None:
        try:
            await driver.change(env, key)
            stats.accepted += 1
        except Exception as exc:  # a failed write is a figure (counted), not a crash
            stats.errors += 1
            stats.first_error = stats.first_error or str(exc)[:300]
        finally:
            sem.release()

    i = 0
    start = stats.started
    while True:
        if count is not None and i >= count:
            break
        due = start + i / rate
        if duration is not None and due - start >= duration:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await sem.acquire()
        stats.max_lag = max(stats.max_lag, time.perf_counter() - due)
        env, key = targets[i % len(targets)]
        task = asyncio.ensure_future(one(env, key))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    stats.requested = i
    if tasks:
        await asyncio.gather(*tasks)
    stats.finished = time.perf_counter()
    return stats


async def scrape_metrics(url: str) -> dict[str, float]:
    """Sum every Prometheus sample by metric name (labels folded) from ``url/metrics``."""
    out: dict[str, float] = {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url + "/metrics") as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return out
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


async def _delete_redis_keys(url: str, prefixes: list[str]) -> None:
    """Remove what spawned publishers stored (their own key prefixes only)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        for prefix in prefixes:
            batch = []
            async for key in client.scan_iter(match=prefix + "*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.unlink(*batch)
                    batch = []
            if batch:
                await client.unlink(*batch)
    finally:
        await client.aclose()


__all__ += ["ServiceError", "scrape_metrics", "start_relay"]
