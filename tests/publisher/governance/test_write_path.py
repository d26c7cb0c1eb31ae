"""Governance on the publisher's write path (issue 18's group commit and bulk), on every
backend: the guard on bulk requests (and so ``flagstream admin apply``), the policy decision
holding where the write commits, one PATCH of the environment for policy and client-side
settings, and the token cache keeping the ``bypass-approvals`` scope."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from gov_support import BASE, ENV, Gov, flag_body, setup_gov
from publisher_support import ADMIN, PARTITIONS, ApiFactory

from flagstream.memlog import MemoryLog
from publisher.admin_cli import main
from publisher.app import PUBLISHER
from publisher.auth import SCOPES, Principal
from publisher.memory_store import MemoryStore
from publisher.service import GuardNote

BULK = f"{BASE}/bulk"
ADMIN_PRINCIPAL = Principal("admin", None, frozenset(SCOPES), None)


def _ops(*keys: str) -> dict[str, Any]:
    return {
        "operations": [
            {"op": "put", "kind": "flag", "key": key, "value": flag_body(key)} for key in keys
        ]
    }


# -- the guard on bulk requests ---------------------------------------------------------------
async def test_bulk_requests_are_guarded_like_direct_writes(gov: Gov) -> None:
    await gov.policy(requiredApprovals=1, critical=True)
    before = await gov.state()
    status, problem = await gov.call("POST", BULK, _ops("a", "b"), as_="alice")
    assert status == 403 and problem["type"].endswith("/approval-required")
    assert problem["changeRequests"] == f"{BASE}/change-requests"
    status, problem = await gov.call("POST", f"{BULK}?dryRun=true", _ops("a"), as_="alice")
    assert status == 403  # a dry run answers what the request would get
    status, problem = await gov.call("POST", BULK, _ops("a", "b"), as_="breakglass")
    assert status == 400 and problem["type"].endswith("/comment-required")
    assert await gov.state() == before

    done = await gov.ok("POST", BULK, {**_ops("a", "b"), "comment": "INC-7"}, as_="breakglass")
    entries = [e for e in await gov.audit(requestId=done["requestId"])]
    assert sorted(e["key"] for e in entries) == ["a", "b"]
    for entry in entries:
        assert (entry["actor"], entry["comment"], entry["bypass"]) == (
            "breakglass",
            "INC-7",
            "approvals",
        )
        assert entry["requiredApprovals"] == 1 and entry["critical"] is True


async def test_admin_apply_in_an_approval_environment(
    gov: Gov, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``flagstream admin apply`` (one bulk request) is refused without the bypass scope,
    naming the change-request route, and audited as a bypass with it."""
    await gov.policy(requiredApprovals=2)
    changes = tmp_path / "changes.yaml"
    changes.write_text(
        f"environment: {ENV}\ncomment: release 42\nflags:\n"
        "  new-ui: {on: true, variations: [true, false], fallthrough: {variation: 0}}\n"
    )
    url = gov.api.url("/")

    async def apply(token: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(
            main, ["--url", url, "--token", token, "apply", str(changes)]
        )
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = await apply(gov.tokens["alice"])
    assert code == 1 and "403" in err and "change-requests" in err
    code, out, _ = await apply(gov.tokens["breakglass"])
    assert code == 0 and "1 written" in out, out
    entry = (await gov.audit())[0]
    assert (entry["key"], entry["bypass"], entry["requiredApprovals"]) == ("new-ui", "approvals", 2)
    code, out, _ = await apply(ADMIN)  # the bootstrap admin holds every scope
    assert code == 0 and "0 written, 1 unchanged" in out, out


# -- the decision holds where the write commits (policy rule 4) --------------------------------
def _policy_changes_after_the_guard(gov: Gov, patch: dict[str, Any]) -> list[bool]:
    """Make the publisher's guard decide, and only then (before the write commits) change the
    policy: the window a cached or raced decision would leave. Returns the ``fresh`` flag of
    every guard call."""
    publisher = gov.api.app[PUBLISHER]
    decide = publisher.write_guard
    assert decide is not None
    calls: list[bool] = []

    async def racing(env: str, principal: Principal, comment: str | None, fresh: bool) -> GuardNote:
        calls.append(fresh)
        note = await decide(env, principal, comment, fresh)
        if len(calls) == 1:
            await gov.governance.policies.patch(
                env, patch, actor=ADMIN_PRINCIPAL, comment_header="raced"
            )
        return note

    publisher.write_guard = racing
    return calls


async def test_a_direct_write_never_commits_under_a_policy_changed_after_its_guard(
    gov: Gov,
) -> None:
    calls = _policy_changes_after_the_guard(gov, {"requiredApprovals": 1})
    flag_before = await gov.flag()
    status, problem = await gov.call("PATCH", f"{BASE}/flags/f1", {"on": False}, as_="alice")
    assert status == 403 and problem["type"].endswith("/approval-required"), problem
    assert calls == [False, True]  # decided, refused at commit, decided again on the store's
    assert await gov.flag() == flag_before
    assert [e["action"] for e in await gov.audit()][:1] == ["update-policy"]


async def test_the_audit_note_is_the_policy_the_write_committed_under(gov: Gov) -> None:
    calls = _policy_changes_after_the_guard(gov, {"requiredApprovals": 2})
    written = await gov.ok("PATCH", f"{BASE}/flags/f1", {"on": False}, as_="breakglass")
    assert calls == [False, True]
    entry = (await gov.audit())[0]
    assert entry["version"] == written["version"]
    assert (entry["bypass"], entry["requiredApprovals"]) == ("approvals", 2)


async def test_a_bulk_request_never_commits_under_a_policy_changed_after_its_guard(
    gov: Gov,
) -> None:
    calls = _policy_changes_after_the_guard(gov, {"requireComment": True})
    status, problem = await gov.call("POST", BULK, _ops("x", "y"), as_="alice")
    assert status == 400 and problem["type"].endswith("/comment-required"), problem
    assert calls == [False, True]
    assert await gov.api.store.get_item(ENV, "flag", "x") is None


# -- one PATCH for the environment's policy and client-side settings ---------------------------
async def test_one_patch_changes_the_policy_and_the_client_side_settings(gov: Gov) -> None:
    before = await gov.ok("GET", BASE)
    body = {
        "requiredApprovals": 1,
        "critical": True,
        "allowedOrigins": ["https://app.example.com"],
        "clientStreamMode": "ping",
        "comment": "both at once",
    }
    changed = await gov.ok("PATCH", BASE, body)
    assert changed["version"] == before["version"] + 1
    assert (changed["requiredApprovals"], changed["critical"]) == (1, True)
    assert changed["allowedOrigins"] == ["https://app.example.com"]
    assert changed["clientStreamMode"] == "ping"
    assert await gov.ok("GET", BASE) == changed
    actions = [(e["action"], e["comment"]) for e in (await gov.audit())[:2]]
    assert sorted(actions) == [
        ("update-client-settings", "both at once"),
        ("update-policy", "both at once"),
    ]

    entries = len(await gov.audit())
    same = await gov.ok("PATCH", BASE, {"requiredApprovals": 1, "clientStreamMode": "ping"})
    assert same == changed  # nothing changes: no new version, no audit entry
    assert len(await gov.audit()) == entries

    secret = await gov.ok("PATCH", BASE, {"secureMode": True, "critical": None})
    assert secret["secureModeSecret"] and secret["secureModeSecretSet"] is True
    assert secret["critical"] is False
    assert "secureModeSecret" not in await gov.ok("GET", BASE)  # shown once


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"requiredApprovals": 1, "name": "x", "nme": 1}, "unknown field(s) ['name', 'nme']"),
        ({"requiredApprovals": 9, "clientStreamMode": "ping"}, "requiredApprovals"),
        ({"critical": True, "clientStreamMode": "push"}, "clientStreamMode"),
        ({"allowSelfApproval": "yes", "secureMode": True}, "allowSelfApproval"),
    ],
)
async def test_both_parts_are_validated_before_either_is_written(
    gov: Gov, body: dict[str, Any], detail: str
) -> None:
    before = await gov.state()
    status, problem = await gov.call("PATCH", BASE, body)
    assert status == 422 and detail in problem["detail"], problem
    assert await gov.state() == before


