"""``relay.server``: real relay processes on loopback, reading the real local Kafka.

Also holds the helpers the drain and worker tests share (a relay subprocess, a seeded topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from relay_support import Producer, create_topic, env_envelope, flag, item_envelope
from test_hub import StreamClient, events_of

from flagstream.stack.process import free_port
from relay.server import listen_socket, raise_fd_limit

pytestmark = pytest.mark.e2e

SDK_KEY = "sdk-fanout-test-key"
ENV = "production"

# The operator's command (``flagstream relay`` runs the same ``relay.cli.main``).
RELAY_COMMAND = [sys.executable, "-m", "relay.cli"]


@dataclass
class RelayProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def learn_port(self, within: float = 30.0) -> int:
        """The port a relay started with ``port=0`` announced in its log."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = re.search(r"workers on http://127\.0\.0\.1:(\d+)", self.log())
            if found:
                self.port = int(found.group(1))
                return self.port
            assert self.proc.poll() is None, self.log()
            time.sleep(0.05)
        raise AssertionError("the relay announced no port: " + self.log())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, within: float) -> int:
        return self.proc.wait(within)


@contextlib.contextmanager
def relay_process(
    tmp_path: Path, bootstrap: str, topic: str, **settings: Any
) -> Iterator[RelayProcess]:
    """A relay started with ``relay.server.serve`` in its own session; killed if left over.

    ``port=0`` lets the relay choose; ``RelayProcess.port`` is then read from its log.
    """
    port = settings.pop("port", None)
    port = free_port() if port is None else int(port)
    env = dict(os.environ)
    env.update(
        {
            "FLAGSTREAM_KAFKA_BOOTSTRAP": bootstrap,
            "FLAGSTREAM_TOPIC": topic,
            "FLAGSTREAM_RELAY_HOST": "127.0.0.1",
            "FLAGSTREAM_RELAY_PORT": str(port),
            "FLAGSTREAM_RELAY_RETRY_AFTER": "1",
        }
    )
    for name, value in settings.items():
        env[f"FLAGSTREAM_RELAY_{name.upper()}"] = str(value)
    log_path = tmp_path / f"relay-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            RELAY_COMMAND,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield RelayProcess(proc, port, log_path)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def seed_topic(bootstrap: str, topic: str, flags: int = 3) -> Producer:
    await create_topic(bootstrap, topic, partitions=2)
    producer = Producer(bootstrap, topic, partitions=2)
    await producer.__aenter__()
    await producer.send(env_envelope(ENV, [SDK_KEY]))
    for i in range(flags):
        await producer.send(item_envelope(ENV, "flag", flag(f"flag-{i}", 1)))
    return producer


@contextlib.asynccontextmanager
async def seeded(bootstrap: str, topic: str) -> AsyncIterator[Producer]:
    producer = await seed_topic(bootstrap, topic)
    try:
        yield producer
    finally:
        await producer.__aexit__(None, None, None)


async def wait_ready(relay: RelayProcess, within: float = 30.0) -> None:
    """Until ``/readyz`` answers 200 (every worker that answers must be ready)."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(within):
        ready_in_a_row = 0
        while ready_in_a_row < 5:
            assert relay.proc.poll() is None, relay.log()
            try:
                async with session.get(relay.url + "/readyz") as resp:
                    ready_in_a_row = ready_in_a_row + 1 if resp.status == 200 else 0
            except aiohttp.ClientError:
                ready_in_a_row = 0
            await asyncio.sleep(0.1)


async def open_stream(relay: RelayProcess, path: str = "/all") -> StreamClient:
    client = await StreamClient.open(
        relay.port, path, extra_headers=f"Authorization: {SDK_KEY}\r\n"
    )
    status = await client.head()
    assert status == 200, (status, client.http.headers)
    return client


async def test_a_worker_serves_streams_and_names_itself(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    async with seeded(kafka_bootstrap, unique_name) as producer:
        with relay_process(tmp_path, kafka_bootstrap, unique_name, workers=1) as relay:
            await wait_ready(relay)
            stream = await open_stream(relay)
            worker = stream.http.headers["x-flagstream-worker"]
            assert worker.startswith("0/")
            items = await stream.until(lambda i: len(events_of(i)) >= 1, 10)
            put = json.loads(events_of(items)[0].data)
            assert set(put["data"]["flags"]) == {"flag-0", "flag-1", "flag-2"}

            await producer.send(item_envelope(ENV, "flag", flag("flag-1", 2, on=False)))
            items = await stream.until(lambda i: len(events_of(i)) >= 2, 10)
            patch = events_of(items)[1]
            assert patch.event == "patch"
            assert json.loads(patch.data)["data"]["version"] == 2

            async with aiohttp.ClientSession() as session:
                async with session.get(relay.url + "/status") as resp:
                    status = await resp.json()
                    assert status["hub"]["pid"] == int(worker.split("/")[1])
                    assert status["hub"]["connections"] == 1
                async with session.get(relay.url + "/metrics") as resp:
                    text = await resp.text()
                    assert "flagstream_relay_connections 1.0" in text
                    pid = worker.split("/")[1]
                    assert f'flagstream_relay_worker_info{{pid="{pid}",worker="0"}} 1.0' in text
            stream.close()
            relay.proc.send_signal(signal.SIGTERM)
            assert relay.wait(15) == 0, relay.log()


async def test_oversized_request_lines_and_headers_are_refused(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    async with seeded(kafka_bootstrap, unique_name):
        with relay_process(
            tmp_path,
            kafka_bootstrap,
            unique_name,
            workers=1,
            max_request_line=1024,
            max_header_size=1024,
        ) as relay:
            await wait_ready(relay)
            for extra_path, extra_header in (("?x=" + "a" * 2000, ""), ("", "a" * 2000)):
                client = await StreamClient.open(
                    relay.port,
                    "/all" + extra_path,
                    extra_headers=f"Authorization: {SDK_KEY}\r\nX-Big: {extra_header}\r\n",
                )
                status = await client.head()
                assert 400 <= status < 500, status
                client.close()
            # A normal stream still works afterwards.
            ok = await open_stream(relay)
            ok.close()
            relay.proc.send_signal(signal.SIGTERM)
            assert relay.wait(15) == 0, relay.log()


def test_listen_sockets_share_a_port() -> None:
    first = listen_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = listen_socket("127.0.0.1", port)
    try:
        assert second.getsockname()[1] == port
    finally:
        first.close()
        second.close()


def test_a_port_held_without_reuseport_is_a_clear_error(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    env = dict(os.environ, FLAGSTREAM_RELAY_PORT=str(port), FLAGSTREAM_RELAY_WORKERS="1")
    try:
        started = time.monotonic()
        done = subprocess.run(RELAY_COMMAND, env=env, capture_output=True, timeout=60)
    finally:
        holder.close()
    assert done.returncode == 2
    assert b"cannot listen on 127.0.0.1" in done.stderr
    assert b"Traceback" not in done.stderr
    assert time.monotonic() - started < 60


def test_fd_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        assert raise_fd_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
