"""Client-side settings end to end in ``flagstream dev``: the publisher's PATCH writes the
environment record, the relay applies it (secure mode, ping mode, allowed origins)."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import pytest

from flagstream import dev
from flagstream.dev import DevServer
from protocol.clientside import secure_mode_hash

pytestmark = pytest.mark.e2e

CAROL = base64.urlsafe_b64encode(json.dumps({"kind": "user", "key": "carol"}).encode()).decode()


async def _until(check: Any, tries: int = 200) -> None:
    import asyncio

    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the relay did not apply the change")


async def test_dev_serves_browser_sdks_and_applies_settings(dev_server: DevServer) -> None:
    assert dev_server.client_side_id
    assert dev_server.client_side_id in dev.banner(dev_server, token_from_env=False)
    url = dev_server.url
    poll = f"{url}/sdk/evalx/{dev_server.client_side_id}/contexts/{CAROL}"
    admin = {"Authorization": f"Bearer {dev_server.admin_token}"}
    async with aiohttp.ClientSession() as s:
        async with s.get(poll) as r:
            assert r.status == 200
            flags = await r.json()
        assert set(flags) == {f["key"] for f in dev.SEED_FLAGS}
        assert flags["banner-text"]["value"] == "Welcome to flagstream"

        async with s.patch(
            f"{url}/api/v1/environments/{dev.DEMO_ENV}",
            json={"secureMode": True, "allowedOrigins": ["http://127.0.0.1:8000"]},
            headers=admin,
        ) as r:
            assert r.status == 200, await r.text()
            secret = (await r.json())["secureModeSecret"]

        async def secured() -> bool:
            async with s.get(poll) as r:
                return r.status == 400

        await _until(secured)
        good = secure_mode_hash(secret, "carol")
        async with s.get(f"{poll}?h={good}", headers={"Origin": "http://127.0.0.1:8000"}) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8000"
        async with s.get(f"{poll}?h={good}", headers={"Origin": "http://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers

        async with s.patch(
            f"{url}/api/v1/environments/{dev.DEMO_ENV}",
            json={"secureMode": False, "clientStreamMode": "ping"},
            headers=admin,
        ) as r:
            assert r.status == 200

        async def pinging() -> bool:
            stream = f"{url}/eval/{dev_server.client_side_id}/{CAROL}"
            async with s.get(stream, timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status != 200:
                    return False
                first = await r.content.readuntil(b"\n\n")
                return first.startswith(b"event: ping")

        await _until(pinging)
