"""The client-side settings of an environment record (protocol/environment.py)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from protocol.environment import (
    EnvironmentRecord,
    new_secure_mode_secret,
    validate_allowed_origins,
    validate_client_stream_mode,
    validate_secure_mode_secret,
)
from protocol.errors import ValidationError

pytestmark = pytest.mark.unit

BASE = EnvironmentRecord("web", "Web", 1, (), (), "abc")


def test_defaults_and_old_records() -> None:
    assert BASE.secure_mode is False and BASE.secure_mode_secret is None
    assert BASE.allowed_origins == ("*",) and BASE.client_stream_mode == "evaluated"
    old = {
        "key": "web",
        "name": "Web",
        "version": 1,
        "sdkKeys": [],
        "mobileKeys": [],
        "clientSideId": "abc",
    }  # a record written before these settings existed
    assert EnvironmentRecord.from_dict(old) == BASE


def test_round_trip_with_settings() -> None:
    record = dataclasses.replace(
        BASE,
        secure_mode=True,
        secure_mode_secret=new_secure_mode_secret(),
        allowed_origins=("https://a.example", "http://localhost:3000"),
        client_stream_mode="ping",
    )
    assert EnvironmentRecord.from_json(record.to_json()) == record
    assert record.allows_origin("https://a.example") and not record.allows_origin("https://b")
    assert BASE.allows_origin("https://anything.example")


def test_new_secret() -> None:
    a, b = new_secure_mode_secret(), new_secure_mode_secret()
    assert a != b and a.startswith("sms-") and len(a) >= 40
    assert validate_secure_mode_secret(a) == a


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("secureMode", "yes", "secureMode"),
        ("secureModeSecret", "short", "secureModeSecret"),
        ("secureModeSecret", 5, "secureModeSecret"),
        ("secureModeSecret", "x" * 20 + "\n", "secureModeSecret"),
        ("secureModeSecret", "é" * 20, "secureModeSecret"),
        ("allowedOrigins", "*", "allowedOrigins"),
        ("allowedOrigins", [], "allowedOrigins"),
        ("allowedOrigins", ["https://a.example/"], "allowedOrigins[0]"),
        ("allowedOrigins", ["HTTPS://A.example"], "allowedOrigins[0]"),
        ("allowedOrigins", [7], "allowedOrigins[0]"),
        ("allowedOrigins", ["https://" + "a" * 300], "allowedOrigins[0]"),
        ("clientStreamMode", "push", "clientStreamMode"),
    ],
)
def test_invalid_settings_name_the_field(field: str, value: Any, path: str) -> None:
    obj = json.loads(BASE.to_json())
    obj[field] = value
    with pytest.raises(ValidationError) as info:
        EnvironmentRecord.from_dict(obj)
    assert info.value.path == path


def test_secure_mode_needs_a_secret() -> None:
    obj = json.loads(BASE.to_json())
    obj["secureMode"] = True
    with pytest.raises(ValidationError, match="required"):
        EnvironmentRecord.from_dict(obj)


def test_validators() -> None:
    assert validate_allowed_origins(["*"]) == ("*",)
    assert validate_allowed_origins(["https://a.example", "https://a.example"]) == (
        "https://a.example",
    )
    assert validate_allowed_origins(["http://[::1]:8080"]) == ("http://[::1]:8080",)
    assert validate_client_stream_mode("ping") == "ping"
    assert validate_client_stream_mode("evaluated") == "evaluated"
