"""Policy, direct-write guard and change requests over real HTTP, on both backends."""

from __future__ import annotations

import pytest
from gov_support import BASE, CR, ENV, Gov, flag_body, setup_gov
from publisher_support import ApiFactory, read_topic

from publisher.redis_store import RedisStore


# -- policy ------------------------------------------------------------------------------------
async def test_policy_is_shown_with_the_environment_and_changed_by_admins_only(gov: Gov) -> None:
    env = await gov.ok("GET", BASE)
    assert (env["requiredApprovals"], env["allowSelfApproval"]) == (0, False)
    assert (env["requireComment"], env["critical"]) == (False, False)
    status, problem = await gov.call("PATCH", BASE, {"requiredApprovals": 2}, as_="alice")
    assert status == 403 and "admin" in problem["detail"]

    changed = await gov.ok(
        "PATCH", BASE, {"requiredApprovals": 2, "critical": True, "comment": "SOX"}
    )
    assert (changed["key"], changed["requiredApprovals"], changed["critical"]) == (ENV, 2, True)
    listed = await gov.ok("GET", "/api/v1/environments")
    assert listed["items"][0]["requiredApprovals"] == 2
    entry = (await gov.audit())[0]
    assert (entry["action"], entry["kind"], entry["comment"]) == (
        "update-policy",
        "environment",
        "SOX",
    )
    assert entry["before"]["requiredApprovals"] == 0 and entry["after"]["requiredApprovals"] == 2

    reset = await gov.ok("PATCH", BASE, {"requiredApprovals": None, "critical": None})
    assert (reset["requiredApprovals"], reset["critical"]) == (0, False)


@pytest.mark.parametrize(
    ("patch", "status", "fragment"),
    [
        ({"requiredApprovals": 6}, 422, "requiredApprovals: must be an integer from 0 to 5"),
        ({"requiredApprovals": -1}, 422, "requiredApprovals"),
        ({"requiredApprovals": "2"}, 422, "requiredApprovals"),
        ({"requiredApprovals": True}, 422, "requiredApprovals"),
        ({"critical": "yes"}, 422, "critical: must be true or false"),
        ({"allowSelfApproval": 1}, 422, "allowSelfApproval"),
        ({"name": "x"}, 422, "unknown field(s) ['name']"),
        ([1], 400, "JSON object"),
        ({"comment": 5}, 422, "comment: must be a string"),
    ],
)
async def test_bad_policy_patch_changes_nothing(
    gov: Gov, patch: object, status: int, fragment: str
) -> None:
    before = await gov.state()
    got, problem = await gov.call("PATCH", BASE, patch)
    assert got == status and fragment in problem["detail"], problem
    assert await gov.state() == before


async def test_policy_of_an_unknown_environment_is_404(gov: Gov) -> None:
    status, problem = await gov.call("PATCH", "/api/v1/environments/nope", {"critical": True})
    assert status == 404 and "does not exist" in problem["detail"]


# -- the guard of direct writes ----------------------------------------------------------------
async def test_direct_writes_need_approval_and_the_answer_names_the_route(gov: Gov) -> None:
    await gov.policy(requiredApprovals=1)
    before = await gov.state()
    for method, path, body in (
        ("PATCH", f"{BASE}/flags/f1", {"on": False}),
        ("PUT", f"{BASE}/flags/new", flag_body("new")),
        ("DELETE", f"{BASE}/flags/f1", None),
        ("PATCH", f"{BASE}/segments/s1", {"included": []}),
    ):
        status, problem = await gov.call(method, path, body, as_="alice")
        assert status == 403, (method, path, problem)
        assert problem["type"].endswith("/approval-required")
        assert f"POST /api/v1/environments/{ENV}/change-requests" in problem["detail"]
        assert problem["changeRequests"] == f"/api/v1/environments/{ENV}/change-requests"
    assert await gov.state() == before


