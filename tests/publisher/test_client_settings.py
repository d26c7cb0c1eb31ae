"""Client-side settings of an environment: at creation and by PATCH; validated, versioned,
audited, shipped in the environment record (publisher/client_settings.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from publisher_support import Api

from protocol.clientside import secure_mode_hash

ENV = "/api/v1/environments"


def problem(status: int, body: Any, expected: int, fragment: str) -> None:
    assert status == expected, body
    assert fragment.lower() in body["detail"].lower(), body["detail"]


async def test_defaults_and_settings_at_creation(api: Api) -> None:
    status, plain, _ = await api.call("POST", ENV, {"key": "plain"})
    assert status == 201, plain
    assert plain["secureMode"] is False and plain["allowedOrigins"] == ["*"]
    assert plain["clientStreamMode"] == "evaluated" and "secureModeSecret" not in plain
    status, body, _ = await api.call(
        "POST",
        ENV,
        {
            "key": "web",
            "secureMode": True,
            "allowedOrigins": ["https://app.example.com", "http://localhost:3000"],
            "clientStreamMode": "ping",
        },
    )
    assert status == 201, body
    secret = body["secureModeSecret"]
    assert secret.startswith("sms-") and len(secret) > 40
    record = await api.store.get_environment("web")
    assert record is not None
    assert record.secure_mode and record.secure_mode_secret == secret
    assert record.allowed_origins == ("https://app.example.com", "http://localhost:3000")
    assert record.client_stream_mode == "ping"
    # Never shown again.
    status, shown, _ = await api.call("GET", f"{ENV}/web")
    assert secret not in json.dumps(shown) and shown["secureModeSecretSet"] is True


async def test_patch_changes_settings_as_a_new_audited_version(api: Api) -> None:
    await api.call("POST", ENV, {"key": "web"})
    status, body, _ = await api.call(
        "PATCH",
        f"{ENV}/web",
        {"secureMode": True, "clientStreamMode": "ping"},
        headers={"X-Change-Comment": "lock it down"},
    )
    assert status == 200, body
    assert body["version"] == 2 and body["secureMode"] is True
    generated = body["secureModeSecret"]
    record = await api.store.get_environment("web")
    assert record is not None and record.version == 2
    assert record.secure_mode_secret == generated
    # An operator-chosen secret, e.g. an SDK key so LaunchDarkly's server SDK helper works.
    status, body, _ = await api.call(
        "PATCH", f"{ENV}/web", {"secureModeSecret": "sdk-my-own-secret-0001"}
    )
    assert status == 200 and "secureModeSecret" not in body and body["version"] == 3
    record = await api.store.get_environment("web")
    assert record is not None
    assert secure_mode_hash(record.secure_mode_secret or "", "bob") == secure_mode_hash(
        "sdk-my-own-secret-0001", "bob"
    )
    status, body, _ = await api.call("PATCH", f"{ENV}/web", {"rotateSecureModeSecret": True})
    assert status == 200 and body["secureModeSecret"] != generated
    # Unchanged values change nothing: no new version.
    status, body, _ = await api.call("PATCH", f"{ENV}/web", {"clientStreamMode": "ping"})
    assert status == 200 and body["version"] == 4
    status, audit, _ = await api.call("GET", f"{ENV}/web/audit?limit=10")
    actions = [e["action"] for e in audit["items"]]
    assert actions.count("update-client-settings") == 3
    first = [e for e in audit["items"] if e["action"] == "update-client-settings"][-1]
    assert first["comment"] == "lock it down"
    assert first["before"]["secureMode"] is False and first["after"]["secureMode"] is True
    assert generated not in json.dumps(audit)
    # Rotating the SDK key keeps the settings.
    status, body, _ = await api.call("POST", f"{ENV}/web/sdk-keys/rotate", {})
    assert status == 200 and body["secureMode"] is True and body["clientStreamMode"] == "ping"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"secureMode": "yes"}, 422, "secureMode"),
        ({"allowedOrigins": "*"}, 422, "allowedOrigins"),
        ({"allowedOrigins": ["https://a.example/path"]}, 422, "allowedOrigins[0]"),
        ({"allowedOrigins": ["*", "https://a.example"]}, 422, "allowedOrigins[0]"),
        ({"allowedOrigins": []}, 422, "allowedOrigins"),
        ({"clientStreamMode": "push"}, 422, "clientStreamMode"),
        ({"secureModeSecret": "short"}, 422, "secureModeSecret"),
        ({"secureModeSecret": "x" * 20, "rotateSecureModeSecret": True}, 422, "not both"),
        ({"rotateSecureModeSecret": 1}, 422, "rotateSecureModeSecret"),
        ({"name": "renamed"}, 422, "unknown field"),
        ([1], 400, "JSON object"),
    ],
)
async def test_bad_settings_change_nothing(api: Api, body: Any, status: int, fragment: str) -> None:
    await api.call("POST", ENV, {"key": "web"})
    got, answer, _ = await api.call("PATCH", f"{ENV}/web", body)
    problem(got, answer, status, fragment)
    record = await api.store.get_environment("web")
    assert record is not None and record.version == 1
    got, answer, _ = await api.call("PATCH", f"{ENV}/nope", {"secureMode": True})
    problem(got, answer, 404, "does not exist")
    if isinstance(body, dict) and "name" not in body:
        got, answer, _ = await api.call("POST", ENV, {"key": "other", **body})
        problem(got, answer, status, fragment)


async def test_patch_needs_the_admin_scope(api: Api) -> None:
    await api.call("POST", ENV, {"key": "web"})
    status, token, _ = await api.call(
        "POST", "/api/v1/tokens", {"name": "writer", "scopes": ["write"], "environments": ["web"]}
    )
    assert status == 201
    status, body, _ = await api.call(
        "PATCH", f"{ENV}/web", {"secureMode": True}, token=token["token"]
    )
    problem(status, body, 403, "admin")
