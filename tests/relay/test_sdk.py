"""The official LaunchDarkly Python server SDK (``launchdarkly-server-sdk``), unchanged,
against a relay reading a real Kafka topic and the in-memory log of ``flagstream dev``
(``backend``): streaming and polling modes, evaluations, a live toggle, and an unknown SDK
key that makes the SDK give up instead of spinning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from ldclient import Context, LDClient
from ldclient.config import Config
from ldclient.interfaces import DataSourceState
from relay_support import (
    Backend,
    RecordWriter,
    RunningRelay,
    env_envelope,
    flag,
    item_envelope,
    metric,
    run_relay,
    wait_ready,
    wait_until,
)

KEY = "sdk-cccccccc-1111-2222-3333-444444444444"

FLAGS = [
    flag("on-flag", 1, on=True),  # fallthrough -> variation 0 (True)
    flag("off-flag", 1, on=False),  # off -> offVariation 1 (False)
    flag(
        "targeted",
        1,
        on=True,
        fallthrough={"variation": 1},
        targets=[{"values": ["alice"], "variation": 0}],
    ),
    flag(
        "colour",
        1,
        on=True,
        variations=["red", "green", "blue"],
        fallthrough={"variation": 2},
        offVariation=0,
    ),
]


@pytest.fixture
async def relay(backend: Backend) -> AsyncIterator[tuple[RunningRelay, RecordWriter]]:
    async with backend.producer() as producer:
        await producer.send(env_envelope("prod", [KEY]))
        await producer.send_many(item_envelope("prod", "flag", f) for f in FLAGS)
        async with run_relay(backend.settings(), backend.source()) as r:
            await wait_ready(r)
            yield r, producer


def sdk_config(url: str, sdk_key: str, *, stream: bool) -> Config:
    config = Config(
        sdk_key,
        base_uri=url,
        stream_uri=url,
        events_uri=url,
        stream=stream,
        send_events=False,
        diagnostic_opt_out=True,
        initial_reconnect_delay=0.1,
    )
    if not stream:
        # The SDK enforces a 30 s minimum poll interval; shorten it so a test sees a toggle
        # within seconds (the relay's behaviour does not depend on the interval).
        setattr(config, "_Config__poll_interval", 0.2)  # noqa: B010 (mypy: name-mangled)
    return config


def evaluations(client: LDClient) -> dict[str, Any]:
    alice, bob = Context.create("alice"), Context.create("bob")
    return {
        "on": client.variation("on-flag", bob, None),
        "off": client.variation("off-flag", bob, None),
        "alice": client.variation("targeted", alice, None),
        "bob": client.variation("targeted", bob, None),
        "colour": client.variation("colour", bob, None),
        "missing": client.variation("no-such-flag", bob, "default"),
    }


EXPECTED = {
    "on": True,
    "off": False,
    "alice": True,
    "bob": False,
    "colour": "blue",
    "missing": "default",
}


async def wait_for_sdk(predicate: Callable[[], bool], within: float = 15.0) -> float:
    """Poll ``predicate`` (which calls the SDK) in a thread; returns the seconds it took."""
    start = time.perf_counter()

    def spin() -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.001)
        return False

    assert await asyncio.to_thread(spin), "the SDK did not see the change"
    return time.perf_counter() - start


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "polling"])
async def test_sdk_initializes_evaluates_and_sees_a_toggle(
    relay: tuple[RunningRelay, RecordWriter], stream: bool
) -> None:
    r, producer = relay
    config = sdk_config(r.url, KEY, stream=stream)
    client = await asyncio.to_thread(LDClient, config, 10)
    try:
        assert client.is_initialized()
        assert await asyncio.to_thread(evaluations, client) == EXPECTED
        # Toggle a flag on, then off again with a later version.
        await producer.send(item_envelope("prod", "flag", flag("off-flag", 2, on=True)))
        bob = Context.create("bob")
        await wait_for_sdk(lambda: client.variation("off-flag", bob, None) is True)
        await producer.send(
            item_envelope(
                "prod",
                "flag",
                flag("colour", 2, on=False, variations=["red", "green", "blue"], offVariation=0),
            )
        )
        await wait_for_sdk(lambda: client.variation("colour", bob, None) == "red")
        # A deletion makes the SDK fall back to the default.
        await producer.send(item_envelope("prod", "flag", flag("on-flag", 2, deleted=True)))
        await wait_for_sdk(lambda: client.variation("on-flag", bob, "gone") == "gone")
    finally:
        await asyncio.to_thread(client.close)
    if stream:
        assert metric(r.metrics, "flagstream_relay_full_puts_total") >= 1
    else:
        assert metric(r.metrics, "flagstream_relay_polling_requests_total", {"code": "200"}) >= 2


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "polling"])
async def test_unknown_sdk_key_makes_the_sdk_give_up(
    relay: tuple[RunningRelay, RecordWriter], stream: bool
) -> None:
    r, _ = relay
    config = sdk_config(r.url, "sdk-00000000-0000-0000-0000-000000000000", stream=stream)
    client = await asyncio.to_thread(LDClient, config, 2)
    try:
        assert not client.is_initialized()
        # The SDK treats 401 as an invalid key: it records the error and, streaming, backs
        # off for minutes (polling: stops), instead of retrying within seconds.
        await wait_until(lambda: client.data_source_status_provider.status.error is not None)
        status = client.data_source_status_provider.status
        assert status.state != DataSourceState.VALID
        assert status.error is not None and status.error.status_code == 401
        rejected = {"reason": "unauthorized"}
        assert metric(r.metrics, "flagstream_relay_connections_rejected_total", rejected) == 1
        # It does not come back: no retry loop against the relay.
        await asyncio.sleep(1.5)
        assert metric(r.metrics, "flagstream_relay_connections_rejected_total", rejected) == 1
        assert client.variation("on-flag", Context.create("bob"), "default") == "default"
    finally:
        await asyncio.to_thread(client.close)


async def test_streaming_sdk_resumes_with_last_event_id_after_its_stream_ends(
    backend: Backend,
) -> None:
    """Streams end after their lifetime; the real SDK reconnects with ``Last-Event-ID``
    and gets only what it missed: never a second ``put``."""
    settings = backend.settings(max_connection_lifetime=1.0, lifetime_jitter=0.0)
    async with backend.producer() as producer:
        await producer.send(env_envelope("prod", [KEY]))
        await producer.send_many(item_envelope("prod", "flag", f) for f in FLAGS)
        async with run_relay(settings, backend.source()) as r:
            await wait_ready(r)
            client = await asyncio.to_thread(LDClient, sdk_config(r.url, KEY, stream=True), 10)
            try:
                assert client.is_initialized()
                await wait_until(
                    lambda: metric(r.metrics, "flagstream_relay_resumptions_total") >= 1, 15
                )
                await producer.send(item_envelope("prod", "flag", flag("off-flag", 2, on=True)))
                bob = Context.create("bob")
                await wait_for_sdk(lambda: client.variation("off-flag", bob, None) is True)
                await wait_until(
                    lambda: metric(r.metrics, "flagstream_relay_resumptions_total") >= 2, 15
                )
                assert await asyncio.to_thread(evaluations, client) == {**EXPECTED, "off": True}
                assert metric(r.metrics, "flagstream_relay_full_puts_total") == 1
            finally:
                await asyncio.to_thread(client.close)
