"""A revoked token stops working at once on the instance that revoked it, and within
``FLAGSTREAM_PUBLISHER_TOKEN_CACHE_TTL`` on another instance (two apps on one Redis)."""

from __future__ import annotations

import asyncio

import pytest
from publisher_support import ApiFactory

from flagstream.memlog import MemoryLog
from publisher.redis_store import RedisStore

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("ttl", [0.3, 0.0])
async def test_revocation_is_bounded_by_the_cache_ttl(
    make_api: ApiFactory, redis_store: RedisStore, ttl: float
) -> None:
    log = MemoryLog(3)
    a = await make_api(redis_store, log, token_cache_ttl=ttl)
    b = await make_api(redis_store, log, token_cache_ttl=ttl, topic=a.topic)
    _, created, _ = await a.call("POST", "/api/v1/tokens", {"name": "ci", "scopes": ["read"]})
    token = created["token"]
    for api in (a, b):  # both instances now know (and may remember) the token
        status, _, _ = await api.call("GET", "/api/v1/environments", token=token)
        assert status == 200
    status, _, _ = await a.call("DELETE", f"/api/v1/tokens/{created['id']}")
    assert status == 204
    status, body, _ = await a.call("GET", "/api/v1/environments", token=token)
    assert status == 401, body  # the revoking instance: at once
    await asyncio.sleep(ttl + 0.05)
    status, _, _ = await b.call("GET", "/api/v1/environments", token=token)
    assert status == 401  # ... and no longer after the ttl
