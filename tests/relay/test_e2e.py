"""Whole processes over real HTTP: ``flagstream publisher`` and ``flagstream relay`` on the
local stack, the official LaunchDarkly SDK connected to the relay, flags changed through the
publisher's API."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from ldclient import Context, LDClient
from ldclient.config import Config
from relay_support import flag, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = "e2e-admin-token-0123456789abcdef"
FLAGSTREAM = str(Path(sys.executable).with_name("flagstream"))
TOGGLES = 40


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(
        [FLAGSTREAM, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd="/"
    )


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@pytest.fixture
def environment(kafka_bootstrap: str, redis_url: str, unique_name: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FLAGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "FLAGSTREAM_REDIS_URL": redis_url,
            "FLAGSTREAM_TOPIC": unique_name,
            "FLAGSTREAM_TOPIC_PARTITIONS": "3",
            "FLAGSTREAM_ADMIN_TOKEN": ADMIN,
            "FLAGSTREAM_PUBLISHER_REDIS_PREFIX": f"{unique_name}:",
            "FLAGSTREAM_RELAY_DRAIN_WINDOW": "0.5",
        }
    )
    return env


@pytest.fixture
def processes(environment: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str, Any]]:
    pub_port, relay_port = free_port(), free_port()
    publisher = start(["publisher", "--port", str(pub_port)], environment, tmp_path / "pub.log")
    relay = start(
        ["relay", "--port", str(relay_port), "--workers", "1"], environment, tmp_path / "relay.log"
    )
    try:
        yield f"http://127.0.0.1:{pub_port}", f"http://127.0.0.1:{relay_port}", relay
    finally:
        stop(publisher)
        stop(relay)
        for name in ("pub.log", "relay.log"):
            text = (tmp_path / name).read_text(errors="replace")
            print(f"--- {name} (last lines) ---\n" + "\n".join(text.splitlines()[-15:]))


async def http_ok(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as s:
        yield s


async def test_publisher_write_reaches_a_real_sdk_through_a_relay_process(
    processes: tuple[str, str, subprocess.Popen[bytes]], session: aiohttp.ClientSession
) -> None:
    pub, relay_url, relay_proc = processes
    await wait_until(lambda: http_ok(session, pub + "/readyz"), 60, 0.2)
    async with session.post(pub + "/api/v1/environments", json={"key": "prod", "name": "P"}) as r:
        assert r.status == 201, await r.text()
        sdk_key = (await r.json())["sdkKey"]
    async with session.put(pub + "/api/v1/environments/prod/flags/beta", json=flag("beta", 1)) as r:
        assert r.status in (200, 201), await r.text()
    await wait_until(lambda: http_ok(session, relay_url + "/readyz"), 60, 0.2)

    config = Config(
        sdk_key,
        base_uri=relay_url,
        stream_uri=relay_url,
        events_uri=relay_url,
        send_events=False,
        diagnostic_opt_out=True,
    )
    client = await asyncio.to_thread(LDClient, config, 10)
    try:
        assert client.is_initialized()
        user = Context.create("someone")
        # The relay may have bootstrapped before the flag write reached Kafka: converge.
        await wait_until(lambda: client.variation("beta", user, None) is True, 10)

        delays: list[float] = []
        acked: list[float] = []  # PATCH sent -> publisher answered (Kafka acked)
        for i in range(TOGGLES):
            on = i % 2 == 1  # the flag starts on: off, on, off, ...
            sent = time.perf_counter()
            async with session.patch(
                pub + "/api/v1/environments/prod/flags/beta", json={"on": on}
            ) as r:
                assert r.status == 200, await r.text()
            acked.append(time.perf_counter() - sent)

            def seen(want: bool = on) -> bool:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    if client.variation("beta", user, None) is want:
                        return True
                    time.sleep(0.0005)
                return False

            assert await asyncio.to_thread(seen)
            delays.append(time.perf_counter() - sent)
        # A figure for BENCHMARKS.md, never asserted: PATCH sent -> the SDK evaluates it.
        ms = sorted(d * 1000 for d in delays)
        print(
            f"\npropagation publisher PATCH -> SDK sees it, {len(ms)} toggles: "
            f"median {statistics.median(ms):.1f} ms, p90 {ms[int(len(ms) * 0.9) - 1]:.1f} ms, "
            f"max {ms[-1]:.1f} ms (PATCH answered after the Kafka ack: median "
            f"{statistics.median(acked) * 1000:.1f} ms)"
        )

        # Rotating the key with immediate expiry locks the old key out at the relay (401).
        async with session.post(
            pub + "/api/v1/environments/prod/sdk-keys/rotate", json={"expireOldInSeconds": 0}
        ) as r:
            assert r.status in (200, 201), await r.text()
            new_key = (await r.json())["sdkKey"]

        async def status_with(key: str) -> int:
            async with (
                aiohttp.ClientSession() as s,
                s.get(relay_url + "/sdk/latest-all", headers={"Authorization": key}) as resp,
            ):
                return resp.status

        await wait_until(lambda: _eq(status_with(sdk_key), 401), 10)
        assert await status_with(new_key) == 200
    finally:
        await asyncio.to_thread(client.close)
    assert await asyncio.to_thread(stop, relay_proc) == 0


async def _eq(awaitable: Any, expected: Any) -> bool:
    return bool(await awaitable == expected)