async def test_the_environment_patch_is_for_admins(gov: Gov) -> None:
    status, problem = await gov.call("PATCH", BASE, {"clientStreamMode": "ping"}, as_="alice")
    assert status == 403 and "admin" in problem["detail"]


# -- the token cache keeps the bypass-approvals scope -----------------------------------------
async def test_a_cached_token_keeps_its_bypass_scope(make_api: ApiFactory) -> None:
    store = MemoryStore()
    # a TTL no slow machine outlasts: the second and third request must come from the cache
    gov = await setup_gov(await make_api(store, MemoryLog(PARTITIONS), token_cache_ttl=300))
    await gov.policy(requiredApprovals=1)
    lookups: list[str] = []
    find = store.find_token

    async def counting(secret_sha256: str) -> Any:
        lookups.append(secret_sha256)
        return await find(secret_sha256)

    store.find_token = counting  # type: ignore[method-assign]
    for salt in ("a", "b", "c"):
        await gov.ok("PATCH", f"{BASE}/flags/f1", {"salt": salt}, as_="breakglass")
    assert len(lookups) == 1
    assert [e["bypass"] for e in (await gov.audit())[:3]] == ["approvals"] * 3
    status, _ = await gov.call("PATCH", f"{BASE}/flags/f1", {"salt": "d"}, as_="alice")
    assert status == 403
