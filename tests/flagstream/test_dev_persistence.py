"""``flagstream dev`` keeps its data in a data directory: what a restart keeps (credentials,
the admin token, flags, segments, audit, API tokens, stream positions), seeding only once,
and one-line errors for a data directory that is in use or damaged.

The in-process tests restart ``dev.running`` on the same directory; the e2e tests run the
command as a user would (a subprocess, twice), one of them with the real LaunchDarkly SDK
across a SIGKILL of the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from ldclient import Context, LDClient
from ldclient.config import Config
from test_dev import stream

from flagstream import dev
from flagstream.dev import ADMIN_TOKEN_FILE, DEMO_ENV, DEMO_KEY_FILE, SEED_FLAGS, TOGGLE_FLAG
from flagstream.stack.process import free_port


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def api(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    expect: int = 200,
) -> Any:
    async with session.request(
        method,
        f"{url}/api/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    ) as r:
        payload = await r.json(content_type=None)
        assert r.status == expect, payload
        return payload


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_restart_keeps_everything_and_seeds_once(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    data = tmp_path / "data"
    async with dev.running(port=0, data_dir=data) as first:
        url, token = first.url, first.admin_token
        assert first.sdk_key is not None and first.token_saved
        assert file_mode(data / ADMIN_TOKEN_FILE) == 0o600
        assert (data / ADMIN_TOKEN_FILE).read_text().strip() == token
        await api(
            session,
            url,
            token,
            "PATCH",
            f"/environments/{DEMO_ENV}/flags/{TOGGLE_FLAG}",
            {"on": True},
        )
        await api(
            session,
            url,
            token,
            "PUT",
            f"/environments/{DEMO_ENV}/flags/added-later",
            {
                "key": "added-later",
                "on": True,
                "variations": [1, 2],
                "fallthrough": {"variation": 1},
                "offVariation": 0,
            },
            expect=201,
        )
        await api(session, url, token, "DELETE", f"/environments/{DEMO_ENV}/flags/dark-mode")
        created = await api(
            session, url, token, "POST", "/tokens", {"name": "ci", "scopes": ["read"]}, expect=201
        )
        audit_before = await api(
            session, url, token, "GET", f"/environments/{DEMO_ENV}/audit?limit=100"
        )
        async with stream(session, url, first.sdk_key) as s:
            last_id = (await s.wait_for(1))[0].id
        sdk_key = first.sdk_key

    async with dev.running(port=0, data_dir=data) as second:
        url = second.url
        assert second.admin_token == token and second.sdk_key == sdk_key
        flags = await api(
            session, url, token, "GET", f"/environments/{DEMO_ENV}/flags?includeDeleted=true"
        )
        by_key = {f["key"]: f for f in flags["items"]}
        assert by_key[TOGGLE_FLAG]["on"] is True and by_key[TOGGLE_FLAG]["version"] == 2
        assert by_key["added-later"]["version"] == 1
        assert by_key["dark-mode"].get("deleted") is True
        # Seeded once: the restart wrote nothing, so the audit log is exactly as it was.
        audit_after = await api(
            session, url, token, "GET", f"/environments/{DEMO_ENV}/audit?limit=100"
        )
        assert audit_after == audit_before
        # The API token made before the restart still works.
        async with session.get(
            f"{url}/api/v1/environments",
            headers={"Authorization": f"Bearer {created['token']}"},
        ) as r:
            assert r.status == 200
        # Resumption across the restart: the old position is valid, no put, just the change.
        async with stream(session, url, sdk_key, last_event_id=last_id) as s:
            await api(
                session,
                url,
                token,
                "PATCH",
                f"/environments/{DEMO_ENV}/flags/banner-text",
                {"on": False},
            )
            events = await s.wait_for(1)
            assert [e.event for e in events] == ["patch"]
            assert json.loads(events[0].data)["path"] == "/flags/banner-text"
        async with session.get(f"{url}/metrics") as r:
            text = await r.text()
        assert "flagstream_relay_resumptions_total 1.0" in text
        assert "flagstream_relay_full_puts_total 0.0" in text


async def test_env_admin_token_is_used_and_not_saved(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with dev.running(port=0, data_dir=data, admin_token="token-from-the-environment") as s:
        assert s.admin_token == "token-from-the-environment" and not s.token_saved
        text = dev.banner(s, token_from_env=True)
    assert not (data / ADMIN_TOKEN_FILE).exists()
    assert f"data in {data}" in text and "from FLAGSTREAM_ADMIN_TOKEN" in text


async def test_a_seed_interrupted_after_the_environment_is_completed(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    data = tmp_path / "data"
    async with dev.running(port=0, data_dir=data, seed_demo=False) as first:
        # What a first start that died right after creating the environment leaves behind.
        created = await api(
            session,
            first.url,
            first.admin_token,
            "POST",
            "/environments",
            {"key": DEMO_ENV, "name": "Demo environment"},
            expect=201,
        )
        (data / DEMO_KEY_FILE).write_text(created["sdkKey"] + "\n")
    async with dev.running(port=0, data_dir=data) as second:
        assert second.sdk_key == created["sdkKey"]
        flags = await api(
            session, second.url, second.admin_token, "GET", f"/environments/{DEMO_ENV}/flags"
        )
        keys = {f["key"] for f in flags["items"]}
        assert keys == {f["key"] for f in SEED_FLAGS}


# --- the command, as a user runs it ---------------------------------------------------------


class DevProcess:
    """``flagstream dev`` as a subprocess in ``cwd``; ``banner`` once it is serving."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.banner = ""

    async def start(self) -> DevProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGSTREAM_")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flagstream",
            "dev",
            *self.args,
            cwd=self.cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(60):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise AssertionError(f"flagstream dev exited: {''.join(lines)}")
                lines.append(line)
                if line.startswith("Ctrl-C stops"):
                    break
        self.banner = "".join(lines)
        return self

    def field(self, name: str) -> str:
        found = re.search(rf"^  {name}\s+(\S+)", self.banner, re.MULTILINE)
        assert found, self.banner
        return found.group(1)

    async def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), 20)


