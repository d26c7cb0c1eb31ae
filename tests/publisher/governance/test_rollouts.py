"""Progressive rollouts over real HTTP: steps written by the scheduler as versioned, audited
writes; paused by a manual edit (never overwriting it); pause, resume, revert, stop;
approvals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gov_support import BASE, Gov, flag_body, wait_until

from publisher.governance import scheduler as scheduler_module

PLAN = f"{BASE}/flags/f1/rollout-plan"


async def plan_status(gov: Gov, status: str) -> bool:
    return bool((await gov.ok("GET", PLAN))["status"] == status)


async def at_step(gov: Gov, step: int) -> bool:
    return bool((await gov.ok("GET", PLAN))["currentStep"] >= step)


def weights(flag: dict[str, Any]) -> list[int]:
    return [v["weight"] for v in flag["fallthrough"]["rollout"]["variations"]]


async def test_a_plan_advances_step_by_step_to_completion(gov: Gov) -> None:
    plan = await gov.ok(
        "PUT",
        PLAN,
        {
            "toVariation": 1,
            "steps": [
                {"percent": 10, "holdSeconds": 0},
                {"percent": 50, "holdSeconds": 1},
                {"percent": 100, "holdSeconds": 0},
            ],
            "comment": "ship it",
        },
        as_="alice",
    )
    assert (plan["status"], plan["fromVariation"], plan["currentStep"]) == ("active", 0, -1)
    assert plan["before"] == {"variation": 0} and plan["flagVersion"] == 1
    await wait_until(lambda: plan_status(gov, "completed"), within=15)
    flag = await gov.flag()
    assert weights(flag) == [0, 100000] and flag["version"] == 4
    steps = [e for e in reversed(await gov.audit(requestId=plan["id"])) if e["kind"] == "flag"]
    assert [(e["version"], e["rolloutStep"], e["percent"]) for e in steps] == [
        (2, 0, 10),
        (3, 1, 50),
        (4, 2, 100),
    ]
    # Each step's weights are read from what its write stored, not from the live flag: the
    # first step holds 0 s, so the next one may already have replaced it by any later read.
    assert [weights(e["after"]) for e in steps] == [[90000, 10000], [50000, 50000], [0, 100000]]
    assert all(e["action"] == "patch" and e["actor"] == "alice" for e in steps)
    assert steps[2]["timeMs"] - steps[1]["timeMs"] >= 1000  # the 50% step's hold
    listed = await gov.ok("GET", f"{BASE}/rollout-plans", as_="reader")
    assert [p["id"] for p in listed["items"]] == [plan["id"]]


async def test_a_manual_edit_pauses_the_plan_and_is_never_overwritten(
    gov: Gov, monkeypatch: pytest.MonkeyPatch
) -> None:
    await gov.ok(
        "PUT",
        PLAN,
        {
            "toVariation": 1,
            "steps": [{"percent": 20, "holdSeconds": 3600}, {"percent": 100, "holdSeconds": 0}],
        },
        as_="alice",
    )
    await wait_until(lambda: at_step(gov, 0), within=10)
    human = await gov.ok(
        "PATCH", f"{BASE}/flags/f1", {"fallthrough": {"variation": 0, "rollout": None}}, as_="bob"
    )
    # The next step falls due only now, after the manual edit: the scheduler's clock moves an
    # hour on (with a hold of a few seconds, a loaded machine could let the step be written
    # before the edit, completing the plan).
    later = scheduler_module.now_ms() + 3600 * 1000
    monkeypatch.setattr(scheduler_module, "now_ms", lambda: later)
    gov.governance.scheduler.kick()
    await wait_until(lambda: plan_status(gov, "paused"), within=10)
    paused = await gov.ok("GET", PLAN)
    assert "changed by another writer" in paused["pausedReason"]
    await asyncio.sleep(0.5)
    flag = await gov.flag()
    assert flag["version"] == human["version"] and flag["fallthrough"] == {"variation": 0}
    entry = (await gov.audit(requestId=paused["id"]))[0]
    assert (entry["action"], entry["actor"]) == ("pause-rollout-plan", "scheduler")

    resumed = await gov.ok("POST", f"{PLAN}/resume", {"comment": "go on"}, as_="carol")
    assert resumed["status"] == "active" and resumed["flagVersion"] == human["version"]
    await wait_until(lambda: plan_status(gov, "completed"), within=10)
    assert weights(await gov.flag()) == [0, 100000]


async def test_pause_resume_revert_and_stop(gov: Gov) -> None:
    before = await gov.flag()
    await gov.ok(
        "PUT",
        PLAN,
        {
            "toVariation": 1,
            "steps": [{"percent": 5, "holdSeconds": 3600}, {"percent": 100, "holdSeconds": 0}],
        },
        as_="alice",
    )
    await wait_until(lambda: at_step(gov, 0), within=10)
    paused = await gov.ok("POST", f"{PLAN}/pause", as_="bob")
    assert (paused["status"], paused["nextStepAt"] is not None) == ("paused", True)
    status, problem = await gov.call("POST", f"{PLAN}/pause", as_="bob")
    assert status == 409 and "only a plan that is active" in problem["detail"]
    status, problem = await gov.call(
        "PUT", PLAN, {"toVariation": 1, "steps": [{"percent": 5, "holdSeconds": 0}]}, as_="bob"
    )
    assert status == 409 and "unfinished rollout plan" in problem["detail"]

    reverted = await gov.ok("POST", f"{PLAN}/revert", {"comment": "bad metrics"}, as_="bob")
    assert reverted["rolloutPlan"]["status"] == "reverted"
    assert reverted["item"]["fallthrough"] == before["fallthrough"]
    assert reverted["delivery"] == "acknowledged"
    entry = (await gov.audit())[0]
    assert (entry["rollout"], entry["comment"], entry["actor"]) == ("revert", "bad metrics", "bob")
    status, _ = await gov.call("POST", f"{PLAN}/resume", as_="bob")
    assert status == 409

    # a new plan can start; stopping it leaves the flag as it is
    await gov.ok(
        "PUT",
        PLAN,
        {
            "toVariation": 1,
            "steps": [{"percent": 30, "holdSeconds": 3600}, {"percent": 60, "holdSeconds": 0}],
        },
        as_="alice",
    )
    await wait_until(lambda: at_step(gov, 0), within=10)
    version = (await gov.flag())["version"]
    stopped = await gov.ok("DELETE", PLAN, as_="alice")
    assert stopped["status"] == "cancelled"
    await asyncio.sleep(0.3)
    assert (await gov.flag())["version"] == version and weights(await gov.flag()) == [70000, 30000]


async def test_a_plan_on_a_rule_and_with_bucketing_kept(gov: Gov) -> None:
    rules = [
        {
            "id": "beta",
            "clauses": [{"attribute": "beta", "op": "in", "values": [True]}],
            "rollout": {"variations": [{"variation": 1, "weight": 100000}], "bucketBy": "org"},
        }
    ]
    await gov.ok("PUT", f"{BASE}/flags/f1", flag_body("f1", rules=rules))
    status, problem = await gov.call(
        "PUT",
        PLAN,
        {
            "toVariation": 0,
            "target": {"rule": "beta"},
            "steps": [{"percent": 50, "holdSeconds": 0}],
        },
    )
    assert status == 422 and "fromVariation: required" in problem["detail"]
    plan = await gov.ok(
        "PUT",
        PLAN,
        {
            "fromVariation": 1,
            "toVariation": 0,
            "target": {"rule": "beta"},
            "steps": [{"percent": 50, "holdSeconds": 0}],
        },
    )
    await wait_until(lambda: plan_status(gov, "completed"), within=10)
    rule = (await gov.flag())["rules"][0]
    assert rule["rollout"]["bucketBy"] == "org"
    assert [v["weight"] for v in rule["rollout"]["variations"]] == [50000, 50000]
    reverted = await gov.ok("POST", f"{PLAN}/revert")
    assert reverted["item"]["rules"][0]["rollout"] == rules[0]["rollout"]
    assert plan["target"] == {"rule": "beta"}


async def test_plans_await_approval_where_changes_do(gov: Gov) -> None:
    await gov.policy(requiredApprovals=1)
    plan = await gov.ok(
        "PUT", PLAN, {"toVariation": 1, "steps": [{"percent": 100, "holdSeconds": 0}]}, as_="alice"
    )
    assert (plan["status"], plan["reviewStatus"]) == ("pending", "pending")
    await asyncio.sleep(0.4)
    assert (await gov.flag())["version"] == 1
    status, _ = await gov.call("POST", f"{PLAN}/reviews", {"decision": "approve"}, as_="alice")
    assert status == 403
    approved = await gov.ok("POST", f"{PLAN}/reviews", {"decision": "approve"}, as_="bob")
    assert (approved["status"], approved["reviewStatus"]) == ("active", "approved")
    await wait_until(lambda: plan_status(gov, "completed"), within=10)
    # declined: cancelled
    await gov.ok(
        "PUT",
        PLAN,
        {"toVariation": 0, "fromVariation": 1, "steps": [{"percent": 100, "holdSeconds": 0}]},
        as_="alice",
    )
    declined = await gov.ok("POST", f"{PLAN}/reviews", {"decision": "decline"}, as_="carol")
    assert (declined["status"], declined["reviewStatus"]) == ("cancelled", "declined")
    bypassed = await gov.ok(
        "PUT",
        PLAN,
        {"toVariation": 0, "fromVariation": 1, "steps": [{"percent": 100, "holdSeconds": 0}]},
        as_="breakglass",
    )
    assert bypassed["status"] == "active"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"steps": [{"percent": 10, "holdSeconds": 0}]}, 422, "toVariation"),
        (
            {"toVariation": 2, "steps": [{"percent": 10, "holdSeconds": 0}]},
            422,
            "toVariation: must be a variation index from 0 to 1",
        ),
        ({"toVariation": 0, "steps": [{"percent": 10, "holdSeconds": 0}]}, 422, "must differ"),
        ({"toVariation": 1, "steps": []}, 422, "steps"),
        (
            {"toVariation": 1, "steps": [{"percent": 10, "holdSeconds": 0}], "target": "rules"},
            422,
            "target",
        ),
        (
            {
                "toVariation": 1,
                "steps": [{"percent": 10, "holdSeconds": 0}],
                "target": {"rule": "x"},
            },
            409,
            "no rule with id 'x'",
        ),
        (
            {"toVariation": 1, "steps": [{"percent": 10, "holdSeconds": 0}], "startAt": "soon"},
            422,
            "startAt" if False else "executeAt",
        ),
        (
            {"toVariation": 1, "steps": [{"percent": 10, "holdSeconds": 0}], "extra": 1},
            422,
            "unknown field",
        ),
        ([], 400, "JSON object"),
    ],
)
async def test_bad_plans_write_nothing(
    memory_gov: Gov, body: object, status: int, fragment: str
) -> None:
    before = await memory_gov.state()
    got, problem = await memory_gov.call("PUT", PLAN, body, as_="alice")
    assert got == status and fragment in problem["detail"], problem
    assert await memory_gov.state() == before


async def test_plan_routes_on_missing_things(memory_gov: Gov) -> None:
    gov = memory_gov
    status, problem = await gov.call("GET", PLAN)
    assert status == 404 and "has no rollout plan" in problem["detail"]
    status, _ = await gov.call("POST", f"{PLAN}/pause")
    assert status == 404
    status, _ = await gov.call(
        "PUT",
        f"{BASE}/flags/ghost/rollout-plan",
        {"toVariation": 1, "steps": [{"percent": 1, "holdSeconds": 0}]},
    )
    assert status == 404
    status, problem = await gov.call("POST", f"{PLAN}/pause", {"why": 1})
    assert status == 422
