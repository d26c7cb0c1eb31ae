"""Results, reasons and their pre-encoded client-side JSON."""

from __future__ import annotations

import json

import pytest

from protocol.evaluation.result import Reason, check_type, make_result

pytestmark = pytest.mark.unit


def test_reason_json_leaves_out_absent_fields() -> None:
    assert Reason("OFF").to_json() == {"kind": "OFF"}
    assert Reason("RULE_MATCH", 2, "r", in_experiment=True).to_json() == {
        "kind": "RULE_MATCH",
        "ruleIndex": 2,
        "ruleId": "r",
        "inExperiment": True,
    }
    assert Reason("PREREQUISITE_FAILED", prerequisite_key="p").to_json() == {
        "kind": "PREREQUISITE_FAILED",
        "prerequisiteKey": "p",
    }
    assert Reason(
        "ERROR", error_kind="MALFORMED_FLAG", big_segments_status="NOT_CONFIGURED"
    ).to_json() == {
        "kind": "ERROR",
        "errorKind": "MALFORMED_FLAG",
        "bigSegmentsStatus": "NOT_CONFIGURED",
    }


def test_encodings() -> None:
    plain = make_result("f", {"a": "ü"}, 1, Reason("FALLTHROUGH"), 7)
    assert (
        plain.fragment(False)
        == '"f":{"value":{"a":"ü"},"variation":1,"version":7,"flagVersion":7}'.encode()
    )
    assert json.loads(plain.body(True)) == {
        "value": {"a": "ü"},
        "variation": 1,
        "version": 7,
        "flagVersion": 7,
        "reason": {"kind": "FALLTHROUGH"},
    }
    assert json.loads(plain.patch(False)) == {
        "key": "f",
        "value": {"a": "ü"},
        "variation": 1,
        "version": 7,
        "flagVersion": 7,
    }
    assert plain.detail() == {
        "value": {"a": "ü"},
        "variationIndex": 1,
        "reason": {"kind": "FALLTHROUGH"},
    }
    tracked = make_result(
        'k:"{x}',
        True,
        0,
        Reason("RULE_MATCH", 0, "r", in_experiment=True),
        3,
        track_events=True,
        track_reason=True,
        debug_events_until_date=1700000000000,
        prerequisites=("p1", "p2"),
    )
    body = {
        "value": True,
        "variation": 0,
        "version": 3,
        "flagVersion": 3,
        "trackEvents": True,
        "trackReason": True,
        "reason": {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "r", "inExperiment": True},
        "debugEventsUntilDate": 1700000000000,
        "prerequisites": ["p1", "p2"],
    }
    # trackReason: the reason is sent even when reasons were not asked for.
    assert json.loads(tracked.body(False)) == json.loads(tracked.body(True)) == body
    assert json.loads(b"{" + tracked.fragment(False) + b"}") == {'k:"{x}': body}
    assert json.loads(tracked.patch(True))["key"] == 'k:"{x}'
    assert not tracked.is_error
    assert make_result("f", None, None, Reason("ERROR", error_kind="FLAG_NOT_FOUND"), None).is_error


@pytest.mark.parametrize(
    ("value", "value_type", "ok"),
    [
        (True, "bool", True),
        (1, "bool", False),
        ("a", "string", True),
        (True, "string", False),
        (1, "int", True),
        (1.5, "double", True),
        ("1", "int", False),
        (True, "double", False),
        ([1], "any", True),
    ],
)
def test_check_type(value: object, value_type: str, ok: bool) -> None:
    result = make_result("f", value, 0, Reason("OFF"), 2, track_events=True)
    checked = check_type(result, value_type)  # type: ignore[arg-type]
    if ok:
        assert checked is result
    else:
        assert (checked.value, checked.variation, checked.version) == (None, None, 2)
        assert checked.reason == Reason("ERROR", error_kind="WRONG_TYPE")
        assert checked.track_events
    no_variation = make_result("f", None, None, Reason("OFF"), 2)
    assert check_type(no_variation, value_type) is no_variation  # type: ignore[arg-type]


def test_reason_encodings_are_cached_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from protocol.evaluation import result

    monkeypatch.setattr(result, "_REASON_CACHE_SIZE", 2)
    result._encoded_reasons.clear()
    for i in range(5):
        assert json.loads(Reason("RULE_MATCH", i, "r").encoded())["ruleIndex"] == i
    assert len(result._encoded_reasons) <= 2
    reason = Reason("RULE_MATCH", 4, "r")
    assert reason.encoded() is reason.encoded()
