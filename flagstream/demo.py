"""``flagstream demo``: the whole real pipeline on the local stack, live.

What it does, in order (each step prints what it sees):

1. brings the local stack up (Kafka + Redis, ``flagstream.stack``; idempotent),
2. starts a publisher and two relays as subprocesses on free loopback ports, on a fresh topic
   (``flagstream.demo-<hex>``), and waits until each answers ``/readyz``,
3. creates an environment with a few flags through the publisher API,
4. opens ``--clients`` SSE streams (lean asyncio clients, half on each relay) and one real
   LaunchDarkly Python SDK client,
5. toggles flags ``--toggles`` times and prints, for each change, the delay from the write
   request to the first and to the last stream that received it (and to the SDK),
6. SIGKILLs one relay: its clients reconnect to the other with ``Last-Event-ID``; prints how
   many resumed (patch-only catch-up) and how many needed a full ``put``,
7. checks convergence (every client holds exactly the publisher's versions) and
   monotonicity (no client ever saw a version go down),
8. shuts everything down: every process it started is stopped (the shared stack stays up),
   the demo topic is deleted. Exit code 0 only if every check held.

Delays are measured in this process with one monotonic clock (write request sent -> event
parsed), so they include the publisher's Redis + Kafka write, the relay's consume and the
fan-out, and this process's own scheduling on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from flagstream import procgroup
from flagstream.dev import DEMO_ENV, TOGGLE_FLAG
from flagstream.stack.process import free_port
from protocol.sse import SSEEvent, SSEParser

HOST = "127.0.0.1"


# --- receipts ----------------------------------------------------------------------------


class Receipts:
    """Receive times of each (flag key, version), from every stream that saw it.

    Recorded raw and turned into delays at the end: a stream can see a change before the
    publisher's answer has told the driver its version.
    """

    def __init__(self) -> None:
        self._times: dict[tuple[str, int], list[float]] = {}

    def record(self, key: str, version: int, now: float) -> None:
        self._times.setdefault((key, version), []).append(now)

    def of(self, key: str, version: int) -> list[float]:
        return self._times.get((key, version), [])


# --- lean SSE clients --------------------------------------------------------------------


@dataclass(slots=True)
class ClientStats:
    """What one stream client saw over its life."""

    connects: int = 0
    puts: int = 0
    resumed: int = 0  # reconnects whose first event was a patch/delete (no put)
    full: int = 0  # reconnects answered with a put
    regressions: int = 0  # a put or patch that would have lowered a held version
    refused: int = 0  # non-200 answers
    last_error: str = ""  # why the last connection attempt or stream ended


class StreamClient:
    """One SDK-like ``/all`` stream: holds flag versions, fails over to the next relay.

    Like an SDK it sends ``Last-Event-ID`` when it reconnects and applies an update only if
    its version is greater than the one held.
    """

    def __init__(
        self,
        index: int,
        relays: list[str],
        home: int,
        sdk_key: str,
        session: aiohttp.ClientSession,
        receipts: Receipts,
    ) -> None:
        self.index = index
        self.relays = relays
        self.current = home
        self.sdk_key = sdk_key
        self.session = session
        self.receipts = receipts
        self.versions: dict[str, int] = {}
        self.last_event_id: str | None = None
        self.stats = ClientStats()
        self.connected = asyncio.Event()
        self._awaiting_first_event = False  # True right after a REconnect
        self._reconnecting = False

    async def run(self) -> None:
        """Stream until cancelled, reconnecting (to the next relay) whenever a stream ends."""
        delay = 0.05
        while True:
            try:
                await self._stream_once()
                delay = 0.05
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
            self.connected.clear()
            self._reconnecting = True
            # A stream that ended means its relay is gone or draining: try the next one.
            self.current = (self.current + 1) % len(self.relays)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _stream_once(self) -> None:
        headers = {"Authorization": self.sdk_key, "Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        url = self.relays[self.current] + "/all"
        async with self.session.get(url, headers=headers) as response:
            if response.status != 200:
                self.stats.refused += 1
                self.stats.last_error = f"HTTP {response.status}: {await response.text()}"
                return
            self.stats.connects += 1
            self._awaiting_first_event = self._reconnecting
            self.connected.set()
            parser = SSEParser(max_line_bytes=1 << 22)
            async for chunk in response.content.iter_any():
                now = time.perf_counter()
                for item in parser.feed(chunk):
                    if isinstance(item, SSEEvent):
                        self._on_event(item, now)

    def _on_event(self, event: SSEEvent, now: float) -> None:
        if event.id is not None:
            self.last_event_id = event.id
        if self._awaiting_first_event:
            self._awaiting_first_event = False
            if event.event == "put":
                self.stats.full += 1
            else:
                self.stats.resumed += 1
        if event.event == "put":
            self.stats.puts += 1
            flags = json.loads(event.data)["data"].get("flags", {})
            for key, item in flags.items():
                if item["version"] < self.versions.get(key, 0):
                    self.stats.regressions += 1
                self.versions[key] = item["version"]
        elif event.event == "patch":
            body = json.loads(event.data)
            path: str = body["path"]
            if path.startswith("/flags/"):
                key, version = path[len("/flags/") :], int(body["data"]["version"])
                self._apply(key, version, now)
        elif event.event == "delete":
            body = json.loads(event.data)
            path = body["path"]
            if path.startswith("/flags/"):
                self._apply(path[len("/flags/") :], int(body["version"]), now)

    def _apply(self, key: str, version: int, now: float) -> None:
        held = self.versions.get(key, 0)
        if version > held:
            self.versions[key] = version
            self.receipts.record(key, version, now)
        elif version < held:
            # An SDK ignores it; count it anyway: with correct positions it never happens.
            self.stats.regressions += 1


# --- the real LaunchDarkly SDK -------------------------------------------------------------


class SDKProbe:
    """A real ``ldclient.LDClient`` on one relay, recording when it learns each change.

    The SDK runs its own threads; the change listener records (flag, version) -> time with
    the same monotonic clock as the stream clients.
    """

    def __init__(self, relay: str, sdk_key: str) -> None:
        self.relay = relay
        self.sdk_key = sdk_key
        self.seen: dict[tuple[str, int], float] = {}
        self.initialized = False
        self._client: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Blocks until the SDK got its first ``put`` (or gave up): run it in a thread."""
        from ldclient.client import LDClient
        from ldclient.config import Config
        from ldclient.interfaces import FlagChange

        config = Config(
            self.sdk_key,
            stream_uri=self.relay,
            base_uri=self.relay,
            events_uri=self.relay,
            send_events=False,
            diagnostic_opt_out=True,
        )
        self._client = LDClient(config=config, start_wait=15)
        self.initialized = bool(self._client.is_initialized())

        def on_change(change: FlagChange) -> None:
            now = time.perf_counter()
            version = self.versions().get(change.key)
            if version is not None:
                with self._lock:
                    self.seen.setdefault((change.key, version), now)

        self._client.flag_tracker.add_listener(on_change)

    def versions(self) -> dict[str, int]:
        """Flag key -> version, as the SDK holds them (its public all-flags state)."""
        from ldclient import Context

        if self._client is None:
            return {}
        state = self._client.all_flags_state(Context.create("flagstream-demo"))
        meta: dict[str, dict[str, Any]] = state.to_json_dict().get("$flagsState", {})
        return {key: int(m["version"]) for key, m in meta.items() if "version" in m}

    def received(self, key: str, version: int) -> float | None:
        with self._lock:
            return self.seen.get((key, version))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


