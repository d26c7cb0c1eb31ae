"""``flagstream.fdlimit``: connection limits derived from RLIMIT_NOFILE, 503 above them, and
an accept loop that backs off (and logs once per interval) when descriptors run out.

The subprocess tests start each server (``flagstream dev`` on asyncio's own loop, a relay
worker and a publisher on uvloop) under a lowered open-files limit, fill it with streams or
connections, then lower the running process's limit below what it holds (``prlimit``), so
that every ``accept()`` fails with EMFILE, and check: open streams keep getting changes,
the process does not spin, the failure is logged once per interval without a traceback, and
accepting resumes once descriptors are free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from flagstream.fdlimit import (
    GuardedSite,
    connection_budget,
    descriptor_limit,
    reserved_descriptors,
)
from flagstream.stack.process import free_port
from publisher.config import PublisherSettings
from relay.config import RelaySettings

LIMIT = 256
BUDGET = connection_budget(LIMIT)
ADMIN_TOKEN = "fdlimit-test-admin-token-0123456789"
EMFILE_LINE = re.compile(r"accept\(\) failed with EMFILE")


# --- the numbers ---------------------------------------------------------------------------


def test_the_budget_keeps_64_plus_5_percent_of_the_limit() -> None:
    assert reserved_descriptors(20_000) == 64 + 1_000
    assert connection_budget(20_000) == 18_936
    assert connection_budget(1024) == 1024 - 64 - 51
    assert connection_budget(LIMIT) == 180
    assert connection_budget(60) == 1  # never zero or negative


def test_settings_default_to_the_budget_of_this_process() -> None:
    budget = connection_budget(descriptor_limit())
    assert RelaySettings().max_connections == budget
    assert PublisherSettings().max_connections == budget
    # An explicit value still wins.
    assert RelaySettings(max_connections=10).max_connections == 10


# --- helpers ---------------------------------------------------------------------------------


class RawStream:
    """One HTTP request on its own connection, read in the background (bytes only)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.data = bytearray()
        self.closed = False
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, port: int, request: bytes) -> RawStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        return cls(reader, writer)

    async def _read(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := await self.reader.read(65536):
                self.data += chunk
        self.closed = True

    async def wait_for(self, needle: bytes, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while needle not in self.data:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not received; got {bytes(self.data[:300])!r}")
            await asyncio.sleep(0.02)

    async def status(self, within: float = 20.0) -> int:
        await self.wait_for(b"\r\n", within)
        return int(bytes(self.data).split(b" ", 2)[1])

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.writer.close()


def stream_request(sdk_key: str) -> bytes:
    return f"GET /all HTTP/1.1\r\nHost: x\r\nAuthorization: {sdk_key}\r\n\r\n".encode()


def lowered_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


@contextlib.contextmanager
def spawned(
    argv: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=lowered_limit,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(60):
        while True:
            assert proc.poll() is None, text(log_path)
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)


def text(path: Path) -> str:
    return path.read_text()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def fill_to_the_budget(
    port: int, request: bytes, *, already_open: int = 0
) -> tuple[list[RawStream], list[RawStream]]:
    """Open connections up to ``BUDGET`` (each must be answered 200), then 5 more (503)."""
    admitted = []
    for _ in range(BUDGET - already_open):
        stream = await RawStream.open(port, request)
        assert await stream.status() == 200, bytes(stream.data[:300])
        admitted.append(stream)
    refused = []
    for _ in range(5):
        stream = await RawStream.open(port, request)
        assert await stream.status() == 503, bytes(stream.data[:300])
        await stream.wait_for(b"Retry-After")
        await stream.wait_for(b"application/problem+json")
        refused.append(stream)
    return admitted, refused


async def starve_and_recover(
    proc: subprocess.Popen[bytes],
    port: int,
    log_path: Path,
    request: bytes,
    streams: list[RawStream],
    change: Callable[[], Awaitable[bytes]],
) -> None:
    """Take every descriptor away, check the process serves its streams without spinning or
    a log storm, then give descriptors back and check new connections are accepted."""
    lines_before = text(log_path).count("\n")
    # Nothing can be opened any more: every accept() now fails with EMFILE.
    held = open_descriptors(proc.pid)
    resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (held, LIMIT))
    waiting = [await RawStream.open(port, request) for _ in range(20)]  # kernel backlog
    cpu_before = cpu_seconds(proc.pid)
    await asyncio.sleep(3.0)
    needle = await change()  # the change travels over connections that are already open
    for stream in streams[:20]:
        await stream.wait_for(needle)
    await asyncio.sleep(1.0)
    spent = cpu_seconds(proc.pid) - cpu_before
    # The storm this replaces spun at ~98% of a core; backing off costs almost nothing.
    assert spent < 1.5, f"{spent:.2f} CPU seconds while out of descriptors"
    log = text(log_path)
    new_lines = log.splitlines()[lines_before:]
    reports = [line for line in new_lines if EMFILE_LINE.search(line)]
    assert 1 <= len(reports) <= 2, new_lines[-20:]  # once per 10 s interval
    assert "Traceback" not in log, log[-3000:]

    # Descriptors back: the queued connections are accepted and answered.
    resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
    for stream in streams[-10:]:
        await stream.close()
    statuses = [await w.status(within=30) for w in waiting]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1, statuses
    for stream in waiting:
        await stream.close()


@pytest.fixture
async def cleanup_streams() -> AsyncIterator[list[RawStream]]:
    streams: list[RawStream] = []
    yield streams
    for stream in streams:
        await stream.close()


# --- flagstream dev (asyncio's own event loop) -----------------------------------------------


@pytest.mark.slow
async def test_dev_under_a_lowered_descriptor_limit(
    tmp_path: Path, cleanup_streams: list[RawStream]
) -> None:
    port = free_port()
    log_path = tmp_path / "dev.log"
    argv = [sys.executable, "-m", "flagstream", "dev", "--port", str(port), "--ephemeral"]
    with spawned(argv, {"FLAGSTREAM_ADMIN_TOKEN": ADMIN_TOKEN}, log_path) as proc:
        await wait_ready(port, proc, log_path)
        # /readyz answers before the demo seed is written; the banner with the key follows it.
        async with asyncio.timeout(60):
            while (sdk_key := re.search(r"sdk-[0-9a-f-]{36}", text(log_path))) is None:
                assert proc.poll() is None, text(log_path)
                await asyncio.sleep(0.1)
        request = stream_request(sdk_key.group(0))
        # The admin connection is opened first (a keep-alive connection, reused below).
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{port}",
            connector=connector,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as admin:
            async with admin.get("/api/v1/environments/demo/flags/new-checkout") as resp:
                version = (await resp.json())["version"]
            admitted, refused = await fill_to_the_budget(port, request, already_open=1)
            cleanup_streams.extend(admitted + refused)

            async def toggle() -> bytes:
                async with admin.patch(
                    "/api/v1/environments/demo/flags/new-checkout", json={"on": True}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                return f'"version":{version + 1}'.encode()

            await starve_and_recover(proc, port, log_path, request, admitted, toggle)


# --- a relay worker (uvloop) -----------------------------------------------------------------


@pytest.mark.slow
async def test_relay_under_a_lowered_descriptor_limit(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str, cleanup_streams: list[RawStream]
) -> None:
    from relay_support import flag, item_envelope
    from test_server import ENV, SDK_KEY, seeded

    port = free_port()
    log_path = tmp_path / "relay.log"
    env = {
        "FLAGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLAGSTREAM_TOPIC": unique_name,
        "FLAGSTREAM_RELAY_HOST": "127.0.0.1",
        "FLAGSTREAM_RELAY_PORT": str(port),
        "FLAGSTREAM_RELAY_WORKERS": "1",
        "FLAGSTREAM_RELAY_RETRY_AFTER": "1",
    }
    async with seeded(kafka_bootstrap, unique_name) as producer:
        with spawned([sys.executable, "-m", "relay.cli"], env, log_path) as proc:
            await wait_ready(port, proc, log_path)
            request = stream_request(SDK_KEY)
            admitted, refused = await fill_to_the_budget(port, request)
            cleanup_streams.extend(admitted + refused)

            async def write() -> bytes:
                await producer.send(item_envelope(ENV, "flag", flag("flag-1", 77)))
                return b'"version":77'

            await starve_and_recover(proc, port, log_path, request, admitted, write)


# --- the publisher (uvloop) ------------------------------------------------------------------


@pytest.mark.slow
async def test_publisher_under_a_lowered_descriptor_limit(
    tmp_path: Path,
    kafka_bootstrap: str,
    redis_url: str,
    unique_name: str,
    cleanup_streams: list[RawStream],
) -> None:
    port = free_port()
    log_path = tmp_path / "publisher.log"
    env = {
        "FLAGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLAGSTREAM_REDIS_URL": redis_url,
        "FLAGSTREAM_TOPIC": unique_name,
        "FLAGSTREAM_TOPIC_PARTITIONS": "1",
        "FLAGSTREAM_ADMIN_TOKEN": ADMIN_TOKEN,
        "FLAGSTREAM_PUBLISHER_REDIS_PREFIX": f"{unique_name}:",
        "FLAGSTREAM_PUBLISHER_HOST": "127.0.0.1",
        "FLAGSTREAM_PUBLISHER_PORT": str(port),
    }
    with spawned([sys.executable, "-m", "publisher.cli"], env, log_path) as proc:
        await wait_ready(port, proc, log_path)
        # Keep-alive connections that each made one request are what a publisher holds.
        request = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
        admitted, refused = await fill_to_the_budget(port, request)
        cleanup_streams.extend(admitted + refused)
        keep = admitted[0]
        auth = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
        body = b'{"key":"prod","name":"Production"}'

        async def create_env() -> bytes:
            # Sent on a connection opened before the descriptors ran out.
            keep.writer.write(
                b"POST /api/v1/environments HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\n"
                + auth.encode()
                + b"Content-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await keep.wait_for(b"201 Created")
            return b'"Production"'

        await starve_and_recover(proc, port, log_path, request, [keep], create_env)


# --- rule 5: a bounded number of connections being set up at once ----------------------------


class _WatchedSet(set[Any]):
    """A set that remembers the most members it ever held."""

    most = 0

    def add(self, item: Any) -> None:
        super().add(item)
        self.most = max(self.most, len(self))


async def test_a_burst_of_connections_is_set_up_a_bounded_number_at_a_time() -> None:
    # Every connection of a burst is answered, yet at most `max_starting` setup tasks (each
    # holding its connection's aiohttp request graph) exist at once: the rest wait in the
    # kernel's listen queue instead of piling up in memory.
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = GuardedSite(runner, host="127.0.0.1", port=0, max_connections=1000)
    await site.start()
    guard = site.guard
    assert guard is not None
    guard.max_starting = 3
    watched = guard._pending = _WatchedSet()
    port = guard.sockets[0].getsockname()[1]
    try:
        # Opened and sent without yielding to the loop: the whole burst waits in the listen
        # queue before the server accepts any of it.
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        opened = [await asyncio.open_connection(sock=sock) for sock in socks]
        answers = await asyncio.wait_for(
            asyncio.gather(*(reader.read() for reader, _ in opened)), 30
        )
        assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"hello") for a in answers)
        assert guard.accepted == 40
        assert 1 <= watched.most <= 3
        # Once the burst is over the listening socket is watched again: one more is served.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).endswith(b"hello")
        for _, w in [*opened, (reader, writer)]:
            w.close()
    finally:
        await runner.cleanup()
