"""SIGTERM / SIGINT drain of a real relay process (real Kafka, real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from test_hub import StreamClient
from test_server import open_stream, relay_process, seeded, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STREAMS = 12


async def test_sigterm_drains_streams_spread_over_the_window_and_exits_0(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    window = 2.0
    async with seeded(kafka_bootstrap, unique_name):
        with relay_process(
            tmp_path, kafka_bootstrap, unique_name, workers=1, drain_window=window
        ) as relay:
            await wait_ready(relay)
            streams = [await open_stream(relay) for _ in range(STREAMS)]
            for s in streams:
                await s.until(lambda i: len(i) >= 1, 10)

            signalled = time.monotonic()
            relay.proc.send_signal(signal.SIGTERM)
            async with aiohttp.ClientSession() as session:
                await asyncio.sleep(0.2)
                async with session.get(relay.url + "/readyz") as resp:
                    assert resp.status == 503  # at once, while streams are still open
                async with session.get(
                    relay.url + "/all", headers={"Authorization": "sdk-fanout-test-key"}
                ) as resp:
                    assert resp.status == 503  # no new streams
                    assert resp.headers.get("Retry-After")

            ended: list[float] = []

            async def until_end(s: StreamClient) -> None:
                await s.until_eof(window + 10)
                ended.append(time.monotonic() - signalled)

            await asyncio.gather(*(until_end(s) for s in streams))
            for s in streams:
                assert s.http.done, "each stream ended with a clean end of body"
            assert max(ended) < window + 3.0, ended
            # Spread over the window, not all at once.
            assert max(ended) - min(ended) > window / 3, ended
            assert relay.wait(15) == 0, relay.log()


async def test_sigint_drains_faster(tmp_path: Path, kafka_bootstrap: str, unique_name: str) -> None:
    window = 30.0
    async with seeded(kafka_bootstrap, unique_name):
        with relay_process(
            tmp_path, kafka_bootstrap, unique_name, workers=1, drain_window=window
        ) as relay:
            await wait_ready(relay)
            streams = [await open_stream(relay) for _ in range(STREAMS)]
            signalled = time.monotonic()
            relay.proc.send_signal(signal.SIGINT)
            for s in streams:
                await s.until_eof(10)
                assert s.http.done
            assert time.monotonic() - signalled < 10  # far below the 30 s window
            assert relay.wait(15) == 0, relay.log()
