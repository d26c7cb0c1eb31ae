"""Sliced evaluated rounds over real HTTP (relay/hub.py rule 8, relay/evalstream.py rules 6-7).

A hub behind a tiny ``/eval`` app on loopback with one evaluation per loop tick: a change
applied mid-round, a stream joining and one leaving mid-round, and every stream ends at the
final state with its events in order, none twice. Then the real relay with thousands of
context groups: ``/livez`` is answered between the slices of one round.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import ClientSession, web
from client_support import CLIENT_ID, ENV, b64, client_relay, env_envelope, seed
from relay_support import MemoryBackend, flag, item_envelope, wait_until
from test_evalstream_slices import VISIBLE, gold_rule
from test_hub import StreamClient, events_of, wait_for

from flagstream.memlog import MemoryLog
from protocol import clientside
from protocol.evaluation import CompiledEnvironment, parse_context
from protocol.sse import SSEEvent
from relay.app import HUB_KEY
from relay.config import RelaySettings
from relay.evalstream import EvalRound, GroupSpec
from relay.hub import Hub
from relay.metrics import RelayMetrics
from relay.state import Change

STREAMS = 300


def context(i: int) -> dict[str, Any]:
    return {"kind": "user", "key": f"u{i}", "tier": "gold" if i % 3 == 0 else "basic"}


class EvalApp:
    """A hub serving ``/eval?i=N`` streams over a compiled environment the test changes."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.compiled = CompiledEnvironment.from_items(
            {
                "f": gold_rule("f", 1, 0),
                "sentinel": flag("sentinel", 1, on=False, clientSideAvailability=VISIBLE),
            }
        )
        self.offset = 10
        self.starts: dict[int, int] = {}  # stream -> its start offset
        hub.env_source = lambda env: (self.compiled, self.offset, "e0")

    def apply(self, key: str, item: dict[str, Any]) -> None:
        """Apply a flag change to the state, then publish it (as the relay's state does)."""
        affected = self.compiled.apply("flag", key, item)
        self.offset += 1
        self.hub.publish(
            Change(
                env="env",
                kind="flag",
                key=key,
                version=item["version"],
                deleted=False,
                item=json.dumps(item).encode(),
                offset=self.offset,
                published_ms=0,
                position=f"e0:{self.offset}",
                affected_flags=affected,
            )
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        i = int(request.query["i"])
        ctx = parse_context(context(i))
        all_flags = self.compiled.all_flags_json(ctx, "client")
        self.starts[i] = self.offset
        return await self.hub.serve_stream(
            request,
            env="env",
            stream="eval",
            initial=clientside.put_event(all_flags, f"e0:{self.offset}"),
            start_offset=self.offset,
            group=GroupSpec(ctx, "client", False),
        )


@asynccontextmanager
async def eval_hub() -> AsyncIterator[tuple[EvalApp, int]]:
    hub = Hub(RelaySettings(heartbeat_interval=600.0), RelayMetrics())
    app = EvalApp(hub)
    web_app = web.Application()
    web_app.router.add_get("/eval", app.stream)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield app, runner.addresses[0][1]
    finally:
        await hub.drain(0)
        await runner.cleanup()


def record_steps(monkeypatch: pytest.MonkeyPatch, on_step: Callable[[int], None]) -> list[Any]:
    """Wrap ``EvalRound.step``: log (round, done) per slice and call ``on_step(n)``."""
    log: list[tuple[int, bool]] = []
    # Every round stepped is kept alive until the test ends: an id is only unique among
    # live objects, and a finished round freed at once could hand its id to the next one.
    seen: list[EvalRound] = []
    original = EvalRound.step

    def step(self: EvalRound, budget: int) -> Any:
        out = original(self, budget)
        seen.append(self)
        log.append((id(self), self.done))
        on_step(len(log))
        return out

    monkeypatch.setattr(EvalRound, "step", step)
    return log


def final_values(events: list[SSEEvent]) -> tuple[dict[str, Any], list[str]]:
    """Apply the put and every patch in order: the flag values the SDK ends with."""
    values: dict[str, Any] = {}
    ids: list[str] = []
    for e in events:
        data = json.loads(e.data)
        if e.event == "put":
            values = {k: v["value"] for k, v in data.items()}
        elif e.event == "patch":
            values[data["key"]] = data["value"]
            assert e.id is not None
            ids.append(e.id)
    return values, ids


async def test_a_sliced_round_with_a_change_a_join_and_a_leave_mid_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with eval_hub() as (app, port):
        hub = app.hub
        hub.slice_evaluations = 1  # one group per loop tick: a round spans many ticks
        clients = [await StreamClient.open(port, f"/eval?i={i}") for i in range(STREAMS)]
        for c in clients:
            assert await c.head() == 200
        await wait_for(lambda: hub.connection_count() == STREAMS)
        # The joiner's connection is open; its request goes out mid-round.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        joiner = StreamClient(reader, writer)
        leaver = clients[-1]  # the last group: visited at the end of the round
        marks: dict[str, int] = {}

        def on_step(n: int) -> None:
            if n == 20:
                marks["change"] = n
                app.apply("f", flag("f", 3, on=False, clientSideAvailability=VISIBLE))
                writer.write(b"GET /eval?i=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                leaver.writer.transport.abort()

        log = record_steps(monkeypatch, on_step)
        app.apply("f", gold_rule("f", 2, 1))  # gold contexts flip to false
        assert await joiner.head() == 200
        marks["joined"] = len(log)
        await hub.wait_idle()
        # A sentinel every context sees change marks the end of each stream's events.
        app.apply("sentinel", flag("sentinel", 2, clientSideAvailability=VISIBLE))
        last = f"e0:{app.offset}"
        for c in [*clients[:-1], joiner]:
            items = await c.until(lambda i: any(e.id == last for e in events_of(i)))
            values, ids = final_values(events_of(items))
            assert values == {"f": False, "sentinel": True}
            assert ids == sorted(ids, key=lambda p: int(p.split(":")[1]))
            assert len(ids) == len(set(ids)), "no patch twice"
            c.close()
        assert app.starts[1] == 12 and len(final_values(joiner.events())[1]) == 1
        rounds = list(dict.fromkeys(r for r, _ in log))
        assert len(rounds) == 3, "the mid-round change waited for its own round"
        first_round = [n for n, (r, _) in enumerate(log, 1) if r == rounds[0]]
        assert marks["change"] < first_round[-1], "the change came while round 1 ran"
        assert marks["joined"] < first_round[-1], "the joiner registered while round 1 ran"
        assert len(first_round) == STREAMS - 1, "the leaver's group was skipped"


@pytest.mark.slow
async def test_the_relay_answers_livez_between_the_slices_of_a_big_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contexts = 3000  # 3,000 context groups: about a dozen slices at the default budget
    backend = MemoryBackend(MemoryLog(3))
    await seed(backend, env_envelope(), flags=[gold_rule("f", 1, 0)])
    async with client_relay(backend, heartbeat_interval=600) as relay:
        host, port = "127.0.0.1", int(relay.url.rsplit(":", 1)[1])
        hub = relay.app[HUB_KEY]
        streams: list[StreamClient] = []
        for start in range(0, contexts, 100):
            streams += await asyncio.gather(
                *(
                    StreamClient.open(port, f"/eval/{CLIENT_ID}/{b64(context(i))}")
                    for i in range(start, min(contexts, start + 100))
                )
            )
        for s in streams:
            assert await s.head(within=30) == 200
        await wait_until(lambda: hub.stats()["evaluatedContexts"] == contexts, within=60)
        order: list[str] = []
        record_steps(monkeypatch, lambda n: order.append("slice"))
        stop = asyncio.Event()

        async def poll_livez() -> int:
            answered = 0
            async with ClientSession() as session:
                while not stop.is_set():
                    async with session.get(f"http://{host}:{port}/livez") as resp:
                        assert resp.status == 200
                    order.append("livez")
                    answered += 1
            return answered

        poller = asyncio.create_task(poll_livez())
        await wait_until(lambda: "livez" in order)
        async with backend.producer() as producer:
            await producer.send(item_envelope(ENV, "flag", gold_rule("f", 2, 1)))
        await wait_until(lambda: order.count("slice") >= 2 and hub.stats()["writing"] is False)
        await hub.wait_idle()
        stop.set()
        assert await poller > 0
        slices = [n for n, what in enumerate(order) if what == "slice"]
        assert len(slices) >= contexts // 256
        between = [n for n, what in enumerate(order) if what == "livez" and slices[0] < n]
        assert any(n < slices[-1] for n in between), f"no /livez answer inside the round: {order}"
        # And the round delivered: every gold context got its patch, others nothing.
        for i, s in enumerate(streams[:30]):
            if i % 3 == 0:
                items = await s.until(lambda it: bool(events_of(it, "patch")), within=30)
                assert json.loads(events_of(items, "patch")[0].data)["value"] is False
            s.close()
        for s in streams[30:]:
            s.close()