async def test_a_bypass_token_writes_and_the_write_is_audited_as_a_bypass(gov: Gov) -> None:
    await gov.policy(requiredApprovals=2)
    written = await gov.ok("PATCH", f"{BASE}/flags/f1", {"on": False}, as_="breakglass")
    assert written["version"] == 2
    entry = (await gov.audit())[0]
    assert (entry["actor"], entry["action"], entry["bypass"]) == (
        "breakglass",
        "patch",
        "approvals",
    )
    assert entry["requiredApprovals"] == 2
    # without the policy, no bypass is recorded
    await gov.policy(requiredApprovals=0)
    await gov.ok("PATCH", f"{BASE}/flags/f1", {"on": True}, as_="breakglass")
    assert "bypass" not in (await gov.audit())[0]


async def test_comments_required_by_policy_and_critical_environments(gov: Gov) -> None:
    await gov.policy(requireComment=True)
    before = await gov.state()
    status, problem = await gov.call("PATCH", f"{BASE}/flags/f1", {"on": False}, as_="alice")
    assert status == 400 and problem["type"].endswith("/comment-required")
    status, problem = await gov.call(
        "PATCH",
        f"{BASE}/flags/f1",
        {"on": False},
        as_="alice",
        headers={"X-Change-Comment": "   "},
    )
    assert status == 400
    assert await gov.state() == before
    await gov.ok(
        "PATCH",
        f"{BASE}/flags/f1",
        {"on": False},
        as_="alice",
        headers={"X-Change-Comment": "incident 42"},
    )
    await gov.policy(requireComment=False, critical=True)
    status, problem = await gov.call("DELETE", f"{BASE}/flags/f1", as_="alice")
    assert status == 400 and "is critical" in problem["detail"]
    await gov.ok("PATCH", f"{BASE}/flags/f1", {"on": True, "comment": "back"}, as_="alice")
    entry = (await gov.audit())[0]
    assert (entry["critical"], entry["comment"]) == (True, "back")


# -- change requests ---------------------------------------------------------------------------
async def test_change_request_lifecycle_to_an_applied_write(gov: Gov) -> None:
    await gov.policy(requiredApprovals=2)
    cr = await gov.create_cr(
        {
            "resource": "flags/f1",
            "baseVersion": 1,
            "change": {"mergePatch": {"on": False}},
            "description": "turn it off",
            "comment": "ticket 7",
        }
    )
    assert (cr["reviewStatus"], cr["status"], cr["approvals"]) == ("pending", "pending", 0)
    assert (cr["author"], cr["requiredApprovals"], cr["resource"]) == ("alice", 2, "flags/f1")
    path = f"{CR}/{cr['id']}"

    status, problem = await gov.call(
        "POST", f"{path}/reviews", {"decision": "approve"}, as_="alice"
    )
    assert status == 403 and "self-approval" in problem["detail"]
    status, problem = await gov.call("POST", f"{path}/apply", as_="bob")
    assert status == 409 and "0 approval(s)" in problem["detail"]

    cr = await gov.ok("POST", f"{path}/reviews", {"decision": "approve"}, as_="bob")
    assert (cr["approvals"], cr["reviewStatus"]) == (1, "pending")
    status, problem = await gov.call("POST", f"{path}/reviews", {"decision": "approve"}, as_="bob")
    assert status == 409 and "already reviewed" in problem["detail"]
    status, problem = await gov.call("POST", f"{path}/apply", as_="bob")
    assert status == 409 and problem["type"].endswith("/approvals-missing")
    status, _ = await gov.call("POST", f"{path}/reviews", {"decision": "approve"}, as_="reader")
    assert status == 403

    cr = await gov.ok(
        "POST", f"{path}/reviews", {"decision": "approve", "comment": "lgtm"}, as_="carol"
    )
    assert (cr["approvals"], cr["reviewStatus"], cr["status"]) == (2, "approved", "pending")
    assert [r["reviewer"] for r in cr["reviews"]] == ["bob", "carol"]
    assert (await gov.flag())["on"] is True  # approval alone writes nothing

    applied = await gov.ok("POST", f"{path}/apply", as_="bob")
    assert applied["delivery"] == "acknowledged"
    assert (applied["changeRequest"]["status"], applied["changeRequest"]["appliedVersion"]) == (
        "applied",
        2,
    )
    assert applied["item"]["on"] is False and applied["item"]["version"] == 2
    assert (await gov.flag())["version"] == 2

    status, problem = await gov.call("POST", f"{path}/apply", as_="bob")
    assert status == 409 and "already applied (version 2)" in problem["detail"]
    status, _ = await gov.call("POST", f"{path}/cancel", as_="alice")
    assert status == 409

    trail = await gov.audit(requestId=cr["id"])
    assert [e["action"] for e in reversed(trail)] == [
        "create-change-request",
        "review-change-request",
        "review-change-request",
        "patch",
    ]
    write = trail[0]
    assert (write["actor"], write["kind"], write["key"], write["version"]) == (
        "bob",
        "flag",
        "f1",
        2,
    )
    assert (write["before"]["on"], write["after"]["on"], write["comment"]) == (
        True,
        False,
        "ticket 7",
    )
    assert (write["author"], write["approvedBy"], write["appliedBy"]) == (
        "alice",
        ["bob", "carol"],
        "bob",
    )
    assert [e["action"] for e in await gov.audit(actor="carol")] == ["review-change-request"]


