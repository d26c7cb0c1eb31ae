"""The /livez stall probe (loadtest/livezprobe.py): it finds tagged relays by their
environment and reports a loop stall it was polling across."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from aiohttp import web

from loadtest.livezprobe import TAG_VAR, _poll, _tagged_ports


def test_tagged_processes_are_found_with_their_port() -> None:
    env = {**os.environ, TAG_VAR: "probe-test", "FLAGSTREAM_RELAY_PORT": "12345"}
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], env=env, stdin=subprocess.DEVNULL
    )
    try:
        assert _tagged_ports("probe-test") == {12345: [child.pid]}
        assert _tagged_ports("another-tag") == {}
    finally:
        child.kill()
        child.wait()


async def livez(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_a_blocked_loop_shows_as_a_gap_at_least_as_long() -> None:
    app = web.Application()
    app.router.add_get("/livez", livez)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        poller = asyncio.create_task(_poll(port, [os.getpid()], 1, 0.002, 0.0, stop))
        await asyncio.sleep(0.2)
        loop.call_soon(time.sleep, 0.3)  # the loop (server and poller alike) is stuck
        await asyncio.sleep(0.4)
        stop.set()
        report = await poller
    finally:
        await runner.cleanup()
    assert report["answers"] > 2
    # By construction: no answer can arrive while the loop sleeps.
    assert report["longest_gap_ms"] >= 300
    assert report["all_open_longest_gap_ms"] >= 300  # this process holds >= 1 descriptor
