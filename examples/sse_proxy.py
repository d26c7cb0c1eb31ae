"""Serve examples/eventsource.html and proxy its stream to a relay, adding the SDK key.

A browser's EventSource cannot set the ``Authorization`` header that a relay's ``/all``
stream requires, and a server-side SDK key must never be handed to a browser anyway. This
small proxy keeps the key on the server: the page asks the proxy for ``/all`` and the proxy
opens the relay's stream with the key, passing the browser's ``Last-Event-ID`` along so a
reconnect resumes where it left off. Run ``flagstream dev`` first, then::

    python examples/sse_proxy.py --sdk-key sdk-...
    # open http://127.0.0.1:8040/ and toggle a flag with the printed `flagstream admin` line

Requires only aiohttp (a flagstream dependency).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

PAGE = Path(__file__).with_name("eventsource.html")
# Headers worth passing between the relay and the browser in each direction.
REQUEST_HEADERS = ("Last-Event-ID",)
RESPONSE_HEADERS = ("Content-Type", "Cache-Control", "Retry-After")
SESSION = web.AppKey("session", aiohttp.ClientSession)


def build_app(relay: str, sdk_key: str) -> web.Application:
    app = web.Application()
    relay = relay.rstrip("/")

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE)

    async def stream(request: web.Request) -> web.StreamResponse:
        headers = {"Authorization": sdk_key}
        headers.update({h: request.headers[h] for h in REQUEST_HEADERS if h in request.headers})
        session = request.app[SESSION]
        try:
            upstream = await session.get(f"{relay}/all", headers=headers)
        except aiohttp.ClientError as exc:
            # 503 makes the page show an error; the browser retries on its own schedule.
            raise web.HTTPServiceUnavailable(text=f"relay unreachable: {exc}") from None
        async with upstream:
            response = web.StreamResponse(status=upstream.status)
            for name in RESPONSE_HEADERS:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            # Forward bytes as they arrive: SSE frames must not wait for a buffer to fill.
            # Either side may go away at any time: the browser (page closed) or the relay
            # (restart); the browser's EventSource reconnects with Last-Event-ID by itself.
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            return response

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        # No total timeout: a stream is meant to stay open for hours.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/", page)
    app.router.add_get("/all", stream)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--relay",
        default=os.environ.get("FLAGSTREAM_RELAY_URL", "http://127.0.0.1:8030"),
        help="base URL of a flagstream relay (default: %(default)s)",
    )
    parser.add_argument(
        "--sdk-key",
        default=os.environ.get("FLAGSTREAM_SDK_KEY"),
        help="server-side SDK key of the environment (or FLAGSTREAM_SDK_KEY)",
    )
    parser.add_argument("--port", type=int, default=8040, help="port to serve the page on")
    args = parser.parse_args(argv)
    if not args.sdk_key:
        parser.error("an SDK key is needed: --sdk-key sdk-... (flagstream dev prints one)")
    print(f"open http://127.0.0.1:{args.port}/  (Ctrl-C to stop)", flush=True)
    web.run_app(build_app(args.relay, args.sdk_key), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
