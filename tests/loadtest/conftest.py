"""Fixtures of the loadtest tests: a tiny SSE server (both body framings)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from loadtest_support import TinySSEServer


@pytest.fixture(params=["chunked", "close"])
async def sse_server(request: pytest.FixtureRequest) -> AsyncIterator[TinySSEServer]:
    server = TinySSEServer(request.param)
    await server.start()
    yield server
    await server.close()
