"""Governance in ``flagstream dev`` (the embedded SQLite store): policy, change requests,
scheduled changes, triggers and rollout plans work there and survive a restart; a change
that came due while the server was down is applied by the next start's scheduler (under its
forwarder's lease of the data directory), late, and says how late."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_dev_persistence import api

from flagstream import dev
from flagstream.dev import DEMO_ENV, TOGGLE_FLAG

ENV = f"/environments/{DEMO_ENV}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _until(
    session: aiohttp.ClientSession, url: str, token: str, path: str, done: Any
) -> dict[str, Any]:
    """GET ``path`` until ``done(answer)`` (the scheduler works in the background)."""
    deadline = time.monotonic() + 60
    while True:
        shown = await api(session, url, token, "GET", path)
        if done(shown):
            return dict(shown)
        assert time.monotonic() < deadline, shown
        await asyncio.sleep(0.1)


async def test_governance_is_kept_in_the_data_directory_and_runs_after_a_restart(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    data = tmp_path / "data"
    # The first server looks for due work only when told (a minute apart otherwise), so the
    # scheduled change below is still due when it stops, whatever the machine's load.
    async with dev.running(
        port=0, data_dir=data, publisher_overrides={"scheduler_interval": 60}
    ) as first:
        url, admin = first.url, first.admin_token
        tokens = {}
        for name, scopes in (
            ("alice", ["write"]),
            ("bob", ["write"]),
            ("oncall", ["write", "bypass-approvals"]),
        ):
            created = await api(
                session,
                url,
                admin,
                "POST",
                "/tokens",
                {"name": name, "scopes": scopes, "environments": [DEMO_ENV]},
                expect=201,
            )
            tokens[name] = created["token"]
        policy = await api(session, url, admin, "PATCH", ENV, {"requiredApprovals": 1})
        assert policy["requiredApprovals"] == 1
        await api(
            session,
            url,
            tokens["alice"],
            "PATCH",
            f"{ENV}/flags/{TOGGLE_FLAG}",
            {"on": True},
            expect=403,
        )
        due = int(time.time() * 1000) + 6000
        cr = await api(
            session,
            url,
            tokens["alice"],
            "POST",
            f"{ENV}/change-requests",
            {
                "resource": f"flags/{TOGGLE_FLAG}",
                "baseVersion": 1,
                "change": {"mergePatch": {"on": True}},
                "executeAt": due,
            },
            expect=201,
        )
        approved = await api(
            session,
            url,
            tokens["bob"],
            "POST",
            f"{ENV}/change-requests/{cr['id']}/reviews",
            {"decision": "approve"},
        )
        assert (approved["reviewStatus"], approved["status"]) == ("approved", "scheduled")
        trigger = await api(
            session,
            url,
            tokens["oncall"],
            "POST",
            f"{ENV}/flags/dark-mode/triggers",
            {"action": "off"},
            expect=201,
        )
        plan = await api(
            session,
            url,
            tokens["oncall"],
            "PUT",
            f"{ENV}/flags/banner-text/rollout-plan",
            {
                "toVariation": 1,
                "steps": [
                    {"percent": 10, "holdSeconds": 3600},
                    {"percent": 100, "holdSeconds": 0},
                ],
            },
            expect=201,
        )
        assert plan["status"] == "active"

    async with dev.running(port=0, data_dir=data) as second:
        url = second.url
        assert second.admin_token == admin
        shown = await api(session, url, admin, "GET", ENV)
        assert shown["requiredApprovals"] == 1
        await api(
            session,
            url,
            tokens["alice"],
            "PATCH",
            f"{ENV}/flags/{TOGGLE_FLAG}",
            {"on": True},
            expect=403,
        )
        applied = await _until(
            session,
            url,
            admin,
            f"{ENV}/change-requests/{cr['id']}",
            lambda shown: shown["status"] == "applied",
        )
        assert applied["appliedBy"] == "scheduler" and applied["appliedVersion"] == 2
        assert applied["lateMs"] is not None and applied["lateMs"] >= 0
        flag = await api(session, url, admin, "GET", f"{ENV}/flags/{TOGGLE_FLAG}")
        assert (flag["on"], flag["version"]) == (True, 2)
        entry = (
            await api(session, url, admin, "GET", f"{ENV}/audit?requestId={cr['id']}&limit=1")
        )["items"][0]
        assert (entry["action"], entry["appliedBy"], entry["approvedBy"]) == (
            "patch",
            "scheduler",
            ["bob"],
        )

        # The trigger's secret was kept (hashed) in the data directory: its URL still works.
        secret = trigger["url"].rsplit("/", 1)[1]
        async with session.post(f"{url}/api/v1/triggers/{secret}") as r:
            fired = await r.json()
            assert r.status == 200 and fired["changed"] is True, fired
        dark = await api(session, url, admin, "GET", f"{ENV}/flags/dark-mode")
        assert dark["on"] is False

        # The plan is kept too: its first step written (by either server), the next one an
        # hour after it.
        kept = await _until(
            session,
            url,
            admin,
            f"{ENV}/flags/banner-text/rollout-plan",
            lambda shown: shown["currentStep"] == 0,
        )
        assert (kept["id"], kept["status"], kept["currentPercent"]) == (plan["id"], "active", 10)
        assert kept["nextStepAt"] > int(time.time() * 1000) + 3000 * 1000
