"""Driver helpers that need no service: the flag body and finding the SDK key."""

from __future__ import annotations

import pytest

from loadtest.driver import _find_sdk_key, flag_json, flag_key
from protocol.model import validate_flag

pytestmark = pytest.mark.unit


def test_flag_json_is_a_valid_flag() -> None:
    flag = flag_json(flag_key(3), 7, True)
    assert validate_flag(flag)["version"] == 7
    assert flag["key"] == "flag-3"


def test_find_sdk_key_prefers_the_named_field() -> None:
    answer = {
        "key": "e",
        "sdkKeys": [{"sha256": "ab" * 32}],
        "mobileKey": "mob-1",
        "sdkKey": "sdk-123",
    }
    assert _find_sdk_key(answer) == "sdk-123"
    assert _find_sdk_key({"credentials": {"server": ["sdk-9"]}}) == "sdk-9"
    assert _find_sdk_key({"mobileKey": "mob-1"}) is None
