"""The harness's 30 client-side evaluations, against our evaluated (``evalx``) payload.

Each client-side suite gives the payload a client SDK receives (``sdkData``: per flag
``{version, value, variation, reason}``) and what the SDK's ``variationDetail`` must return.
For every payload entry we build a server-side flag whose evaluation gives that entry, take
our all-flags JSON for the suite's context, check each member has exactly the fields of the
format (result.py), and read it as a client SDK does (``client_detail``).

Three fixtures cannot be produced by any evaluation and are checked as documented here:
the reasons ``{"isExperiment": true}`` and ``{"prereqKey": ...}`` are the fixture's names for
LaunchDarkly's ``inExperiment`` and ``prerequisiteKey`` (a client SDK passes the object
through), so the expected reason is translated; and an ``ERROR`` reason *with* a value and
variation (two fixtures) — an evaluation error never has one: we produce the error
(``MALFORMED_FLAG``; ``EXCEPTION`` is not an outcome of flag data) and check the client gets
its default with that reason.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import suites

from protocol.evaluation import CompiledEnvironment, parse_context

pytestmark = pytest.mark.unit

REQUIRED = {"value", "variation", "version", "flagVersion"}
OPTIONAL = {"trackEvents", "trackReason", "reason", "debugEventsUntilDate", "prerequisites"}
FIXTURE_NAMES = {"isExperiment": "inExperiment", "prereqKey": "prerequisiteKey"}


def _cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        (f"{file}: {suite['name']} / {e['flagKey']} {e.get('valueType') or ''}", suite, e)
        for file, suite in suites("client-side-eval")
        for e in suite["evaluations"]
    ]


CASES = _cases()


def flag_for(key: str, entry: dict[str, Any], context_key: str) -> dict[str, Any]:
    """A server-side flag whose evaluation for ``context_key`` gives the payload ``entry``."""
    variation = entry["variation"]
    variations: list[Any] = ["other"] * (variation + 1)
    variations[variation] = entry["value"]
    reason = entry.get("reason") or {"kind": "FALLTHROUGH"}
    experiment = reason.get("isExperiment", False)
    base = {
        "key": key,
        "version": entry.get("version", 1),
        "on": True,
        "variations": variations,
        "clientSideAvailability": {"usingEnvironmentId": True, "usingMobileKey": True},
        "fallthrough": {"variation": variation},
        "offVariation": variation,
    }
    kind = reason["kind"]
    if experiment:
        everyone = {
            "kind": "experiment",
            "variations": [{"variation": variation, "weight": 100000}],
        }
        if kind == "FALLTHROUGH":
            return {**base, "fallthrough": {"rollout": everyone}}
        return {
            **base,
            "rules": [
                {"id": "no", "clauses": [_never()], "variation": 0},
                {"id": reason["ruleId"], "clauses": [], "rollout": everyone},
            ],
        }
    if kind == "OFF":
        return {**base, "on": False}
    if kind == "TARGET_MATCH":
        return {**base, "targets": [{"values": [context_key], "variation": variation}]}
    if kind == "RULE_MATCH":
        return {
            **base,
            "rules": [
                {"id": "no", "clauses": [_never()], "variation": 0},
                {"id": reason["ruleId"], "clauses": [], "variation": variation},
            ],
        }
    if kind == "PREREQUISITE_FAILED":
        return {**base, "prerequisites": [{"key": reason["prereqKey"], "variation": 0}]}
    if kind == "ERROR":
        return {**base, "fallthrough": {"variation": len(variations)}}  # out of range
    return base  # FALLTHROUGH


def _never() -> dict[str, Any]:
    return {"attribute": "key", "op": "in", "values": []}


def client_detail(
    payload: dict[str, Any], key: str, default: Any, value_type: str | None
) -> dict[str, Any]:
    """What a client SDK's ``variationDetail`` returns from an ``evalx`` payload."""
    member = payload.get(key)
    if member is None:
        return {"value": default, "reason": {"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"}}
    value, variation = member["value"], member["variation"]
    if variation is None:
        return {"value": default, "reason": member.get("reason")}
    wanted = {"bool": (bool,), "string": (str,), "int": (int, float), "double": (int, float)}
    types = wanted.get(value_type or "any")
    if types is not None and (type(value) not in types):
        return {"value": default, "reason": {"kind": "ERROR", "errorKind": "WRONG_TYPE"}}
    return {"value": value, "variationIndex": variation, "reason": member.get("reason")}


def _translate(reason: dict[str, Any]) -> dict[str, Any]:
    return {FIXTURE_NAMES.get(k, k): v for k, v in reason.items()}


def test_all_thirty_are_loaded() -> None:
    assert len(CASES) == 30


@pytest.mark.parametrize(("name", "suite", "evaluation"), CASES, ids=[c[0] for c in CASES])
def test_client_side(name: str, suite: dict[str, Any], evaluation: dict[str, Any]) -> None:
    context = parse_context(suite["context"])
    flags = [flag_for(k, entry, context.key) for k, entry in suite["sdkData"].items()]
    env = CompiledEnvironment.from_items(flags)
    payload = json.loads(env.all_flags_json(context, "client", with_reasons=True))
    assert set(payload) == set(suite["sdkData"])
    for member in payload.values():
        assert REQUIRED <= set(member) <= REQUIRED | OPTIONAL
        assert member["version"] == member["flagVersion"] == 1
    got = client_detail(
        payload, evaluation["flagKey"], evaluation["default"], evaluation.get("valueType")
    )
    expect = dict(evaluation["expect"])
    expect["reason"] = _translate(expect["reason"])
    if expect["reason"]["kind"] == "ERROR" and "variationIndex" in expect:
        # An evaluation error has no value: the client falls back to its default.
        assert got == {
            "value": evaluation["default"],
            "reason": {"kind": "ERROR", "errorKind": "MALFORMED_FLAG"},
        }
        assert payload[evaluation["flagKey"]]["value"] is None
        return
    assert got == expect
    if got["reason"].get("inExperiment"):
        member = payload[evaluation["flagKey"]]
        assert member["trackEvents"] is member["trackReason"] is True
