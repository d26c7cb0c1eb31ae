"""Scheduled changes: applied at their time by the lease holder, exactly once, late after an
outage (and saying how late), held back or failed when their checks fail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gov_support import BASE, CR, ENV, Gov, flag_body, setup_gov, wait_until
from publisher_support import ApiFactory

from publisher.app import FORWARDER
from publisher.redis_store import RedisStore


def now_ms() -> int:
    return int(time.time() * 1000)


async def status_of(gov: Gov, cr: dict[str, Any]) -> str:
    return str((await gov.ok("GET", f"{CR}/{cr['id']}"))["status"])


async def has_status(gov: Gov, cr: dict[str, Any], status: str) -> bool:
    return await status_of(gov, cr) == status


@contextlib.asynccontextmanager
async def scheduler_held(gov: Gov) -> AsyncIterator[None]:
    """The scheduler stopped while the test sets a change up, started again afterwards: what
    has to happen before the change's time then does, however slow the machine (a fixed lead
    of a second or two is not enough on a loaded CI machine)."""
    scheduler = gov.governance.scheduler
    await scheduler.stop()
    try:
        yield
    finally:
        scheduler.start()


async def past(at: int) -> None:
    """Sleep until the wall clock is past ``at`` (epoch ms; the scheduler's clock too)."""
    while now_ms() <= at:  # noqa: ASYNC110 (a clock to wait for, not an event)
        await asyncio.sleep(max(0.01, (at - now_ms() + 1) / 1000))


async def full_round(gov: Gov) -> None:
    """Wait until a scheduler round that began after this call has finished."""
    scheduler = gov.governance.scheduler
    start = scheduler.rounds
    await wait_until(lambda: scheduler.rounds >= start + 2, within=10)


async def test_a_direct_schedule_is_applied_at_its_time_by_the_scheduler(gov: Gov) -> None:
    at = now_ms() + 400
    cr = await gov.create_cr(
        {"resource": "flags/f1", "change": {"mergePatch": {"on": False}}, "executeAt": at}
    )
    assert (cr["status"], cr["reviewStatus"], cr["executeAt"]) == ("scheduled", "approved", at)
    await wait_until(lambda: has_status(gov, cr, "applied"), within=10)
    done = await gov.ok("GET", f"{CR}/{cr['id']}")
    assert (done["appliedBy"], done["appliedVersion"]) == ("scheduler", 2)
    assert done["appliedAt"] >= at and done["lateMs"] >= 0
    flag = await gov.flag()
    assert (flag["on"], flag["version"]) == (False, 2)
    entry = (await gov.audit(requestId=cr["id"]))[0]
    assert (entry["action"], entry["actor"], entry["appliedBy"]) == ("patch", "alice", "scheduler")
    assert entry["timeMs"] >= at and entry["lateMs"] == done["lateMs"]


async def test_rfc3339_execute_at(gov: Gov) -> None:
    from datetime import UTC, datetime, timedelta

    when = datetime.now(UTC) + timedelta(hours=2)
    cr = await gov.create_cr(
        {
            "resource": "flags/f1",
            "change": {"mergePatch": {"on": False}},
            "executeAt": when.isoformat().replace("+00:00", "Z"),
        }
    )
    assert abs(cr["executeAt"] - int(when.timestamp() * 1000)) <= 1
    assert cr["status"] == "scheduled"


async def test_a_scheduled_change_waits_for_its_approvals(gov: Gov) -> None:
    await gov.policy(requiredApprovals=1)
    cr = await gov.create_cr(
        {
            "resource": "flags/f1",
            "change": {"mergePatch": {"on": False}},
            "executeAt": now_ms() + 100,
        }
    )
    assert cr["status"] == "pending"
    await asyncio.sleep(0.5)
    assert await status_of(gov, cr) == "pending" and (await gov.flag())["on"] is True
    approved = await gov.ok("POST", f"{CR}/{cr['id']}/reviews", {"decision": "approve"}, as_="bob")
    assert approved["status"] == "scheduled"
    await wait_until(lambda: has_status(gov, cr, "applied"), within=10)
    done = await gov.ok("GET", f"{CR}/{cr['id']}")
    assert done["lateMs"] >= 300  # approved after its time: applied at once, late


async def test_cancelled_and_declined_schedules_are_not_applied(gov: Gov) -> None:
    await gov.policy(requiredApprovals=1)
    at = now_ms() + 300
    body = {"resource": "flags/f1", "change": {"mergePatch": {"on": False}}, "executeAt": at}
    async with scheduler_held(gov):  # the reviews and the cancel come before it works
        one, two = await gov.create_cr(body), await gov.create_cr(body)
        for cr in (one, two):
            await gov.ok("POST", f"{CR}/{cr['id']}/reviews", {"decision": "approve"}, as_="bob")
        await gov.ok("POST", f"{CR}/{one['id']}/cancel", as_="alice")
        declined = await gov.ok(
            "POST", f"{CR}/{two['id']}/reviews", {"decision": "decline"}, as_="carol"
        )
        assert declined["status"] == "pending"
        await past(at)
    await full_round(gov)  # a whole round after their time
    assert (await gov.flag())["version"] == 1
    assert [await status_of(gov, c) for c in (one, two)] == ["cancelled", "pending"]


async def test_a_raised_requirement_unschedules_a_due_change(gov: Gov) -> None:
    await gov.policy(requiredApprovals=1)
    async with scheduler_held(gov):  # approved and the requirement raised before its time
        cr = await gov.create_cr(
            {
                "resource": "flags/f1",
                "change": {"mergePatch": {"on": False}},
                "executeAt": now_ms() + 300,
            }
        )
        await gov.ok("POST", f"{CR}/{cr['id']}/reviews", {"decision": "approve"}, as_="bob")
        await gov.policy(requiredApprovals=2)
    await wait_until(lambda: gov.audit(requestId=cr["id"]), within=5)
    await wait_until(lambda: has_status(gov, cr, "pending"), within=10)
    held = await gov.ok("GET", f"{CR}/{cr['id']}")
    assert (held["reviewStatus"], held["approvals"]) == ("pending", 1)
    entry = (await gov.audit(requestId=cr["id"]))[0]
    assert entry["action"] == "unschedule-change-request" and "requires 2" in entry["comment"]
    assert (await gov.flag())["version"] == 1
    # a second approval schedules it again; it is overdue, so it is applied at once
    await gov.ok("POST", f"{CR}/{cr['id']}/reviews", {"decision": "approve"}, as_="carol")
    await wait_until(lambda: has_status(gov, cr, "applied"), within=10)


async def test_a_scheduled_change_on_a_moved_base_fails_and_writes_nothing(gov: Gov) -> None:
    async with scheduler_held(gov):  # the base moves before its time
        cr = await gov.create_cr(
            {
                "resource": "flags/f1",
                "baseVersion": 1,
                "change": {"mergePatch": {"on": False}},
                "executeAt": now_ms() + 300,
            }
        )
        await gov.ok("PATCH", f"{BASE}/flags/f1", {"salt": "moved"}, as_="bob")
    await wait_until(lambda: has_status(gov, cr, "failed"), within=10)
    failed = await gov.ok("GET", f"{CR}/{cr['id']}")
    assert failed["failure"]["currentVersion"] == 2 and failed["failure"]["reason"] == "conflict"
    assert (await gov.flag())["version"] == 2 and (await gov.flag())["on"] is True


async def _two_publishers(make_api: ApiFactory, redis_url: str, prefix: str) -> list[Gov]:
    stores = [RedisStore(redis_url, prefix=prefix) for _ in range(2)]
    first = await setup_gov(await make_api(stores[0], scheduler_interval=0.05))
    second = Gov(await make_api(stores[1], scheduler_interval=0.05), dict(first.tokens))
    return [first, second]


@pytest.mark.integration
async def test_two_publishers_apply_every_due_change_once_in_creation_order(
    make_api: ApiFactory, redis_url: str, unique_name: str
) -> None:
    govs = await _two_publishers(make_api, redis_url, f"{unique_name}:")
    try:
        keys = [f"g{i}" for i in range(4)]
        for key in keys:
            await govs[0].ok("PUT", f"{BASE}/flags/{key}", flag_body(key))
        at = now_ms() + 3000
        created = []
        for n in range(10):
            for key in keys:
                body = {
                    "resource": f"flags/{key}",
                    "change": {"mergePatch": {"salt": f"step-{n}"}},
                    "executeAt": at,
                }
                created.append(await govs[n % 2].create_cr(body))

        async def all_applied() -> bool:
            items = (await govs[1].ok("GET", f"{CR}?status=applied"))["items"]
            return len(items) == len(created)

        await wait_until(all_applied, within=30, interval=0.1)
        leaders = [g.api.app[FORWARDER].is_leader for g in govs]
        assert sorted(leaders) == [False, True]
        entries = [e for e in await govs[0].audit() if e.get("appliedBy") == "scheduler"]
        assert Counter(e["requestId"] for e in entries) == Counter(c["id"] for c in created)
        for key in keys:
            writes = sorted((e for e in entries if e["key"] == key), key=lambda e: e["version"])
            assert [e["version"] for e in writes] == list(range(2, 12))
            assert [e["after"]["salt"] for e in writes] == [f"step-{n}" for n in range(10)]
            assert all(e["timeMs"] >= at for e in writes)
    finally:
        await govs[0].api.store.delete_all()  # type: ignore[attr-defined]
        for g in govs:
            await g.api.store.close()


@pytest.mark.integration
async def test_a_change_due_while_no_publisher_runs_is_applied_late_on_recovery(
    make_api: ApiFactory, redis_url: str, unique_name: str
) -> None:
    first_store = RedisStore(redis_url, prefix=f"{unique_name}:")
    first = await setup_gov(await make_api(first_store, scheduler_interval=0.05))
    # Its scheduler stops first, so however long the publisher takes to stop (it had to be
    # gone within 2 s before: too tight on a loaded machine), it never applies the change.
    await first.governance.scheduler.stop()
    at = now_ms() + 500
    cr = await first.create_cr(
        {"resource": "flags/f1", "change": {"mergePatch": {"on": False}}, "executeAt": at}
    )
    await first.api.client.close()  # the only publisher stops (and releases the lease)
    await past(at + 1000)
    assert json.loads(await first_store.get_item(ENV, "flag", "f1") or b"")["version"] == 1
    await first_store.close()

    second_store = RedisStore(redis_url, prefix=f"{unique_name}:")
    try:
        second = Gov(await make_api(second_store, scheduler_interval=0.05), first.tokens)
        await wait_until(lambda: has_status(second, cr, "applied"), within=15)
        done = await second.ok("GET", f"{CR}/{cr['id']}")
        assert done["lateMs"] >= 1000 and done["appliedAt"] - at == done["lateMs"]
        entry = (await second.audit(requestId=cr["id"]))[0]
        assert entry["lateMs"] == done["lateMs"]
    finally:
        await second_store.delete_all()
        await second_store.close()