async def test_applied_change_reaches_the_topic(gov: Gov, request: pytest.FixtureRequest) -> None:
    cr = await gov.create_cr({"resource": "flags/f1", "change": {"mergePatch": {"salt": "cr"}}})
    applied = await gov.ok("POST", f"{CR}/{cr['id']}/apply", as_="bob")
    assert applied["changeRequest"]["status"] == "applied"
    on_kafka = request.node.callspec.params["gov"] == "redis+kafka"
    bootstrap = request.getfixturevalue("kafka_bootstrap") if on_kafka else ""
    envelopes = await read_topic(bootstrap, gov.api.topic, ENV, expect=4)
    flags = [e for e in envelopes if e.kind == "flag" and e.key == "f1"]
    assert [e.version for e in flags] == [1, 2]
    assert flags[-1].actor == "bob" and b'"salt":"cr"' in flags[-1].item


async def test_decline_then_apply_is_refused_and_an_edit_reopens_review(gov: Gov) -> None:
    await gov.policy(requiredApprovals=1)
    cr = await gov.create_cr({"resource": "flags/f1", "change": {"mergePatch": {"on": False}}})
    path = f"{CR}/{cr['id']}"
    await gov.ok("POST", f"{path}/reviews", {"decision": "approve"}, as_="bob")
    declined = await gov.ok(
        "POST", f"{path}/reviews", {"decision": "decline", "comment": "not now"}, as_="carol"
    )
    assert declined["reviewStatus"] == "declined"
    before = await gov.state()
    status, problem = await gov.call("POST", f"{path}/apply", as_="bob")
    assert status == 409 and problem["type"].endswith("/request-declined")
    status, problem = await gov.call(
        "POST", f"{path}/reviews", {"decision": "approve"}, as_="breakglass"
    )
    assert status == 409 and "was declined" in problem["detail"]
    assert await gov.state() == before

    status, problem = await gov.call("PATCH", path, {"description": "x"}, as_="bob")
    assert status == 403 and "only its author" in problem["detail"]
    edited = await gov.ok("PATCH", path, {"change": {"mergePatch": {"salt": "v2"}}}, as_="alice")
    assert (edited["reviewStatus"], edited["approvals"], edited["reviews"]) == ("pending", 0, [])
    assert edited["change"] == {"mergePatch": {"salt": "v2"}}
    edit_entry = (await gov.audit(requestId=cr["id"]))[0]
    assert (edit_entry["action"], edit_entry["revokedReviews"]) == ("edit-change-request", 2)
    # bob's earlier approval was revoked: he can approve again
    approved = await gov.ok("POST", f"{path}/reviews", {"decision": "approve"}, as_="bob")
    assert approved["reviewStatus"] == "approved"
    done = await gov.ok("POST", f"{path}/apply", as_="carol")
    assert done["item"]["salt"] == "v2" and done["item"]["on"] is True


async def test_edit_revokes_approvals(gov: Gov) -> None:
    await gov.policy(requiredApprovals=2)
    cr = await gov.create_cr({"resource": "flags/f1", "change": {"mergePatch": {"on": False}}})
    path = f"{CR}/{cr['id']}"
    await gov.ok("POST", f"{path}/reviews", {"decision": "approve"}, as_="bob")
    await gov.ok("POST", f"{path}/reviews", {"decision": "approve"}, as_="carol")
    edited = await gov.ok("PATCH", path, {"description": "clearer"}, as_="alice")
    assert (edited["approvals"], edited["reviewStatus"]) == (0, "pending")
    status, problem = await gov.call("POST", f"{path}/apply", as_="bob")
    assert status == 409 and "0 approval(s)" in problem["detail"]