async def run_to_exit(cwd: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGSTREAM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flagstream",
        "dev",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.e2e
async def test_run_twice_shows_the_same_key_and_the_first_runs_changes(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """What ``make run`` does twice in a row: ``flagstream dev`` with its default data dir."""
    first = await DevProcess(tmp_path, "--port", "0").start()
    try:
        url = first.field("relay for SDKs")
        sdk_key, token = first.field("SDK key"), first.field("admin token")
        assert f"data in {Path('.flagstream')}" in first.banner
        await api(
            session,
            url,
            token,
            "PATCH",
            f"/environments/{DEMO_ENV}/flags/{TOGGLE_FLAG}",
            {"on": True},
        )
    finally:
        assert await first.stop() == 0
    assert (tmp_path / ".flagstream" / "flagstream.db").exists()

    second = await DevProcess(tmp_path, "--port", "0").start()
    try:
        assert second.field("SDK key") == sdk_key
        assert second.field("admin token") == token
        url = second.field("relay for SDKs")
        async with session.get(f"{url}/sdk/latest-all", headers={"Authorization": sdk_key}) as r:
            assert r.status == 200
            flags = (await r.json())["flags"]
        assert flags[TOGGLE_FLAG]["on"] is True and flags[TOGGLE_FLAG]["version"] == 2
    finally:
        assert await second.stop() == 0


@pytest.mark.e2e
async def test_a_data_dir_in_use_or_damaged_is_a_one_line_error(tmp_path: Path) -> None:
    running = await DevProcess(tmp_path, "--port", "0", "--data-dir", "d").start()
    try:
        assert running.proc is not None
        code, err = await run_to_exit(tmp_path, "--port", "0", "--data-dir", "d")
        assert code == 2 and err.count("\n") == 1, err
        assert f"in use by another flagstream process (pid {running.proc.pid})" in err
        assert "--data-dir" in err and "Traceback" not in err
    finally:
        assert await running.stop() == 0

    damaged = tmp_path / "broken"
    damaged.mkdir()
    (damaged / "flagstream.db").write_bytes(b"definitely not a database\n" * 200)
    code, err = await run_to_exit(tmp_path, "--port", "0", "--data-dir", "broken")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("flagstream dev: ") and "flagstream.db" in err
    assert "move" in err and "Traceback" not in err

    code, err = await run_to_exit(tmp_path, "--data-dir", "d", "--ephemeral")
    assert code == 2 and "not allowed with argument" in err


def _sdk_config(url: str, sdk_key: str) -> Config:
    return Config(
        sdk_key,
        base_uri=url,
        stream_uri=url,
        events_uri=url,
        stream=True,
        send_events=False,
        diagnostic_opt_out=True,
        initial_reconnect_delay=0.2,
    )


def _relay_counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.e2e
@pytest.mark.slow
async def test_launchdarkly_sdk_resumes_without_put_after_a_killed_server_restarts(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """The issue's story: a real SDK on ``flagstream dev``, the server SIGKILLed and started
    again on the same port and data: the SDK keeps its key, resumes with ``Last-Event-ID``
    (no ``put``) and sees a change made after the restart."""
    port = str(free_port())
    first = await DevProcess(tmp_path, "--port", port).start()
    url, sdk_key, token = (
        first.field("relay for SDKs"),
        first.field("SDK key"),
        first.field("admin token"),
    )
    seen: list[Any] = []
    changed = threading.Event()
    client = await asyncio.to_thread(LDClient, _sdk_config(url, sdk_key), 15)
    try:
        assert client.is_initialized()
        user = Context.create("someone")
        assert client.variation(TOGGLE_FLAG, user, None) is False

        def listener(change: Any) -> None:
            seen.append(change.key)
            changed.set()

        client.flag_tracker.add_listener(listener)
        await api(
            session,
            url,
            token,
            "PATCH",
            f"/environments/{DEMO_ENV}/flags/{TOGGLE_FLAG}",
            {"on": True},
        )
        await asyncio.to_thread(changed.wait, 10)
        assert client.variation(TOGGLE_FLAG, user, None) is True

        assert await first.stop(signal.SIGKILL) == -signal.SIGKILL  # no clean shutdown
        changed.clear()
        second = await DevProcess(tmp_path, "--port", port).start()
        try:
            assert second.field("SDK key") == sdk_key and second.field("admin token") == token
            # The SDK reconnects by itself (backoff) with its Last-Event-ID.
            deadline = time.monotonic() + 30
            while True:
                async with session.get(f"{url}/metrics") as r:
                    metrics = await r.text()
                if _relay_counter(metrics, "flagstream_relay_connections") >= 1:
                    break
                assert time.monotonic() < deadline, "the SDK did not reconnect"
                await asyncio.sleep(0.2)
            assert _relay_counter(metrics, "flagstream_relay_resumptions_total") == 1
            assert _relay_counter(metrics, "flagstream_relay_full_puts_total") == 0
            # The value the SDK holds survived, and a change after the restart arrives.
            assert client.variation(TOGGLE_FLAG, user, None) is True
            await api(
                session,
                url,
                token,
                "PATCH",
                f"/environments/{DEMO_ENV}/flags/search-v2",
                {"on": False},
            )
            assert await asyncio.to_thread(changed.wait, 10)
            assert "search-v2" in seen
            assert client.variation("search-v2", user, None) is False
        finally:
            assert await second.stop() == 0
    finally:
        await asyncio.to_thread(client.close)
        if first.proc is not None and first.proc.returncode is None:
            first.proc.kill()


@pytest.mark.unit
def test_settings_come_from_the_environment_with_flags_on_top(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parse = dev._parser().parse_args
    assert dev.dev_settings(parse([])) == dev.DevSettings(
        data_dir=Path(".flagstream"), ephemeral=False
    )
    monkeypatch.setenv("FLAGSTREAM_DEV_DATA_DIR", "/srv/flags")
    assert dev.dev_settings(parse([])).data_dir == Path("/srv/flags")
    assert dev.dev_settings(parse(["--data-dir", "here"])).data_dir == Path("here")
    assert dev.dev_settings(parse(["--ephemeral"])).ephemeral is True
    monkeypatch.setenv("FLAGSTREAM_DEV_EPHEMERAL", "true")
    assert dev.dev_settings(parse([])).ephemeral is True
