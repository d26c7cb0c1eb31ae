"""A compiled environment: changes, the dependency index, audiences and all-flags JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.evaluation import CompiledEnvironment, error_result, parse_context

pytestmark = pytest.mark.unit

USER = parse_context({"kind": "user", "key": "u1", "email": "a@b.c"})


def flag(key: str, **fields: Any) -> dict[str, Any]:
    return {
        "key": key,
        "version": 1,
        "on": True,
        "variations": [False, True],
        "fallthrough": {"variation": 1},
        **fields,
    }


def uses_segment(key: str, segment: str, **fields: Any) -> dict[str, Any]:
    clause = {"attribute": "", "op": "segmentMatch", "values": [segment]}
    return flag(key, rules=[{"id": "r", "clauses": [clause], "variation": 0}], **fields)


def needs(key: str, *prerequisites: str, **fields: Any) -> dict[str, Any]:
    return flag(key, prerequisites=[{"key": p, "variation": 1} for p in prerequisites], **fields)


def test_apply_returns_the_affected_flags() -> None:
    env = CompiledEnvironment()
    assert env.apply("flag", "a", flag("a")) == {"a"}
    assert env.apply("flag", "b", needs("b", "a")) == {"b"}
    assert env.apply("flag", "c", needs("c", "b")) == {"c"}
    assert env.apply("flag", "d", uses_segment("d", "s1")) == {"d"}
    assert env.apply("flag", "e", needs("e", "d")) == {"e"}
    assert env.apply("segment", "s2", {"key": "s2", "version": 1}) == set()
    nested = {
        "key": "s1",
        "version": 1,
        "rules": [{"clauses": [{"attribute": "", "op": "segmentMatch", "values": ["s2"]}]}],
    }
    assert env.apply("segment", "s1", nested) == {"d", "e"}
    assert env.affected_flags("flag", "a") == {"a", "b", "c"}
    assert env.affected_flags("segment", "s2") == {"d", "e"}
    assert env.affected_flags("segment", "unused") == set()
    assert env.affected_flags("flag", "missing") == {"missing"}
    # A new version drops its old references.
    assert env.apply("flag", "b", flag("b")) == {"b", "c"}
    assert env.affected_flags("flag", "a") == {"a"}
    assert env.apply("segment", "s1", {"key": "s1", "version": 2}) == {"d", "e"}
    assert env.affected_flags("segment", "s2") == set()
    # Deletions.
    assert env.apply("flag", "d", None) == {"d", "e"}
    assert env.affected_flags("segment", "s1") == set()
    assert "d" not in env.flags
    assert env.apply("segment", "s1", None) == set()
    assert env.apply("segment", "never", None) == set()
    assert env.evaluate("d", USER).reason.to_json() == {
        "kind": "ERROR",
        "errorKind": "FLAG_NOT_FOUND",
    }


def test_shared_and_repeated_references() -> None:
    env = CompiledEnvironment.from_items([flag("p"), needs("a", "p", "p"), needs("b", "p")])
    assert env.affected_flags("flag", "p") == {"p", "a", "b"}
    env.apply("flag", "a", None)  # "p" listed twice: its edge goes once
    assert env.affected_flags("flag", "p") == {"p", "b"}
    env.apply("flag", "b", None)
    assert env.affected_flags("flag", "p") == {"p"}
    env.apply("flag", "c", needs("c", "p", "p"))
    env.apply("flag", "c", None)
    assert env.affected_flags("flag", "p") == {"p"}


def test_cycles_formed_across_changes_evaluate_to_malformed() -> None:
    env = CompiledEnvironment()
    env.apply("flag", "a", needs("a", "b"))
    assert env.evaluate("a", USER).reason.to_json() == {
        "kind": "PREREQUISITE_FAILED",
        "prerequisiteKey": "b",
    }
    assert env.apply("flag", "b", needs("b", "a")) == {"a", "b"}
    malformed = {"kind": "ERROR", "errorKind": "MALFORMED_FLAG"}
    assert env.evaluate("a", USER).reason.to_json() == malformed
    assert env.evaluate("b", USER).reason.to_json() == malformed
    env.apply("flag", "b", flag("b"))
    assert env.evaluate("a", USER).value is True


def test_item_key_is_the_key_it_is_stored_under() -> None:
    env = CompiledEnvironment()
    env.apply("flag", "right", flag("wrong"))
    env.apply("segment", "s", {"version": 1, "included": ["u1"]})
    env.apply("flag", "x", uses_segment("x", "s"))
    assert env.evaluate("right", USER).key == "right"
    assert env.evaluate("x", USER).value is False  # matched segment "s" (variation 0)


def test_from_items() -> None:
    env = CompiledEnvironment.from_items(
        [flag("a"), {"key": "gone", "version": 2, "deleted": True}, "junk"],
        {"s": {"key": "s", "version": 1}},
    )
    assert set(env.flags) == {"a", ""} and set(env.segments) == {"s"}
    assert env.flags[""].error == "a flag must be a JSON object"


def all_flags(env: CompiledEnvironment, sdk: str = "server", *, reasons: bool = False) -> Any:
    return json.loads(env.all_flags_json(USER, sdk, with_reasons=reasons))  # type: ignore[arg-type]


def test_all_flags_by_audience() -> None:
    env = CompiledEnvironment.from_items(
        [
            flag(
                "js", clientSideAvailability={"usingEnvironmentId": True, "usingMobileKey": False}
            ),
            flag(
                "mobile",
                clientSideAvailability={"usingEnvironmentId": False, "usingMobileKey": True},
                rules=[
                    {
                        "id": "r",
                        "clauses": [{"attribute": "email", "op": "in", "values": ["a@b.c"]}],
                        "variation": 0,
                    }
                ],
            ),
            flag("old", clientSide=True, on=False),
            flag("server", clientSideAvailability={}),
        ]
    )
    assert set(all_flags(env)) == {"js", "mobile", "old", "server"}
    assert set(all_flags(env, "client")) == {"js", "old"}
    assert set(all_flags(env, "mobile")) == {"mobile", "old"}
    body = all_flags(env, "mobile", reasons=True)
    assert body["mobile"] == {
        "value": False,
        "variation": 0,
        "version": 1,
        "flagVersion": 1,
        "reason": {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "r"},
    }
    assert body["old"] == {
        "value": None,
        "variation": None,
        "version": 1,
        "flagVersion": 1,
        "reason": {"kind": "OFF"},
    }
    assert "reason" not in all_flags(env, "mobile")["mobile"]
    assert env.visible("js", "client") and not env.visible("js", "mobile")
    assert env.visible("server", "server") and not env.visible("nope", "server")
    results = env.evaluate_all(USER, "mobile")
    assert set(results) == {"mobile", "old"} and results["mobile"].variation == 0
    empty = CompiledEnvironment()
    assert empty.all_flags_json(USER) == b"{}"


def test_views_follow_changes() -> None:
    env = CompiledEnvironment.from_items([flag("a", on=False)])
    assert all_flags(env)["a"]["value"] is None
    env.apply("flag", "a", flag("a", version=2))
    assert all_flags(env)["a"] == {"value": True, "variation": 1, "version": 2, "flagVersion": 2}
    env.apply(
        "flag",
        "b",
        flag(
            "b",
            rules=[
                {"clauses": [], "rollout": {"variations": [{"variation": 0, "weight": 100000}]}}
            ],
        ),
    )
    assert all_flags(env)["b"]["value"] is False
    env.apply("flag", "a", None)
    assert set(all_flags(env)) == {"b"}


def test_single_evaluated_flag_json() -> None:
    env = CompiledEnvironment.from_items([flag("a", trackEvents=True)])
    assert json.loads(env.evaluated_flag_json("a", USER) or b"") == {
        "key": "a",
        "value": True,
        "variation": 1,
        "version": 1,
        "flagVersion": 1,
        "trackEvents": True,
    }
    assert json.loads(env.evaluated_flag_json("a", USER, with_reasons=True) or b"")["reason"] == {
        "kind": "FALLTHROUGH"
    }
    assert env.evaluated_flag_json("nope", USER) is None


def test_error_result() -> None:
    result = error_result("f", "USER_NOT_SPECIFIED")
    assert (result.value, result.variation, result.version) == (None, None, None)
    assert result.reason.to_json() == {"kind": "ERROR", "errorKind": "USER_NOT_SPECIFIED"}