async def test_conflict_on_apply_fails_with_the_current_version_and_writes_nothing(
    gov: Gov,
) -> None:
    cr = await gov.create_cr(
        {"resource": "flags/f1", "baseVersion": 1, "change": {"mergePatch": {"on": False}}}
    )
    await gov.ok("PATCH", f"{BASE}/flags/f1", {"salt": "someone else"}, as_="bob")
    flag_before = await gov.flag()
    items_before = await gov.api.store.list_items(ENV, "flag")

    status, problem = await gov.call("POST", f"{CR}/{cr['id']}/apply", as_="bob")
    assert status == 409 and problem["type"].endswith("/request-failed")
    assert problem["currentVersion"] == 2
    assert "baseVersion is 1 but flags/f1 is at version 2" in problem["detail"]
    failed = problem["changeRequest"]
    assert failed["status"] == "failed"
    assert failed["failure"] == {
        "reason": "conflict",
        "detail": "baseVersion is 1 but flags/f1 is at version 2",
        "currentVersion": 2,
    }
    assert await gov.flag() == flag_before
    assert await gov.api.store.list_items(ENV, "flag") == items_before
    assert (await gov.audit(requestId=cr["id"]))[0]["action"] == "fail-change-request"

    status, problem = await gov.call("POST", f"{CR}/{cr['id']}/apply", as_="bob")
    assert status == 409 and "edit it" in problem["detail"]
    # rebased by its author, it applies
    await gov.ok("PATCH", f"{CR}/{cr['id']}", {"baseVersion": 2}, as_="alice")
    done = await gov.ok("POST", f"{CR}/{cr['id']}/apply", as_="bob")
    assert done["item"]["version"] == 3 and done["item"]["on"] is False


async def test_full_item_and_delete_changes_and_segments(gov: Gov) -> None:
    created = await gov.create_cr(
        {
            "resource": "flags/brand-new",
            "baseVersion": 0,
            "change": {"item": flag_body("brand-new")},
        }
    )
    applied = await gov.ok("POST", f"{CR}/{created['id']}/apply", as_="bob")
    assert applied["item"]["version"] == 1 and applied["item"]["key"] == "brand-new"
    assert (await gov.audit())[0]["action"] == "put"

    gone = await gov.create_cr({"resource": "segments/s1", "change": {"delete": True}})
    applied = await gov.ok("POST", f"{CR}/{gone['id']}/apply", as_="bob")
    assert applied["item"] == {"key": "s1", "version": 2, "deleted": True}
    assert (await gov.audit())[0]["action"] == "delete"
    status, _ = await gov.call("GET", f"{BASE}/segments/s1")
    assert status == 404


async def test_cancel_list_and_filters(gov: Gov) -> None:
    await gov.policy(requiredApprovals=1)
    one = await gov.create_cr({"resource": "flags/f1", "change": {"mergePatch": {"on": False}}})
    two = await gov.create_cr(
        {"resource": "segments/s1", "change": {"mergePatch": {"included": []}}}, as_="bob"
    )
    status, problem = await gov.call("POST", f"{CR}/{one['id']}/cancel", as_="bob")
    assert status == 403 and "author" in problem["detail"]
    cancelled = await gov.ok(
        "POST", f"{CR}/{one['id']}/cancel", {"comment": "obsolete"}, as_="alice"
    )
    assert cancelled["status"] == "cancelled"
    status, problem = await gov.call("POST", f"{CR}/{one['id']}/apply", as_="bob")
    assert status == 409 and "cancelled" in problem["detail"]
    status, problem = await gov.call(
        "PATCH", f"{CR}/{one['id']}", {"description": "x"}, as_="alice"
    )
    assert status == 409
    await gov.ok("POST", f"{CR}/{two['id']}/cancel")  # an admin may cancel anyone's

    everything = (await gov.ok("GET", CR, as_="reader"))["items"]
    assert [c["id"] for c in everything] == [two["id"], one["id"]]  # newest first
    by_resource = (await gov.ok("GET", f"{CR}?resource=flags/f1"))["items"]
    assert [c["id"] for c in by_resource] == [one["id"]]
    assert (await gov.ok("GET", f"{CR}?status=pending"))["items"] == []
    assert len((await gov.ok("GET", f"{CR}?status=cancelled&reviewStatus=pending"))["items"]) == 2
    assert len((await gov.ok("GET", f"{CR}?author=bob"))["items"]) == 1
    status, problem = await gov.call("GET", f"{CR}?status=done")
    assert status == 400 and "status must be one of" in problem["detail"]
    status, problem = await gov.call("GET", f"{CR}?sort=x")
    assert status == 422
    shown = await gov.ok("GET", f"{CR}/{one['id']}", as_="reader")
    assert shown["status"] == "cancelled"
    status, _ = await gov.call("GET", f"{CR}/cr-999999")
    assert status == 404
    status, _ = await gov.call(
        "POST", CR, {"resource": "flags/f1", "change": {"delete": True}}, as_="reader"
    )
    assert status == 403


