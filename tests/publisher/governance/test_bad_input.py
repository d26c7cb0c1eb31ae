"""Bad input on every governance route: a clear 4xx problem+json, and nothing written."""

from __future__ import annotations

import time
from typing import Any

import pytest
from gov_support import BASE, CR, Gov, flag_body

TRIGGERS = f"{BASE}/flags/f1/triggers"
PLAN = f"{BASE}/flags/f1/rollout-plan"
PATCH_OFF = {"mergePatch": {"on": False}}


def cr(**fields: Any) -> dict[str, Any]:
    return {"resource": "flags/f1", "change": PATCH_OFF, **fields}


CREATE_CASES: list[tuple[Any, int, str]] = [
    ([], 400, "must be a JSON object"),
    ({"change": PATCH_OFF}, 422, "needs resource and change"),
    ({"resource": "flags/f1"}, 422, "needs resource and change"),
    (cr(resource="flag/f1"), 422, 'resource: must be "flags/KEY"'),
    (cr(resource="flags"), 422, "resource"),
    (cr(resource="flags/bad key"), 400, "resource: must be 1..256 characters"),
    (cr(resource=7), 422, "resource"),
    (cr(baseVersion=-1), 422, "baseVersion"),
    (cr(baseVersion="1"), 422, "baseVersion"),
    (cr(baseVersion=True), 422, "baseVersion"),
    (cr(baseVersion=5), 409, "baseVersion is 5 but flag 'f1' is at version 1"),
    (cr(change={}), 422, "exactly one of"),
    (cr(change={"mergePatch": {}, "delete": True}), 422, "exactly one of"),
    (cr(change={"mergePatch": {}, "x": 1}), 422, "exactly one of"),
    (cr(change={"mergePatch": []}), 422, "change.mergePatch: must be a JSON object"),
    (cr(change={"item": "x"}), 422, "change.item: must be a JSON object"),
    (cr(change={"delete": False}), 422, "change.delete: must be true"),
    (cr(change="off"), 422, "change: must be an object"),
    (cr(change={"mergePatch": {"variations": "x"}}), 422, "invalid flag: variations"),
    (cr(change={"mergePatch": {"deleted": True}}), 422, 'use a "delete" change'),
    (cr(change={"mergePatch": {"key": "other"}}), 422, "cannot change an item's key"),
    (cr(change={"item": {"key": "f1", "on": "yes"}}), 422, "invalid flag"),
    (cr(change={"item": {**flag_body("other")}}), 422, "differs from the URL"),
    (cr(resource="flags/ghost"), 404, "'ghost' not found"),
    (cr(resource="segments/ghost", change={"delete": True}), 404, "not found"),
    (cr(description=5), 422, "description: must be a string"),
    (cr(description="x" * 2001), 422, "description: must be at most 2000"),
    (cr(comment=["x"]), 422, "comment: must be a string"),
    (cr(executeAt="tomorrow"), 422, "executeAt: must be epoch milliseconds or an RFC 3339"),
    (cr(executeAt="2030-01-01T10:00:00"), 422, "needs a zone"),
    (cr(executeAt=1.5), 422, "executeAt"),
    (cr(executeAt=1000), 422, "executeAt: is in the past"),
    (cr(executeAt=int(time.time() * 1000) + 400 * 86_400_000), 422, "more than a year"),
    (cr(status="applied"), 422, "unknown field(s) ['status']"),
    (
        cr(change={"item": {**flag_body("f1"), "salt": "x" * 2_000_000}}),
        413,
        "too large",
    ),
]