# --- processes -----------------------------------------------------------------------------


@dataclass
class Child:
    """One process the demo started (in its own session, so it can be stopped as a group)."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, no drain: what a crashed machine looks like to its clients."""
        procgroup.kill_group(self.proc)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a relay drains), then SIGKILL if it is still there after ``timeout``."""
        procgroup.stop_group(self.proc, timeout)

    def log_tail(self, lines: int = 15) -> str:
        return procgroup.log_tail(self.log_path, lines)


class DemoError(Exception):
    """A step failed; the message says which and where to look."""


class Processes:
    """Starts the publisher and relays of the demo and guarantees they are all stopped."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.children: list[Child] = []

    def start(self, name: str, command: str, env: dict[str, str], port: int) -> Child:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flagstream", command],
                env={**self.env, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C is handled here, not by the children
            )
        child = Child(name, f"http://{HOST}:{port}", proc, log_path)
        self.children.append(child)
        return child

    async def wait_ready(
        self, child: Child, session: aiohttp.ClientSession, within: float = 90.0
    ) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not child.alive():
                raise DemoError(
                    f"{child.name} exited with code {child.proc.returncode}:\n{child.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(child.url + "/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise DemoError(f"{child.name} not ready after {within:.0f}s:\n{child.log_tail()}")

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def left_running(self) -> list[str]:
        return [c.name for c in self.children if c.alive()]


# --- the publisher API ---------------------------------------------------------------------


class PublisherAPI:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.base = f"{url}/api/v1/environments/{DEMO_ENV}"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def set_on(self, flag: str, on: bool) -> int:
        """PATCH the flag's ``on``; return the new version (200 = Kafka acknowledged)."""
        async with self.session.patch(
            f"{self.base}/flags/{flag}", json={"on": on}, headers=self.headers
        ) as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise DemoError(f"toggle {flag}: HTTP {response.status}: {body}")
            return int(body["version"])

    async def versions(self) -> dict[str, int]:
        async with self.session.get(
            f"{self.base}/flags", params={"includeDeleted": "true"}, headers=self.headers
        ) as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise DemoError(f"list flags: HTTP {response.status}: {body}")
            return {item["key"]: int(item["version"]) for item in body["items"]}


# --- the run -------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


async def _wait(predicate: Any, within: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def _relay_counter(session: aiohttp.ClientSession, relay: str, name: str) -> float:
    async with session.get(relay + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@dataclass
class Outcome:
    """What the run established; ``ok`` only if every check held."""

    failures: list[str] = field(default_factory=list)

    def check(self, condition: bool, failure: str) -> None:
        if not condition:
            self.failures.append(failure)

    @property
    def ok(self) -> bool:
        return not self.failures


async def run_demo(args: argparse.Namespace, say: Any = print) -> Outcome:
    from flagstream.dev import seed
    from flagstream.stack.stack import Stack, resolve_config

    outcome = Outcome()
    run_id = secrets.token_hex(4)
    topic = f"flagstream.demo-{run_id}"
    redis_prefix = f"flagstream-demo-{run_id}:"
    token = secrets.token_urlsafe(24)

    say("1. local stack (Kafka + Redis)")
    stack = Stack(resolve_config())
    await asyncio.to_thread(stack.up, 240.0, lambda m: say(f"   {m}"))
    bootstrap, redis_url = stack.kafka.bootstrap, stack.redis.url

    workdir = Path(tempfile.mkdtemp(prefix="flagstream-demo-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGSTREAM_")}
    base_env.update(
        {
            "FLAGSTREAM_KAFKA_BOOTSTRAP": bootstrap,
            "FLAGSTREAM_REDIS_URL": redis_url,
            "FLAGSTREAM_TOPIC": topic,
            "PYTHONUNBUFFERED": "1",
        }
    )
    procs = Processes(workdir, base_env)
    clients: list[StreamClient] = []
    tasks: list[asyncio.Task[None]] = []
    sdk: SDKProbe | None = None
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout)
    try:
        say(f"2. publisher and two relays on topic {topic} (logs in {workdir})")
        pub_port = free_port(HOST)
        publisher = procs.start(
            "publisher",
            "publisher",
            {
                "FLAGSTREAM_PUBLISHER_PORT": str(pub_port),
                "FLAGSTREAM_ADMIN_TOKEN": token,
                "FLAGSTREAM_PUBLISHER_REDIS_PREFIX": redis_prefix,
            },
            pub_port,
        )
        await procs.wait_ready(publisher, session)
        say(f"   publisher ready on {publisher.url}")
        relays: list[Child] = []
        for name in ("relay-a", "relay-b"):
            port = free_port(HOST)
            relay_env = {
                "FLAGSTREAM_RELAY_PORT": str(port),
                "FLAGSTREAM_RELAY_WORKERS": "1",
                "FLAGSTREAM_RELAY_DRAIN_WINDOW": "1",
            }
            relays.append(procs.start(name, "relay", relay_env, port))
        say("3. demo environment and flags, through the publisher API")
        sdk_key = await seed(session, publisher.url, token)
        for relay in relays:
            await procs.wait_ready(relay, session)
            say(f"   {relay.name} ready on {relay.url}")
        api = PublisherAPI(session, publisher.url, token)

        say(f"4. {args.clients} SSE streams (half on each relay) and a LaunchDarkly SDK client")
        receipts = Receipts()
        urls = [r.url for r in relays]
        clients = [
            StreamClient(i, urls, i % 2, sdk_key, session, receipts) for i in range(args.clients)
        ]
        tasks = [asyncio.create_task(c.run(), name=f"client-{c.index}") for c in clients]
        connected = await _wait(lambda: all(c.connected.is_set() for c in clients), 60)
        if not connected:
            errors = sorted({c.stats.last_error for c in clients if not c.connected.is_set()})
            raise DemoError(f"not every stream connected within 60 s: {errors[:3]}")
        have_put = await _wait(lambda: all(c.stats.puts >= 1 for c in clients), 30)
        outcome.check(have_put, "not every stream received its initial put")
        sdk = SDKProbe(relays[0].url, sdk_key)
        await asyncio.to_thread(sdk.start)
        outcome.check(sdk.initialized, "the LaunchDarkly SDK did not initialize")
        say(f"   {len(clients)} streams open; SDK initialized: {sdk.initialized}")

        say(f"5. {args.toggles} toggles of {TOGGLE_FLAG}: delay from the write request to ...")
        say("   toggle  state      first stream  last stream  streams    LaunchDarkly SDK")
        on = False
        for i in range(args.toggles):
            on = not on
            await _toggle_and_report(
                api, clients, receipts, sdk, on, f"{i + 1}/{args.toggles}", say, outcome
            )
            await asyncio.sleep(args.interval)

        say("6. SIGKILL relay-b: its streams reconnect to relay-a with Last-Event-ID")
        victims = [c for c in clients if c.current == 1]
        before = {c.index: c.stats.connects for c in victims}
        resumed_before = await _relay_counter(
            session, relays[0].url, "flagstream_relay_resumptions_total"
        )
        full_before = await _relay_counter(
            session, relays[0].url, "flagstream_relay_full_puts_total"
        )
        killed_at = time.perf_counter()
        relays[1].kill()
        moved = await _wait(
            lambda: all(
                c.stats.connects > before[c.index] and c.connected.is_set() for c in victims
            ),
            60,
        )
        moved_after = time.perf_counter() - killed_at
        outcome.check(moved, "not every stream of the killed relay reconnected within 60 s")
        say(
            f"   {sum(c.connected.is_set() for c in victims)}/{len(victims)} streams reconnected "
            f"to relay-a within {moved_after:.2f} s"
        )
        # A resumed stream gets nothing until the next change; the change tells them apart.
        on = not on
        await _toggle_and_report(api, clients, receipts, sdk, on, "after", say, outcome)
        resumed = sum(c.stats.resumed for c in victims)
        full = sum(c.stats.full for c in victims)
        relay_resumed = (
            await _relay_counter(session, relays[0].url, "flagstream_relay_resumptions_total")
            - resumed_before
        )
        relay_full = (
            await _relay_counter(session, relays[0].url, "flagstream_relay_full_puts_total")
            - full_before
        )
        say(
            f"   streams: {resumed} resumed (patch only, no put), {full} needed a full put; "
            f"relay-a counted {relay_resumed:.0f} resumptions, {relay_full:.0f} full puts"
        )
        outcome.check(full == 0, f"{full} reconnecting streams needed a full put")

        say("7. invariants")
        expected = await api.versions()
        converged = await _wait(lambda: all(c.versions == expected for c in clients), 15)
        holding = sum(c.versions == expected for c in clients)
        say(f"   convergence: {holding}/{len(clients)} streams hold the publisher's versions")
        outcome.check(converged, "not every stream converged to the publisher's state")
        sdk_versions = sdk.versions()
        sdk_ok = all(sdk_versions.get(k) == v for k, v in expected.items())
        say(f"   LaunchDarkly SDK holds the publisher's versions: {sdk_ok}")
        outcome.check(sdk_ok, "the SDK does not hold the publisher's versions")
        regressions = sum(c.stats.regressions for c in clients)
        say(f"   monotonicity: {regressions} version regressions seen by any stream")
        outcome.check(regressions == 0, f"{regressions} version regressions")
    finally:
        say("8. shutting down")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
        if sdk is not None:
            await asyncio.to_thread(sdk.close)
        await asyncio.to_thread(procs.stop_all)
        left = procs.left_running()
        say(f"   processes left running: {left or 'none'}")
        outcome.check(not left, f"processes left running: {left}")
        await _cleanup(bootstrap, topic, redis_url, redis_prefix, say)
        if outcome.ok and sys.exc_info()[0] is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"   process logs kept in {workdir}")
    return outcome


async def _toggle_and_report(
    api: PublisherAPI,
    clients: list[StreamClient],
    receipts: Receipts,
    sdk: SDKProbe | None,
    on: bool,
    label: str,
    say: Any,
    outcome: Outcome,
) -> None:
    sent = time.perf_counter()
    version = await api.set_on(TOGGLE_FLAG, on)
    all_in = await _wait(
        lambda: all(c.versions.get(TOGGLE_FLAG, 0) >= version for c in clients), 15
    )
    sdk_at: float | None = None
    if sdk is not None:
        await _wait(lambda: sdk.received(TOGGLE_FLAG, version) is not None, 5)
        sdk_at = sdk.received(TOGGLE_FLAG, version)
    times = sorted(receipts.of(TOGGLE_FLAG, version))
    if times:
        first, last = _ms(times[0] - sent), _ms(times[-1] - sent)
    else:
        first = last = "      -   "
    sdk_text = _ms(sdk_at - sent) if sdk_at is not None else "not received"
    state = "on " if on else "off"
    say(
        f"   {label:>6}  {state} v{version:<4} {first}  {last}  {len(times):>4}/{len(clients):<4}"
        f"  {sdk_text}"
    )
    outcome.check(all_in, f"toggle {label}: not every stream received version {version}")


async def _cleanup(bootstrap: str, topic: str, redis_url: str, prefix: str, say: Any) -> None:
    """Delete the demo's topic and Redis keys: the shared stack stays as it was."""
    with contextlib.suppress(Exception):
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            await admin.delete_topics([topic], timeout_ms=10_000)
            say(f"   deleted topic {topic}")
        finally:
            await admin.close()
    with contextlib.suppress(Exception):
        from publisher.redis_store import RedisStore

        store = RedisStore(redis_url, prefix=prefix)
        try:
            await store.delete_all()
            say(f"   deleted Redis keys {prefix}*")
        finally:
            await store.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagstream demo",
        description="The whole pipeline on the local stack: publisher, two relays, SSE "
        "streams and a LaunchDarkly SDK; toggles, a relay failover, then a clean shutdown.",
    )
    parser.add_argument("--clients", type=int, default=300, help="SSE streams (%(default)s)")
    parser.add_argument("--toggles", type=int, default=5, help="flag toggles (%(default)s)")
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between toggles (%(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not 2 <= args.clients <= 5000:
        print("flagstream demo: --clients must be between 2 and 5000", file=sys.stderr)
        return 2
    if not 1 <= args.toggles <= 1000:
        print("flagstream demo: --toggles must be between 1 and 1000", file=sys.stderr)
        return 2
    if not 0 <= args.interval <= 60:
        print("flagstream demo: --interval must be between 0 and 60 seconds", file=sys.stderr)
        return 2
    from flagstream.stack.errors import StackError

    def say(line: str) -> None:
        print(line, flush=True)

    async def run() -> Outcome:
        # SIGTERM stops the demo like Ctrl-C does: the run's cleanup still stops everything.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_demo(args, say)

    try:
        outcome = asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("flagstream demo: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    except StackError as exc:
        print(f"flagstream demo: the local stack could not start: {exc}", file=sys.stderr)
        return 1
    except DemoError as exc:
        print(f"flagstream demo: {exc}", file=sys.stderr)
        return 1
    if outcome.ok:
        say("demo complete: every check held")
        return 0
    for failure in outcome.failures:
        print(f"flagstream demo: FAILED: {failure}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