async def test_self_approval_where_allowed(gov: Gov) -> None:
    await gov.policy(requiredApprovals=1, allowSelfApproval=True)
    cr = await gov.create_cr({"resource": "flags/f1", "change": {"mergePatch": {"on": False}}})
    approved = await gov.ok(
        "POST", f"{CR}/{cr['id']}/reviews", {"decision": "approve"}, as_="alice"
    )
    assert approved["reviewStatus"] == "approved"
    done = await gov.ok("POST", f"{CR}/{cr['id']}/apply", as_="alice")
    assert done["changeRequest"]["status"] == "applied"


async def test_a_raised_requirement_holds_back_an_approved_request(gov: Gov) -> None:
    await gov.policy(requiredApprovals=1)
    cr = await gov.create_cr({"resource": "flags/f1", "change": {"mergePatch": {"on": False}}})
    await gov.ok("POST", f"{CR}/{cr['id']}/reviews", {"decision": "approve"}, as_="bob")
    await gov.policy(requiredApprovals=2)
    status, problem = await gov.call("POST", f"{CR}/{cr['id']}/apply", as_="bob")
    assert status == 409 and "requires 2" in problem["detail"]


@pytest.mark.integration
async def test_a_policy_change_holds_at_once_on_every_publisher(
    make_api: ApiFactory, redis_url: str, unique_name: str
) -> None:
    """The guard of another publisher remembers the old policy, yet no write commits under
    it: the commit checks the policy revision atomically (policy rules 4-5), so the change
    holds there at once, both ways, and the audit note follows the current policy."""
    stores = [RedisStore(redis_url, prefix=f"{unique_name}:") for _ in range(2)]
    try:
        first = await setup_gov(await make_api(stores[0]))
        other = Gov(await make_api(stores[1]), dict(first.tokens))
        await other.ok("PATCH", f"{BASE}/flags/f1", {"salt": "a"}, as_="alice")  # remembers none
        await first.policy(requiredApprovals=1)
        status, problem = await other.call("PATCH", f"{BASE}/flags/f1", {"salt": "b"}, as_="alice")
        assert status == 403 and problem["type"].endswith("/approval-required")
        bypass = await other.ok("PATCH", f"{BASE}/flags/f1", {"salt": "c"}, as_="breakglass")
        entry = (await other.audit())[0]
        assert (entry["version"], entry["bypass"]) == (bypass["version"], "approvals")

        await first.policy(requiredApprovals=0, critical=True)  # other remembers approvals=1
        status, problem = await other.call("PATCH", f"{BASE}/flags/f1", {"salt": "d"}, as_="alice")
        assert status == 400 and problem["type"].endswith("/comment-required")
        done = await other.ok(
            "PATCH",
            f"{BASE}/flags/f1",
            {"salt": "d"},
            as_="alice",
            headers={"X-Change-Comment": "ok"},
        )
        entry = (await other.audit())[0]
        assert entry["version"] == done["version"] and entry["critical"] is True
        assert "bypass" not in entry
    finally:
        await stores[0].delete_all()
        for store in stores:
            await store.close()
