"""``flagstream admin`` governance subcommands against a running publisher over real HTTP."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from gov_support import Gov, wait_until
from publisher_support import ADMIN

from publisher.admin_cli import main


async def admin(
    capsys: pytest.CaptureFixture[str], gov: Gov, *argv: str, as_: str = "admin"
) -> tuple[int, str, str]:
    token = ADMIN if as_ == "admin" else gov.tokens[as_]
    url = gov.api.url("/")
    code = await asyncio.to_thread(main, ["--url", url, "--token", token, *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_policy_and_change_request_commands(
    memory_gov: Gov, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    gov = memory_gov
    code, out, _ = await admin(
        capsys, gov, "policy", "set", "prod", "--required-approvals", "1", "--require-comment"
    )
    assert code == 0 and out.strip() == (
        "policy of prod: requiredApprovals 1, allowSelfApproval false, requireComment true, "
        "critical false"
    )
    code, out, _ = await admin(capsys, gov, "policy", "show", "prod")
    assert code == 0 and "requiredApprovals 1" in out
    code, _, err = await admin(capsys, gov, "policy", "set", "prod")
    assert code == 2 and "nothing to set" in err

    code, _, err = await admin(
        capsys, gov, "flag", "toggle", "prod", "f1", "off", "--comment", "x", as_="alice"
    )
    assert code == 1 and "change-requests" in err and "403" in err

    code, out, _ = await admin(
        capsys,
        gov,
        "cr",
        "create",
        "prod",
        "flags/f1",
        "--patch",
        '{"on": false}',
        "--base-version",
        "1",
        "--comment",
        "turn off",
        as_="alice",
    )
    assert code == 0 and "pending, review pending (0/1 approvals)" in out
    cr_id = out.split("change request ")[1].split()[0]
    code, out, _ = await admin(capsys, gov, "cr", "list", "prod")
    assert code == 0 and out.splitlines()[1].split()[:5] == [
        cr_id,
        "flags/f1",
        "pending",
        "pending",
        "0/1",
    ]
    code, _, err = await admin(capsys, gov, "cr", "approve", "prod", cr_id, as_="alice")
    assert code == 1 and "self-approval" in err
    code, out, _ = await admin(capsys, gov, "cr", "approve", "prod", cr_id, as_="bob")
    assert code == 0 and "review approved (1/1 approvals)" in out
    code, out, _ = await admin(capsys, gov, "cr", "apply", "prod", cr_id, as_="bob")
    assert code == 0 and "applied as version 2 by bob" in out
    code, out, _ = await admin(capsys, gov, "audit", "prod", "--request-id", cr_id)
    assert code == 0 and [line.split()[3] for line in out.splitlines()[1:]] == [
        "patch",
        "review-change-request",
        "create-change-request",
    ]
    code, out, _ = await admin(capsys, gov, "audit", "prod", "--actor", "bob")
    assert code == 0 and len(out.splitlines()) == 3

    patch_file = tmp_path / "patch.yaml"
    patch_file.write_text("on: true\n")  # YAML 1.2: `on` is a key, not a boolean
    code, out, _ = await admin(
        capsys,
        gov,
        "cr",
        "create",
        "prod",
        "flags/f1",
        "--patch-file",
        str(patch_file),
        "--in",
        "1s",
        "--comment",
        "back on",
        as_="alice",
    )
    assert code == 0, out
    scheduled = out.split("change request ")[1].split()[0]
    await admin(capsys, gov, "cr", "approve", "prod", scheduled, "--comment", "ok", as_="carol")

    async def applied() -> bool:
        _, shown, _ = await admin(capsys, gov, "--json", "cr", "show", "prod", scheduled)
        return bool(json.loads(shown)["status"] == "applied")

    await wait_until(applied, within=10, interval=0.2)
    code, out, _ = await admin(capsys, gov, "cr", "show", "prod", scheduled)
    assert "by scheduler" in out

    code, out, _ = await admin(
        capsys, gov, "cr", "create", "prod", "flags/f1", "--delete", "--comment", "x", as_="bob"
    )
    third = out.split("change request ")[1].split()[0]
    code, out, _ = await admin(
        capsys,
        gov,
        "cr",
        "edit",
        "prod",
        third,
        "--description",
        "y",
        "--comment",
        "z",
        as_="bob",
    )
    assert code == 0 and "edited (reviews cleared)" in out
    code, out, _ = await admin(capsys, gov, "cr", "cancel", "prod", third, as_="bob")
    assert code == 0 and "cancelled" in out

    for argv, message in [
        (("cr", "create", "prod", "flags/f1"), "give the change"),
        (("cr", "create", "prod", "flags/f1", "--patch", "{"), "--patch is not JSON"),
        (("cr", "create", "prod", "flags/f1", "--delete", "--patch", "{}"), "give one of"),
        (("cr", "create", "prod", "flags/f1", "--delete", "--in", "soon"), "--in 'soon'"),
        (
            ("cr", "create", "prod", "flags/f1", "--delete", "--in", "1s", "--execute-at", "1"),
            "not both",
        ),
    ]:
        code, _, err = await admin(capsys, gov, *argv)
        assert code == 2 and message in err, err


async def test_trigger_and_rollout_commands(
    memory_gov: Gov, capsys: pytest.CaptureFixture[str]
) -> None:
    gov = memory_gov
    code, out, _ = await admin(
        capsys, gov, "trigger", "create", "prod", "f1", "off", "--description", "pager"
    )
    assert code == 0 and "shown only once" in out
    url = out.split("URL: ")[1].split()[0]
    trigger_id = out.split("created trigger ")[1].split()[0]

    def call() -> dict[str, object]:
        req = urllib.request.Request(url, method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    assert (await asyncio.to_thread(call))["changed"] is True
    code, out, _ = await admin(capsys, gov, "trigger", "list", "prod", "f1")
    assert code == 0 and out.splitlines()[1].split()[:5] == [
        trigger_id,
        "off",
        "enabled",
        "approved",
        "1",
    ]
    for action in ("disable", "enable", "delete"):
        code, out, _ = await admin(capsys, gov, "trigger", action, "prod", "f1", trigger_id)
        assert code == 0 and trigger_id in out
    code, out, _ = await admin(capsys, gov, "trigger", "list", "prod", "f1")
    assert out.strip() == "no triggers on f1"

    await admin(capsys, gov, "flag", "toggle", "prod", "f1", "on")
    code, out, _ = await admin(
        capsys,
        gov,
        "rollout",
        "start",
        "prod",
        "f1",
        "--to",
        "1",
        "--steps",
        "50:0,100",
        "--comment",
        "go",
    )
    assert code == 0 and "variation 0 → 1" in out and "50%/0s, 100%/0s" in out

    async def completed() -> bool:
        _, shown, _ = await admin(capsys, gov, "--json", "rollout", "show", "prod", "f1")
        return bool(json.loads(shown)["status"] == "completed")

    await wait_until(completed, within=10, interval=0.2)
    code, out, _ = await admin(capsys, gov, "rollout", "show", "prod", "f1")
    assert "completed, at 100% (step 2/2)" in out
    code, out, _ = await admin(capsys, gov, "rollout", "revert", "prod", "f1")
    assert code == 0 and out.startswith("reverted rollout plan")
    code, out, _ = await admin(capsys, gov, "rollout", "list", "prod")
    assert "reverted" in out
    code, _, err = await admin(capsys, gov, "rollout", "pause", "prod", "f1")
    assert code == 1 and "409" in err
    code, _, err = await admin(
        capsys, gov, "rollout", "start", "prod", "f1", "--to", "1", "--steps", "ten"
    )
    assert code == 2 and "PERCENT:HOLD_SECONDS" in err
