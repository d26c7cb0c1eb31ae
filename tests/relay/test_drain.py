"""SIGTERM / SIGINT drain of a real relay process (real Kafka, real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from relay_support import flag, item_envelope
from test_hub import StreamClient
from test_server import (
    ENV,
    SDK_KEY,
    RelayProcess,
    open_stream,
    relay_process,
    seeded,
    wait_ready,
)

from flagstream.stack.process import free_port

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
                # Not ready as soon as the relay has handled the signal (polled: a fixed 0.2 s
                # was not always enough for a loaded machine to run the relay's handler).
                deadline = time.monotonic() + 10
                while True:
                    async with session.get(relay.url + "/readyz") as resp:
                        if resp.status == 503:
                            break
                        assert resp.status == 200
                    assert time.monotonic() < deadline, "/readyz still 200 10 s after SIGTERM"
                    await asyncio.sleep(0.02)
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


async def test_a_real_sdk_moves_to_the_other_relay_on_the_port_when_one_drains(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    """Two relay processes share a port (SO_REUSEPORT). Draining the one that holds the
    SDK's stream makes the unchanged LaunchDarkly SDK reconnect, land on the other, resume
    from its Last-Event-ID (no second put) and keep receiving changes."""
    from ldclient import Context, LDClient
    from ldclient.config import Config

    async with seeded(kafka_bootstrap, unique_name) as producer:
        port = free_port()
        common = {"workers": 1, "port": port, "drain_window": 1, "share_port": "true"}
        with (
            relay_process(tmp_path, kafka_bootstrap, unique_name, **common) as first,
            relay_process(tmp_path, kafka_bootstrap, unique_name, **common) as second,
        ):
            await wait_ready(first)
            await wait_ready(second)
            url = first.url
            config = Config(
                SDK_KEY,
                base_uri=url,
                stream_uri=url,
                events_uri=url,
                send_events=False,
                diagnostic_opt_out=True,
                initial_reconnect_delay=0.1,
            )
            client = await asyncio.to_thread(LDClient, config, 10)
            bob = Context.create("bob")
            try:
                assert client.is_initialized()
                assert client.variation("flag-0", bob, None) is True

                # Which process holds the stream? Drain that one.
                holder, other = await _stream_holder(first, second)
                holder.proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(holder.wait, 20) == 0, holder.log()

                await producer.send(item_envelope(ENV, "flag", flag("flag-0", 2, on=False)))
                await _until(lambda: client.variation("flag-0", bob, None) is False)
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(other.url + "/metrics") as resp,
                ):
                    text = await resp.text()
                assert "flagstream_relay_resumptions_total 1.0" in text
                assert "flagstream_relay_full_puts_total 0.0" in text
            finally:
                await asyncio.to_thread(client.close)


async def _stream_holder(a: RelayProcess, b: RelayProcess) -> tuple[RelayProcess, RelayProcess]:
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(10):
            while True:
                counts = []
                for relay in (a, b):
                    # Fresh connections: the port may route /status to either process.
                    for _ in range(20):
                        async with session.get(
                            relay.url + "/status", headers={"Connection": "close"}
                        ) as resp:
                            body = await resp.json()
                        if body["hub"]["pid"] == relay.proc.pid:
                            counts.append(body["connections"])
                            break
                    else:
                        counts.append(None)
                if counts == [1, 0]:
                    return a, b
                if counts == [0, 1]:
                    return b, a
                await asyncio.sleep(0.1)


async def _until(predicate: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.05)
