"""LaunchDarkly's SDK test harness evaluation data, run against protocol.evaluation.

Server side: every one of the 728 evaluations must give the expected value, variation index
and reason, both through ``evaluate`` and as the flag's member of the all-flags JSON (unless
the suite sets ``skipEvaluateAllFlags``). ``errors-wrong-type.yml`` (capability
``strongly-typed``) runs through ``check_type``, our typed getter.

Client side: the 30 evaluations read flags from an evaluated payload; we build, for every
payload entry, a flag whose evaluation gives that value/variation/reason, and check that our
all-flags JSON carries exactly the fields a client SDK reads (see ``test_client_side``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import Case, server_side_cases, suites

from protocol.evaluation import (
    CompiledEnvironment,
    ContextError,
    EvaluationResult,
    error_result,
    parse_context,
)
from protocol.evaluation.result import check_type

pytestmark = pytest.mark.unit

CASES = server_side_cases()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _zero_of(flags: dict[str, Any], key: str) -> Any:
    variations = (flags.get(key) or {}).get("variations") or [None]
    first = variations[0]
    zero: dict[type, Any] = {bool: False, int: 0, float: 0.0, str: "", list: [], dict: {}}
    return zero.get(type(first))


def _evaluate(case: Case) -> EvaluationResult:
    env = CompiledEnvironment.from_items(case.flags, case.segments)
    try:
        context = parse_context(case.context)
    except ContextError:
        return error_result(case.flag_key, "USER_NOT_SPECIFIED")
    result = env.evaluate(case.flag_key, context)
    if case.value_type:
        result = check_type(result, case.value_type)  # type: ignore[arg-type]
    return result


def test_the_whole_harness_is_loaded() -> None:
    server = list(suites("server-side-eval"))
    client = list(suites("client-side-eval"))
    assert (len(server), sum(len(s["evaluations"]) for _, s in server)) == (301, 728)
    assert (len(client), sum(len(s["evaluations"]) for _, s in client)) == (20, 30)
    assert len(CASES) == 728


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_server_side(case: Case) -> None:
    result = _evaluate(case)
    default = case.default if case.default is not None else _zero_of(case.flags, case.flag_key)
    value = result.value if result.variation is not None else default
    expect = case.expect
    assert _canonical(value) == _canonical(expect["value"])
    assert result.variation == expect.get("variationIndex")
    assert result.reason.to_json() == expect["reason"]


def _all_flags_suites() -> list[tuple[str, dict[str, Any]]]:
    return [(f, s) for f, s in suites("server-side-eval") if not s.get("skipEvaluateAllFlags")]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_server_side_all_flags_member(case: Case) -> None:
    """The flag's member of the all-flags JSON says the same as ``evaluate``."""
    if case.file == "errors-wrong-type.yml":
        return  # typed getters only; the harness skips all-flags there too
    env = CompiledEnvironment.from_items(case.flags, case.segments)
    try:
        context = parse_context(case.context)
    except ContextError:
        return  # no all-flags answer for an invalid context (an HTTP 400 upstream)
    body = json.loads(env.all_flags_json(context, with_reasons=True))
    assert set(body) == set(env.flags)
    if case.flag_key not in env.flags:
        assert case.expect["reason"] == {"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"}
        return
    member = body[case.flag_key]
    expect = case.expect
    if expect.get("variationIndex") is None:
        assert member["value"] is None
    else:
        assert _canonical(member["value"]) == _canonical(expect["value"])
    assert member["variation"] == expect.get("variationIndex")
    assert member["reason"] == expect["reason"]
    assert member["version"] == member["flagVersion"] == case.flags[case.flag_key]["version"]
