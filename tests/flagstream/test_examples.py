"""examples/ work against ``flagstream dev``: the LaunchDarkly SDK program and the SSE proxy
that serves the EventSource page."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from aiohttp import web

from flagstream.dev import DEMO_ENV, TOGGLE_FLAG, DevServer
from flagstream.stack.process import free_port
from protocol.sse import SSEEvent, SSEParser

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def _toggle(server: DevServer, on: bool) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.patch(
            f"{server.url}/api/v1/environments/{DEMO_ENV}/flags/{TOGGLE_FLAG}",
            json={"on": on},
            headers={"Authorization": f"Bearer {server.admin_token}"},
        ) as r,
    ):
        assert r.status == 200, await r.text()


async def _run_example(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "sdk_client.py"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


@pytest.mark.e2e
async def test_sdk_client_prints_the_value_then_the_change(dev_server: DevServer) -> None:
    assert dev_server.sdk_key is not None
    proc = await _run_example("--relay", dev_server.url, "--sdk-key", dev_server.sdk_key)
    assert proc.stdout is not None
    seen: list[str] = []

    async def read_until(marker: str) -> None:
        assert proc.stdout is not None
        while not any(marker in line for line in seen):
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"example exited: {''.join(seen)}")
            seen.append(line)

    try:
        await asyncio.wait_for(read_until("watching for changes"), 60)
        assert f"{TOGGLE_FLAG} = False\n" in seen
        await _toggle(dev_server, True)
        await asyncio.wait_for(read_until(f"{TOGGLE_FLAG}: False -> True"), 30)
    finally:
        proc.terminate()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(proc.wait(), 20)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.e2e
async def test_sdk_client_once_and_bad_key(dev_server: DevServer) -> None:
    assert dev_server.sdk_key is not None
    proc = await _run_example(
        "--relay", dev_server.url, "--sdk-key", dev_server.sdk_key, "--flag", "dark-mode", "--once"
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert "dark-mode = True" in out.decode()

    proc = await _run_example("--relay", dev_server.url, "--once")  # no key: usage error
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and "SDK key is needed" in out.decode()


def _load_proxy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sse_proxy", EXAMPLES / "sse_proxy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_sse_proxy_serves_the_page_and_the_stream_with_the_key(dev_server: DevServer) -> None:
    assert dev_server.sdk_key is not None
    proxy = _load_proxy()
    runner = web.AppRunner(
        proxy.build_app(dev_server.url, dev_server.sdk_key), shutdown_timeout=1.0
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/") as r:
                assert r.status == 200
                page = await r.text()
                assert "new EventSource(url)" in page and '"/all"' in page
            # The browser sends no Authorization: the proxy adds the key.
            async with session.get(base + "/all") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/event-stream")
                parser = SSEParser()
                events: list[SSEEvent] = []
                async for chunk in r.content.iter_any():
                    events += [e for e in parser.feed(chunk) if isinstance(e, SSEEvent)]
                    if events:
                        break
                assert events[0].event == "put"
                put_id = events[0].id
            await _toggle(dev_server, True)
            # A reconnect with the browser's Last-Event-ID resumes: only the patch, no put.
            async with session.get(base + "/all", headers={"Last-Event-ID": str(put_id)}) as r:
                parser = SSEParser()
                events = []
                async for chunk in r.content.iter_any():
                    events += [e for e in parser.feed(chunk) if isinstance(e, SSEEvent)]
                    if events:
                        break
                assert [e.event for e in events] == ["patch"]
                assert json.loads(events[0].data)["data"]["on"] is True
    finally:
        await runner.cleanup()


@pytest.mark.e2e
async def test_eventsource_page_in_a_real_browser_shows_the_toggle(dev_server: DevServer) -> None:
    """Headless Chromium opens the page through the proxy; a toggle shows up in its table."""
    # `make test` installs chromium (Makefile target `browser`); missing, this must fail.
    assert shutil.which("chromium"), "chromium is missing: apt-get install -y chromium"
    assert dev_server.sdk_key is not None
    proxy = _load_proxy()
    runner = web.AppRunner(proxy.build_app(dev_server.url, dev_server.sdk_key))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", proxy_port := free_port()).start()
    debug_port = free_port()
    chrome = await asyncio.create_subprocess_exec(
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--remote-debugging-port={debug_port}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            targets: list[dict[str, str]] = []
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{debug_port}/json") as r:
                        targets = await r.json()
                        break
                await asyncio.sleep(0.05)
            page = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"]) as ws:
                ids = iter(range(1, 1000))

                async def call(method: str, **params: object) -> dict[str, object]:
                    n = next(ids)
                    await ws.send_json({"id": n, "method": method, "params": params})
                    while True:
                        msg = await ws.receive_json()
                        if msg.get("id") == n:
                            result: dict[str, object] = msg.get("result", {})
                            return result

                async def page_text() -> str:
                    # Empty while the navigation has not produced a body yet.
                    res = await call(
                        "Runtime.evaluate",
                        expression="document.body ? document.body.innerText : ''",
                    )
                    value = res.get("result", {}).get("value", "")  # type: ignore[attr-defined]
                    return str(value)

                async def wait_text(marker: str) -> str:
                    for _ in range(300):
                        text = await page_text()
                        if marker in text:
                            return text
                        await asyncio.sleep(0.05)
                    raise AssertionError(f"{marker!r} not on the page: {text}")

                await call("Page.navigate", url=f"http://127.0.0.1:{proxy_port}/")
                await wait_text("4 flags")  # the put arrived through the proxy
                await _toggle(dev_server, True)
                text = await wait_text(f"/flags/{TOGGLE_FLAG} v2 on=true")
                assert f"{TOGGLE_FLAG}\ton\t2" in text
    finally:
        chrome.terminate()
        await chrome.wait()
        await runner.cleanup()
