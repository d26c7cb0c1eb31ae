"""relay.accesslog: aiohttp's access-log line with tokens and credentials redacted, written by
a real aiohttp server for real requests."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp import web
from relay_support import free_port

from relay.accesslog import ACCESS_LOG, RedactingAccessLogger, redact


def test_redact() -> None:
    assert redact("GET /n?token=abc.def HTTP/1.1") == "GET /n?token=[redacted] HTTP/1.1"
    assert redact("/n?a=1&TOKEN=x&b=2;token=y") == "/n?a=1&TOKEN=[redacted]&b=2;token=[redacted]"
    assert redact("/n?mytoken=x") == "/n?mytoken=x"  # another parameter
    assert redact("nothing here") == "nothing here"


async def test_logged_lines_hold_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ofrep/v1/notices", ok)
    fmt = '"%r" %s "%{Authorization}i" "%{X-API-Key}i" "%{Referer}i" "%{User-Agent}i"'
    runner = web.AppRunner(
        app, access_log=ACCESS_LOG, access_log_class=RedactingAccessLogger, access_log_format=fmt
    )
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    caplog.set_level(logging.INFO, logger=ACCESS_LOG.name)
    try:
        async with aiohttp.ClientSession() as session:
            headers = {
                "Authorization": "Bearer sdk-secret",
                "X-API-Key": "mob-secret",
                "Referer": "http://page/?token=in-referer",
            }
            url = f"http://127.0.0.1:{port}/ofrep/v1/notices?token=tok-secret"
            async with session.get(url, headers=headers) as response:
                assert response.status == 200
            async with session.get(url.replace("tok-secret", "t2")) as response:
                assert response.status == 200
    finally:
        await runner.cleanup()
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOG.name]
    assert len(lines) == 2
    text = "\n".join(lines)
    for secret in ("sdk-secret", "mob-secret", "tok-secret", "in-referer", "t2"):
        assert secret not in text
    assert lines[0].startswith('"GET /ofrep/v1/notices?token=[redacted] HTTP/1.1" 200')
    assert '"[redacted]" "[redacted]" "http://page/?token=[redacted]"' in lines[0]
    assert '"-" "-" "-"' in lines[1]  # absent headers stay "-"