@pytest.mark.parametrize(("body", "status", "fragment"), CREATE_CASES)
async def test_bad_change_requests_are_refused_and_write_nothing(
    gov: Gov, body: Any, status: int, fragment: str
) -> None:
    before = await gov.state()
    got, problem = await gov.call("POST", CR, body, as_="alice")
    assert got == status and fragment in problem["detail"], problem
    assert await gov.state() == before


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{", "malformed JSON"),
        (b'{"a": "\xc3\x28"}', "not UTF-8"),
        (b"", "the request body is empty"),
        (b"[" * 100_000, "malformed JSON"),
    ],
)
async def test_malformed_bodies_on_every_governance_write_route(
    memory_gov: Gov, raw: bytes, fragment: str
) -> None:
    gov = memory_gov
    created = await gov.create_cr(cr())
    trigger = (await gov.call("POST", TRIGGERS, {"action": "on"}))[1]
    before = await gov.state()
    routes = [
        ("PATCH", BASE),
        ("POST", CR),
        ("PATCH", f"{CR}/{created['id']}"),
        ("POST", f"{CR}/{created['id']}/reviews"),
        ("POST", TRIGGERS),
        ("PATCH", f"{TRIGGERS}/{trigger['id']}"),
        ("POST", f"{TRIGGERS}/{trigger['id']}/reviews"),
        ("PUT", PLAN),
    ]
    for method, path in routes:
        who = "admin" if path == BASE else "bob"
        status, problem = await gov.call(method, path, raw=raw, as_=who)
        assert status == 400 and fragment in problem["detail"], (method, path, problem)
    assert await gov.state() == before


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"decision": "maybe"}, 422, 'decision: must be "approve" or "decline"'),
        ({}, 422, "decision"),
        ({"decision": "approve", "comment": 3}, 422, "comment: must be a string"),
        ({"decision": "approve", "weight": 2}, 422, "unknown field(s) ['weight']"),
        ("approve", 400, "JSON object"),
    ],
)
async def test_bad_reviews_write_nothing(
    memory_gov: Gov, body: Any, status: int, fragment: str
) -> None:
    created = await memory_gov.create_cr(cr())
    before = await memory_gov.state()
    got, problem = await memory_gov.call("POST", f"{CR}/{created['id']}/reviews", body, as_="bob")
    assert got == status and fragment in problem["detail"], problem
    assert await memory_gov.state() == before


async def test_bad_edits_apply_and_cancel_write_nothing(memory_gov: Gov) -> None:
    gov = memory_gov
    created = await gov.create_cr(cr())
    path = f"{CR}/{created['id']}"
    before = await gov.state()
    for method, url, body, status, fragment in [
        ("PATCH", path, {"resource": "flags/x"}, 422, "unknown field(s) ['resource']"),
        ("PATCH", path, {"change": {"delete": "yes"}}, 422, "change.delete"),
        ("PATCH", path, {"baseVersion": 9}, 409, "baseVersion is 9"),
        ("PATCH", path, {"executeAt": "x"}, 422, "executeAt"),
        ("POST", f"{path}/apply", {"now": True}, 400, "apply takes no body"),
        ("POST", f"{path}/cancel", {"reason": "x"}, 422, "unknown field"),
        ("POST", f"{path}/cancel", [1], 400, "JSON object"),
        ("GET", f"{CR}/{'x' * 300}", None, 404, "no change request"),
        ("POST", f"{CR}/nope/apply", None, 404, "no change request 'nope'"),
        ("POST", "/api/v1/environments/ghost/change-requests", cr(), 404, "does not exist"),
        ("GET", f"{BASE}/audit?requestId=x&limit=0", None, 400, "limit must be an integer"),
        ("GET", f"{BASE}/audit?actor=x&limit=abc", None, 400, "limit"),
        ("GET", "/api/v1/environments/ghost/audit?actor=x", None, 404, "does not exist"),
    ]:
        who = "admin" if "ghost" in url else "alice"  # alice's token is for prod only
        status_got, problem = await gov.call(method, url, body, as_=who)
        assert status_got == status and fragment in problem["detail"], (url, problem)
    assert await gov.state() == before


async def test_scopes_are_enforced(memory_gov: Gov) -> None:
    gov = memory_gov
    created = await gov.create_cr(cr())
    await gov.token("other-env", "write", envs=["staging"])
    before = await gov.state()
    for who in ("reader", "other-env"):
        for method, path, body in [
            ("POST", CR, cr()),
            ("POST", f"{CR}/{created['id']}/reviews", {"decision": "approve"}),
            ("POST", f"{CR}/{created['id']}/apply", None),
            ("POST", TRIGGERS, {"action": "on"}),
            ("PUT", PLAN, {"toVariation": 1, "steps": [{"percent": 5, "holdSeconds": 0}]}),
            ("PATCH", BASE, {"critical": True}),
        ]:
            status, problem = await gov.call(method, path, body, as_=who)
            assert status == 403 and "lacks the" in problem["detail"], (who, path)
    status, _ = await gov.call("GET", CR, as_="other-env")
    assert status == 403
    status, problem, _ = await gov.api.call("GET", CR, token=None)
    assert status == 401 and "Authorization" in problem["detail"]
    assert await gov.state() == before
