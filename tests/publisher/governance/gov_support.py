"""Helpers of the governance tests: a publisher app with an environment, tokens, snapshots."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from publisher_support import ADMIN, Api

from publisher.governance.install import GOVERNANCE, Governance
from publisher.governance.store import COLLECTIONS

ENV = "prod"
BASE = f"/api/v1/environments/{ENV}"
CR = f"{BASE}/change-requests"


def flag_body(key: str, *, on: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "on": on,
        "variations": [True, False],
        "fallthrough": {"variation": 0},
        "offVariation": 1,
        **extra,
    }


@dataclass
class Gov:
    api: Api
    tokens: dict[str, str]  # name -> secret

    @property
    def governance(self) -> Governance:
        return self.api.app[GOVERNANCE]

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        as_: str = "admin",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        token = ADMIN if as_ == "admin" else self.tokens[as_]
        status, parsed, resp_headers = await self.api.call(
            method, path, body, token=token, headers=headers, raw=raw
        )
        if status >= 400:
            assert resp_headers["Content-Type"].startswith("application/problem+json"), parsed
            assert parsed["detail"], parsed
        return status, parsed

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, parsed = await self.call(method, path, body, **kw)
        assert status in (200, 201, 204), (status, parsed)
        return parsed

    async def token(self, name: str, *scopes: str, envs: Any = "*") -> str:
        body = await self.ok(
            "POST", "/api/v1/tokens", {"name": name, "scopes": list(scopes), "environments": envs}
        )
        self.tokens[name] = body["token"]
        return str(body["token"])

    async def policy(self, **fields: Any) -> dict[str, Any]:
        return dict(await self.ok("PATCH", BASE, fields))

    async def flag(self, key: str = "f1") -> dict[str, Any]:
        return dict(await self.ok("GET", f"{BASE}/flags/{key}"))

    async def audit(self, **query: Any) -> list[dict[str, Any]]:
        q = "&".join(f"{k}={v}" for k, v in {"limit": 1000, **query}.items())
        return list((await self.ok("GET", f"{BASE}/audit?{q}"))["items"])

    async def state(self) -> Any:
        """Everything a request could change: items, audit log, governance records."""
        store = self.api.store
        gov_store = self.governance.core.store
        return (
            await store.list_items(ENV, "flag"),
            await store.list_items(ENV, "segment"),
            await store.read_audit(ENV, 10_000),
            [sorted(await gov_store.list_records(c, ENV)) for c in COLLECTIONS],
            await store.list_environments(),
        )

    async def create_cr(self, body: dict[str, Any], *, as_: str = "alice") -> dict[str, Any]:
        status, created = await self.call("POST", CR, body, as_=as_)
        assert status == 201, created
        return dict(created)


async def setup_gov(api: Api) -> Gov:
    gov = Gov(api, {})
    await gov.ok("POST", "/api/v1/environments", {"key": ENV, "name": "Production"})
    await gov.ok("PUT", f"{BASE}/flags/f1", flag_body("f1"))
    await gov.ok("PUT", f"{BASE}/segments/s1", {"key": "s1", "included": ["u1"]})
    for name in ("alice", "bob", "carol"):
        await gov.token(name, "write", envs=[ENV])
    await gov.token("reader", "read", envs=[ENV])
    await gov.token("breakglass", "write", "bypass-approvals", envs=[ENV])
    return gov


async def wait_until(predicate: Any, within: float = 20.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


def entry_json(raw: bytes) -> dict[str, Any]:
    return dict(json.loads(raw))
