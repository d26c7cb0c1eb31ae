"""``flagstream dev``: publisher + relay in one process over the in-memory log and store.

In-process tests serve the dev app on a free loopback port and talk to it over real HTTP;
the last test runs ``flagstream dev`` as a subprocess, reads what it prints, toggles a flag
with the printed ``flagstream admin`` line and sees the patch on the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest

from flagstream import dev
from flagstream.dev import DEMO_ENV, SEED_FLAGS, SEED_SEGMENTS, TOGGLE_FLAG, DevServer
from protocol.model import validate_flag, validate_segment
from protocol.sse import SSEEvent, SSEParser
from publisher import admin_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Stream:
    """An ``/all`` stream read in the background into ``events``."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[SSEEvent] = []
        self.parser = SSEParser()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(aiohttp.ClientError):
            async for chunk in self.response.content.iter_any():
                self.events.extend(e for e in self.parser.feed(chunk) if isinstance(e, SSEEvent))

    async def wait_for(self, count: int, within: float = 10.0) -> list[SSEEvent]:
        deadline = time.monotonic() + within
        while len(self.events) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} events, got {self.events}")
            await asyncio.sleep(0.01)
        return self.events

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.response.close()


@contextlib.asynccontextmanager
async def stream(
    session: aiohttp.ClientSession, url: str, key: str, last_event_id: str | None = None
) -> AsyncIterator[Stream]:
    headers = {"Authorization": key}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    response = await session.get(f"{url}/all", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    s = Stream(response)
    try:
        yield s
    finally:
        await s.close()


async def toggle(
    session: aiohttp.ClientSession, server: DevServer, flag: str, on: bool
) -> dict[str, Any]:
    async with session.patch(
        f"{server.url}/api/v1/environments/{DEMO_ENV}/flags/{flag}",
        json={"on": on},
        headers={"Authorization": f"Bearer {server.admin_token}"},
    ) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


@pytest.mark.unit
def test_seed_data_is_valid_for_the_publisher() -> None:
    for flag in SEED_FLAGS:
        validate_flag(flag)
    for segment in SEED_SEGMENTS:
        validate_segment(segment)
    assert TOGGLE_FLAG in {f["key"] for f in SEED_FLAGS}


async def test_seeded_stream_then_toggle_arrives_as_patch(
    dev_server: DevServer, session: aiohttp.ClientSession
) -> None:
    assert dev_server.sdk_key is not None and dev_server.sdk_key.startswith("sdk-")
    async with stream(session, dev_server.url, dev_server.sdk_key) as s:
        put = (await s.wait_for(1))[0]
        assert put.event == "put"
        data = json.loads(put.data)["data"]
        assert set(data["flags"]) == {f["key"] for f in SEED_FLAGS}
        assert set(data["segments"]) == {seg["key"] for seg in SEED_SEGMENTS}
        assert data["flags"][TOGGLE_FLAG]["on"] is False

        written = await toggle(session, dev_server, TOGGLE_FLAG, True)
        patch = (await s.wait_for(2))[1]
        assert patch.event == "patch"
        body = json.loads(patch.data)
        assert body["path"] == f"/flags/{TOGGLE_FLAG}"
        assert body["data"]["on"] is True
        assert body["data"]["version"] == written["version"] == 2
        assert patch.id is not None and patch.id != put.id


async def test_reconnect_with_last_event_id_resumes_without_put(
    dev_server: DevServer, session: aiohttp.ClientSession
) -> None:
    assert dev_server.sdk_key is not None
    async with stream(session, dev_server.url, dev_server.sdk_key) as s:
        last_id = (await s.wait_for(1))[0].id
    await toggle(session, dev_server, "dark-mode", False)
    async with stream(session, dev_server.url, dev_server.sdk_key, last_event_id=last_id) as s:
        events = await s.wait_for(1)
        assert [e.event for e in events] == ["patch"]
        assert json.loads(events[0].data)["path"] == "/flags/dark-mode"


async def test_polling_endpoint_and_auth(
    dev_server: DevServer, session: aiohttp.ClientSession
) -> None:
    assert dev_server.sdk_key is not None
    async with session.get(
        f"{dev_server.url}/sdk/latest-all", headers={"Authorization": dev_server.sdk_key}
    ) as r:
        assert r.status == 200
        assert set((await r.json())["flags"]) == {f["key"] for f in SEED_FLAGS}
    async with session.get(
        f"{dev_server.url}/all",
        headers={"Authorization": "sdk-00000000-0000-0000-0000-000000000000"},
    ) as r:
        assert r.status == 401
    async with session.get(f"{dev_server.url}/api/v1/environments") as r:
        assert r.status == 401
        assert r.headers["Content-Type"].startswith("application/problem+json")


async def test_process_wide_operations_endpoints(
    dev_server: DevServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{dev_server.url}/readyz") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ready", "relay": "ready", "publisher": "ready"}
    async with session.get(f"{dev_server.url}/livez") as r:
        assert r.status == 200
    async with session.get(f"{dev_server.url}/metrics") as r:
        text = await r.text()
        assert r.status == 200
        assert "flagstream_relay_ready 1.0" in text
        assert 'flagstream_publisher_writes_total{result="acknowledged"}' in text
    async with session.get(f"{dev_server.url}/openapi.json") as r:
        assert r.status == 200
        assert "/api/v1/environments" in json.dumps(await r.json())
    async with session.get(f"{dev_server.url}/status") as r:
        assert r.status == 200
        assert (await r.json())["ready"] is True
    async with session.get(f"{dev_server.url}/no-such-path") as r:
        assert r.status == 404


async def test_readyz_reports_draining(
    dev_server: DevServer, session: aiohttp.ClientSession
) -> None:
    await dev_server.hub.drain(0.0)
    async with session.get(f"{dev_server.url}/readyz") as r:
        assert r.status == 503
        assert (await r.json())["relay"] == "draining"


async def test_admin_token_is_used_and_banner_names_everything() -> None:
    async with dev.running(port=0, admin_token="dev-token-for-test") as server:
        assert server.admin_token == "dev-token-for-test"
        text = dev.banner(server, token_from_env=True)
    assert "dev-token-for-test" in text
    assert "from FLAGSTREAM_ADMIN_TOKEN" in text
    assert f"curl -N -H 'Authorization: {server.sdk_key}' {server.url}/all" in text
    assert dev.admin_command(server, TOGGLE_FLAG) in text


@pytest.mark.parametrize("token", ["-starts-with-a-dash", "--looks-like-an-option", "plain"])
def test_printed_admin_command_keeps_any_token_one_argument(token: str) -> None:
    server = cast(DevServer, SimpleNamespace(url="http://127.0.0.1:8030", admin_token=token))
    argv = shlex.split(dev.admin_command(server, TOGGLE_FLAG))
    args = admin_cli._parser().parse_args(argv[2:])
    assert (args.url, args.token) == ("http://127.0.0.1:8030", token)
    assert (args.command, args.action, args.env, args.key) == (
        "flag",
        "toggle",
        DEMO_ENV,
        TOGGLE_FLAG,
    )


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_port_in_use_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with _busy_port() as sock:
        port = sock.getsockname()[1]
        assert dev.main(["--port", str(port), "--ephemeral"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_invalid_environment_setting_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAGSTREAM_RELAY_HEARTBEAT_INTERVAL", "-1")
    assert dev.main(["--port", "0", "--ephemeral"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flagstream dev: invalid FLAGSTREAM_RELAY_HEARTBEAT_INTERVAL: ")
    monkeypatch.delenv("FLAGSTREAM_RELAY_HEARTBEAT_INTERVAL")
    monkeypatch.setenv("FLAGSTREAM_ADMIN_TOKEN", "short")
    assert dev.main(["--port", "0", "--ephemeral"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flagstream dev: invalid FLAGSTREAM_ADMIN_TOKEN: ")
    assert err.count("\n") == 1


# --- the command, as a user runs it --------------------------------------------------------


async def _read_banner(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise AssertionError(f"flagstream dev exited early: {''.join(lines)}")
        lines.append(line)
        if line.startswith("Ctrl-C stops"):
            return "".join(lines)


@pytest.mark.e2e
async def test_dev_command_stream_shows_toggle_made_with_printed_admin_line(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGSTREAM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flagstream",
        "dev",
        "--port",
        "0",
        "--ephemeral",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        text = await asyncio.wait_for(_read_banner(proc), 60)
        curl = re.search(r"curl -N -H 'Authorization: (sdk-[^']+)' (http://\S+)/all", text)
        assert curl, text
        sdk_key, url = curl.group(1), curl.group(2)
        # "flagstream admin ..." or ".venv/bin/flagstream admin ..." (venv not activated)
        admin_argv = next(
            argv
            for argv in (shlex.split(line) for line in text.splitlines())
            if len(argv) > 2 and argv[0].endswith("flagstream") and argv[1] == "admin"
        )
        async with stream(session, url, sdk_key) as s:
            put = (await s.wait_for(1))[0]
            assert json.loads(put.data)["data"]["flags"][TOGGLE_FLAG]["on"] is False
            admin = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "flagstream",
                *admin_argv[1:],
                cwd=REPO,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await asyncio.wait_for(admin.communicate(), 60)
            assert admin.returncode == 0, output.decode()
            patch = (await s.wait_for(2))[1]
            assert patch.event == "patch"
            body = json.loads(patch.data)
            assert body["path"] == f"/flags/{TOGGLE_FLAG}" and body["data"]["on"] is True
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
