"""Compiled flags and segments: shapes, results, targets, rules, rollouts, prerequisites,
segments, cycles and malformed data. (The harness data in test_conformance covers the
documented LaunchDarkly cases; these cover every path of the compiler.)"""

from __future__ import annotations

from typing import Any

import pytest

from protocol.evaluation import CompiledEnvironment, EvaluationResult, parse_context
from protocol.evaluation.compiler import compile_flag, compile_segment
from protocol.evaluation.result import Reason

pytestmark = pytest.mark.unit

USER = {
    "kind": "user",
    "key": "u1",
    "email": "a@b.c",
    "tags": ["x", "y"],
    "obj": {"a": {"b": 3}, "list": ["x", "y"]},
}


def flag(key: str = "f", **fields: Any) -> dict[str, Any]:
    return {"key": key, "version": 1, "on": True, "variations": [False, True], **fields}


def evaluate(
    item: dict[str, Any],
    context: dict[str, Any] | None = None,
    flags: list[dict[str, Any]] = (),  # type: ignore[assignment]
    segments: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> EvaluationResult:
    env = CompiledEnvironment.from_items([item, *flags], segments)
    return env.evaluate(item["key"], parse_context(context or USER))


def rule(*clauses: dict[str, Any], variation: int = 1, **fields: Any) -> dict[str, Any]:
    return {"id": "r", "clauses": list(clauses), "variation": variation, **fields}


def clause(attribute: str, op: str, *values: Any, **fields: Any) -> dict[str, Any]:
    return {"attribute": attribute, "op": op, "values": list(values), **fields}


def reason(result: EvaluationResult) -> dict[str, Any]:
    return result.reason.to_json()


MALFORMED = {"kind": "ERROR", "errorKind": "MALFORMED_FLAG"}


# --- shape ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ([], "a flag must be a JSON object"),
        ({"version": 1}, "key: is required"),
        ({"key": "f"}, "version: is required"),
        ({"key": "f", "version": True}, "version: must be an integer"),
        ({"key": "f", "version": 1, "on": "yes"}, "on: must be true or false"),
        ({"key": "f", "version": 1, "variations": {}}, "variations: must be a list"),
        ({"key": "f", "version": 1, "salt": 1}, "salt: must be a string"),
        ({"key": "f", "version": 1, "rules": [1]}, "rules[0]: must be an object"),
        (
            {"key": "f", "version": 1, "targets": [{"values": [1], "variation": 0}]},
            "targets[0].values[0]: must be a string",
        ),
        (
            {"key": "f", "version": 1, "targets": [{"values": []}]},
            "targets[0].variation: is required",
        ),
        (
            {"key": "f", "version": 1, "prerequisites": [{"variation": 0}]},
            "prerequisites[0].key: is required",
        ),
        (
            {"key": "f", "version": 1, "rules": [{"clauses": [{"op": 1}]}]},
            "rules[0].clauses[0].op: must be a string",
        ),
        (
            {
                "key": "f",
                "version": 1,
                "fallthrough": {"rollout": {"variations": [{"variation": 0}]}},
            },
            "fallthrough.rollout.variations[0].weight: is required",
        ),
        (
            {"key": "f", "version": 1, "debugEventsUntilDate": "soon"},
            "debugEventsUntilDate: must be a number",
        ),
        ({"key": "f", "version": 1, "variations": [float("nan")]}, "cannot be encoded"),
    ],
)
def test_malformed_flags(item: Any, error: str) -> None:
    compiled = compile_flag(item)
    assert compiled.error is not None and error in compiled.error
    assert compiled.constant is not None and compiled.constant.reason.to_json() == MALFORMED
    assert not compiled.on and compiled.prerequisite_keys == ()


def test_malformed_flag_keeps_readable_availability() -> None:
    item = {"key": "f", "version": 1, "on": 3, "clientSideAvailability": {"usingMobileKey": True}}
    compiled = compile_flag(item)
    assert compiled.error and compiled.mobile and not compiled.client_side
    bad = compile_flag({"key": "f", "version": 1, "on": 3, "clientSideAvailability": 1})
    assert not bad.mobile and not bad.client_side
    assert compile_flag(["x"]).key == "" and compile_flag(["x"]).version == 0


def test_missing_fields_take_defaults() -> None:
    compiled = compile_flag({"key": "f", "version": 2})
    assert compiled.error is None and not compiled.on
    assert compiled.constant is not None
    assert (compiled.constant.value, compiled.constant.variation) == (None, None)
    assert reason(compiled.constant) == {"kind": "OFF"}
    # An old-schema flag is visible to mobile SDKs; to JS ones if clientSide.
    assert compiled.mobile and not compiled.client_side
    assert compile_flag({"key": "f", "version": 2, "clientSide": True}).client_side


# --- results, constants ---------------------------------------------------------------------


def test_off_and_constant_flags() -> None:
    off = compile_flag(flag(on=False, offVariation=0, fallthrough={"variation": 1}))
    assert off.constant is not None and (off.constant.value, reason(off.constant)) == (
        False,
        {"kind": "OFF"},
    )
    fixed = compile_flag(flag(fallthrough={"variation": 1}, trackEventsFallthrough=True))
    assert fixed.constant is not None and fixed.constant.value is True
    assert fixed.constant.track_reason and fixed.constant.track_events
    first_rule = compile_flag(flag(rules=[rule(variation=0)], fallthrough={"variation": 1}))
    assert first_rule.constant is not None
    assert reason(first_rule.constant) == {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "r"}
    for dynamic in (
        flag(rules=[rule(clause("email", "in", "x"))], fallthrough={"variation": 1}),
        flag(rules=[{"clauses": [], "rollout": {"variations": [{"variation": 0, "weight": 1}]}}]),
        flag(fallthrough={"rollout": {"variations": [{"variation": 0, "weight": 100000}]}}),
        flag(targets=[{"values": ["u1"], "variation": 0}], fallthrough={"variation": 1}),
        flag(prerequisites=[{"key": "p", "variation": 0}], fallthrough={"variation": 1}),
    ):
        assert compile_flag(dynamic).constant is None


def test_variation_out_of_range_is_malformed_where_reached() -> None:
    item = flag(on=False, offVariation=5, fallthrough={"variation": 0})
    assert reason(evaluate(item)) == MALFORMED
    assert reason(evaluate(flag(on=False, offVariation=-1))) == MALFORMED
    assert reason(evaluate(flag(fallthrough={"variation": 2}))) == MALFORMED
    assert evaluate(flag(fallthrough={"variation": 1}, offVariation=9)).value is True


def test_missing_or_empty_outcomes_are_malformed() -> None:
    assert reason(evaluate(flag())) == MALFORMED  # on, no fallthrough
    assert reason(evaluate(flag(fallthrough={"rollout": {"variations": []}}))) == MALFORMED
    assert reason(evaluate(flag(fallthrough={"rollout": {}}))) == MALFORMED
    both = flag(fallthrough={"variation": 0, "rollout": {"variations": []}})
    assert evaluate(both).variation == 0  # a variation wins over a rollout


def test_track_events_and_debug() -> None:
    item = flag(
        trackEvents=True,
        debugEventsUntilDate=99,
        fallthrough={"variation": 0},
        rules=[rule(clause("email", "in", "a@b.c"), trackEvents=True)],
    )
    result = evaluate(item)
    assert (result.track_events, result.track_reason, result.debug_events_until_date) == (
        True,
        True,
        99,
    )
    other = evaluate(item, {"kind": "user", "key": "x"})
    assert (other.track_events, other.track_reason) == (True, False)


# --- targets --------------------------------------------------------------------------------


def test_user_targets_first_match_wins() -> None:
    item = flag(
        fallthrough={"variation": 0},
        targets=[{"values": ["u1"], "variation": 1}, {"values": ["u1", "u2"], "variation": 0}],
    )
    assert (evaluate(item).variation, reason(evaluate(item))) == (1, {"kind": "TARGET_MATCH"})
    assert evaluate(item, {"kind": "user", "key": "u2"}).variation == 0
    assert reason(evaluate(item, {"kind": "org", "key": "u1"})) == {"kind": "FALLTHROUGH"}
    assert reason(evaluate(item, {"kind": "user", "key": "u3"})) == {"kind": "FALLTHROUGH"}


def test_context_targets_order_and_user_indirection() -> None:
    item = flag(
        variations=["ft", "a", "b", "c"],
        fallthrough={"variation": 0},
        targets=[{"values": ["u1"], "variation": 2}, {"values": ["u9"], "variation": 1}],
        contextTargets=[
            {"contextKind": "org", "values": ["o1"], "variation": 1},
            {"values": [], "variation": 2},  # user: keys are in targets[variation 2]
            {"contextKind": "user", "values": ["ignored"], "variation": 3},  # no such user target
        ],
    )
    multi = {"kind": "multi", "user": {"key": "u1"}, "org": {"key": "o1"}}
    assert evaluate(item, multi).value == "a"  # org target comes first
    assert (
        evaluate(item, {"kind": "multi", "user": {"key": "u1"}, "org": {"key": "o2"}}).value == "b"
    )
    assert evaluate(item, {"kind": "user", "key": "u9"}).value == "ft"  # not in contextTargets
    assert evaluate(item, {"kind": "user", "key": "ignored"}).value == "ft"
    assert (
        evaluate(item, {"kind": "multi", "user": {"key": "x"}, "dev": {"key": "o1"}}).value == "ft"
    )


# --- clauses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clause_", "matches"),
    [
        (clause("email", "in", "a@b.c"), True),
        (clause("email", "in", "a@b.c", negate=True), False),
        (clause("tags", "in", "y"), True),  # any element of an array
        (clause("tags", "in", "z"), False),
        (clause("tags", "in", "z", negate=True), True),
        (clause("tags", "in", "y", negate=True), False),
        (clause("missing", "in", "x", negate=True), False),  # absent: no match, even negated
        (clause("/obj/a/b", "in", 3, contextKind="user"), True),
        (clause("/obj/a/b/c", "in", 3, contextKind="user"), False),
        (clause("/obj/x/b", "in", 3, contextKind="user"), False),
        (clause("/obj/list", "in", "y", contextKind="user"), True),
        (clause("/obj/list", "in", "z", contextKind="user", negate=True), True),
        (clause("/obj/list", "in", "y", contextKind="user", negate=True), False),
        (clause("/obj/a/b", "in", 3), False),  # no contextKind: a literal name
        (clause("email", "in", "a@b.c", contextKind="org"), False),  # no org context
        (clause("kind", "in", "user"), True),
        (clause("kind", "in", "org", negate=True), True),
        (clause("kind", "in", "user", negate=True), False),
        (clause("key", "startsWith", "u"), True),
        (clause("anonymous", "in", False), True),
        (clause("email", "unsupportedOperator", "a@b.c", negate=True), True),
        ({"op": "in", "values": ["a@b.c"], "attribute": "email"}, True),
        ({"op": "in", "attribute": "email"}, False),
    ],
)
def test_clauses(clause_: dict[str, Any], matches: bool) -> None:
    item = flag(rules=[rule(clause_)], fallthrough={"variation": 0})
    assert evaluate(item).value is matches


def test_invalid_attribute_reference_fails_only_when_used() -> None:
    item = flag(
        rules=[rule(clause("/a//b", "in", 1, contextKind="user"))], fallthrough={"variation": 0}
    )
    assert reason(evaluate(item)) == MALFORMED
    assert reason(evaluate(item, {"kind": "org", "key": "o"})) == {"kind": "FALLTHROUGH"}
    no_attribute = flag(rules=[rule({"op": "in", "values": [1]})], fallthrough={"variation": 0})
    assert reason(evaluate(no_attribute)) == MALFORMED


# --- rollouts -------------------------------------------------------------------------------


def rollout(*buckets: tuple[int, int], **fields: Any) -> dict[str, Any]:
    return {"variations": [{"variation": v, "weight": w} for v, w in buckets], **fields}


def test_rollouts_bucket_as_launchdarkly() -> None:
    # flag hashKey, salt saltyA: userKeyA 0.42, userKeyB 0.67, userKeyC 0.10
    item = flag(
        key="hashKey", salt="saltyA", fallthrough={"rollout": rollout((0, 60000), (1, 40000))}
    )
    got = [
        evaluate(item, {"kind": "user", "key": k}).variation
        for k in ("userKeyA", "userKeyB", "userKeyC")
    ]
    assert got == [0, 1, 0]
    short = flag(key="hashKey", salt="saltyA", fallthrough={"rollout": rollout((0, 10), (1, 10))})
    assert evaluate(short, {"kind": "user", "key": "userKeyB"}).variation == 1  # past the end: last


def test_rollout_by_attribute_kind_and_seed() -> None:
    by_attr = flag(
        key="hashKey",
        salt="saltyA",
        fallthrough={"rollout": rollout((0, 50000), (1, 50000), bucketBy="n")},
    )
    assert evaluate(by_attr, {"kind": "user", "key": "z", "n": "userKeyB"}).variation == 1
    assert evaluate(by_attr, {"kind": "user", "key": "userKeyB"}).variation == 0  # absent: bucket 0
    org = flag(
        key="hashKey",
        salt="saltyA",
        fallthrough={"rollout": rollout((0, 50000), (1, 50000), contextKind="org")},
    )
    assert evaluate(org, {"kind": "org", "key": "userKeyB"}).variation == 1
    assert evaluate(org, {"kind": "user", "key": "userKeyB"}).variation == 0  # no org: first
    seeded = flag(key="x", fallthrough={"rollout": rollout((0, 50000), (1, 50000), seed=61)})
    assert evaluate(seeded, {"kind": "user", "key": "userKeyC"}).variation == 1  # 0.92
    nested = flag(
        key="hashKey",
        salt="saltyA",
        fallthrough={
            "rollout": rollout((0, 50000), (1, 50000), bucketBy="/obj/k", contextKind="user")
        },
    )
    assert evaluate(nested, {"kind": "user", "key": "z", "obj": {"k": "userKeyB"}}).variation == 1
    assert evaluate(nested, {"kind": "user", "key": "userKeyB", "obj": "k"}).variation == 0
    bad_ref = flag(
        fallthrough={"rollout": rollout((0, 100000), bucketBy="/a//", contextKind="user")}
    )
    assert reason(evaluate(bad_ref)) == MALFORMED
    assert reason(evaluate(bad_ref, {"kind": "org", "key": "o"})) == {"kind": "FALLTHROUGH"}


def test_rollouts_with_negative_weights_scan_in_order() -> None:
    odd = flag(fallthrough={"rollout": rollout((0, -50000), (1, 150000))})
    assert evaluate(odd, {"kind": "org", "key": "o"}).variation == 0  # -1 < -0.5: bucket 0
    assert evaluate(odd).variation == 1  # any bucket >= 0 is below 1.0 only
    none_above = flag(fallthrough={"rollout": rollout((0, -50000), (1, -50000))})
    assert evaluate(none_above).variation == 1  # past the end: the last bucket
    lone_surrogate = evaluate(flag(fallthrough={"rollout": rollout((0, 50000), (1, 50000))}),
                              {"kind": "user", "key": "\ud800"})  # fmt: skip
    assert lone_surrogate.variation in (0, 1)


def test_unexpected_failures_are_errors_not_exceptions() -> None:
    # An integer too long to print (only from a context built in Python, not from JSON).
    context = parse_context({"kind": "user", "key": "k", "n": 10**5000})
    by_n = flag(fallthrough={"rollout": rollout((0, 100000), bucketBy="n")})
    env = CompiledEnvironment.from_items([by_n])
    assert reason(env.evaluate("f", context)) == {"kind": "ERROR", "errorKind": "EXCEPTION"}
    compiled = compile_flag(
        flag(prerequisites=[{"key": "p", "variation": 0}], fallthrough={"variation": 1})
    )
    assert reason(compiled.evaluate(context, {}, {})) == {  # no scope given: one is made
        "kind": "PREREQUISITE_FAILED",
        "prerequisiteKey": "p",
    }


def test_experiments() -> None:
    experiment = rollout((0, 50000), (1, 50000), kind="experiment", bucketBy="ignored")
    experiment["variations"][1]["untracked"] = True
    item = flag(key="hashKey", salt="saltyA", fallthrough={"rollout": experiment})
    in_experiment = evaluate(item, {"kind": "user", "key": "userKeyA"})
    assert reason(in_experiment) == {"kind": "FALLTHROUGH", "inExperiment": True}
    assert in_experiment.track_reason and in_experiment.track_events
    untracked = evaluate(item, {"kind": "user", "key": "userKeyB"})
    assert reason(untracked) == {"kind": "FALLTHROUGH"} and not untracked.track_reason
    experiment["contextKind"] = "org"
    no_org = evaluate(
        flag(fallthrough={"rollout": experiment}), {"kind": "user", "key": "userKeyA"}
    )
    assert reason(no_org) == {"kind": "FALLTHROUGH"}
    ruled = flag(
        key="hashKey",
        salt="saltyA",
        rules=[{"id": "e", "clauses": [], "rollout": rollout((1, 100000), kind="experiment")}],
    )
    assert reason(evaluate(ruled)) == {
        "kind": "RULE_MATCH",
        "ruleIndex": 0,
        "ruleId": "e",
        "inExperiment": True,
    }


# --- prerequisites --------------------------------------------------------------------------


def test_prerequisites() -> None:
    p1 = flag("p1", fallthrough={"variation": 1})
    p2 = flag("p2", rules=[rule(clause("email", "in", "a@b.c"))], fallthrough={"variation": 0})
    item = flag(
        prerequisites=[{"key": "p1", "variation": 1}, {"key": "p2", "variation": 1}],
        offVariation=0,
        fallthrough={"variation": 1},
    )
    passed = evaluate(item, flags=[p1, p2])
    assert (passed.value, passed.prerequisites) == (True, ("p1", "p2"))
    failed = evaluate(item, {"kind": "user", "key": "x"}, flags=[p1, p2])
    assert failed.value is False and failed.prerequisites == ("p1", "p2")
    assert reason(failed) == {"kind": "PREREQUISITE_FAILED", "prerequisiteKey": "p2"}
    missing = evaluate(item, flags=[p2])
    assert reason(missing) == {"kind": "PREREQUISITE_FAILED", "prerequisiteKey": "p1"}
    assert missing.prerequisites == ("p1",)
    off = evaluate(item, flags=[{**p1, "on": False, "offVariation": 1}, p2])
    assert reason(off) == {"kind": "PREREQUISITE_FAILED", "prerequisiteKey": "p1"}
    broken = evaluate(item, flags=[{**p1, "on": 1}, p2])  # a malformed prerequisite fails
    assert reason(broken) == {"kind": "PREREQUISITE_FAILED", "prerequisiteKey": "p1"}


def test_prerequisite_cycles_and_nested_errors() -> None:
    a = flag("a", prerequisites=[{"key": "b", "variation": 1}], fallthrough={"variation": 1})
    b = flag("b", prerequisites=[{"key": "c", "variation": 1}], fallthrough={"variation": 1})
    c = flag("c", prerequisites=[{"key": "a", "variation": 1}], fallthrough={"variation": 1})
    cycle = evaluate(a, flags=[b, c])
    assert reason(cycle) == MALFORMED and cycle.prerequisites == ("b",)
    itself = flag("s", prerequisites=[{"key": "s", "variation": 1}], fallthrough={"variation": 1})
    assert reason(evaluate(itself)) == MALFORMED
    bad_rule = flag(
        "n", rules=[rule(clause("/x//", "in", 1, contextKind="user"))], fallthrough={"variation": 1}
    )
    top = flag("t", prerequisites=[{"key": "n", "variation": 1}], fallthrough={"variation": 1})
    assert reason(evaluate(top, flags=[bad_rule])) == MALFORMED
    diamond = flag(
        "d",
        prerequisites=[{"key": "p", "variation": 1}, {"key": "q", "variation": 1}],
        fallthrough={"variation": 1},
    )
    p = flag("p", prerequisites=[{"key": "q", "variation": 1}], fallthrough={"variation": 1})
    q = flag("q", fallthrough={"variation": 1})
    assert evaluate(diamond, flags=[p, q]).value is True  # shared, not a cycle


def test_deep_prerequisite_chain_gives_an_error_not_an_exception() -> None:
    chain = [
        flag(
            f"c{i}",
            prerequisites=[{"key": f"c{i + 1}", "variation": 1}],
            fallthrough={"variation": 1},
        )
        for i in range(600)
    ]
    result = evaluate(chain[0], flags=chain[1:])
    assert reason(result) == {"kind": "ERROR", "errorKind": "EXCEPTION"}


# --- segments -------------------------------------------------------------------------------


def segment(key: str = "s", **fields: Any) -> dict[str, Any]:
    return {"key": key, "version": 1, **fields}


def in_segment(
    *segments: dict[str, Any], context: dict[str, Any] | None = None, negate: bool = False
) -> Any:
    item = flag(
        rules=[rule(clause("", "segmentMatch", "nope", 5, "s", negate=negate))],
        fallthrough={"variation": 0},
    )
    return evaluate(item, context or USER, segments=list(segments)).value


def test_segment_lists() -> None:
    s = segment(
        included=["u1"],
        excluded=["u2"],
        includedContexts=[{"contextKind": "org", "values": ["o1"]}],
        excludedContexts=[{"contextKind": "org", "values": ["o2"]}, {"values": ["u3"]}],
        rules=[{"clauses": []}],
    )
    assert in_segment(s) is True
    assert in_segment(s, context={"kind": "user", "key": "u2"}) is False
    assert in_segment(s, context={"kind": "user", "key": "u3"}) is False
    assert in_segment(s, context={"kind": "org", "key": "o1"}) is True
    assert in_segment(s, context={"kind": "org", "key": "o2"}) is False
    assert (
        in_segment(s, context={"kind": "multi", "org": {"key": "o2"}, "user": {"key": "u1"}})
        is True
    )
    assert in_segment(s, context={"kind": "user", "key": "other"}) is True  # the rule matches all
    excluded_multi = {"kind": "multi", "org": {"key": "o9"}, "user": {"key": "u2"}}
    assert in_segment(s, context=excluded_multi) is False
    assert in_segment(segment(), context={"kind": "user", "key": "u1"}) is False
    assert in_segment(s, negate=True) is False
    assert in_segment() is False  # no such segment


def test_segment_rules_and_weights() -> None:
    by_email = segment(
        rules=[
            {"clauses": [clause("email", "in", "nope")]},
            {"clauses": [clause("email", "endsWith", ".c")]},
        ]
    )
    assert in_segment(by_email) is True
    assert in_segment(by_email, context={"kind": "user", "key": "u1"}) is False
    # segment hashKey, salt saltyA: userKeyA 0.42, userKeyB 0.67
    weighted = segment("s", salt="saltyA", rules=[{"clauses": [], "weight": 50000}])
    weighted["key"] = "s"
    half = [
        in_segment(weighted, context={"kind": "user", "key": k})
        for k in ("userKeyA", "userKeyB", "userKeyC")
    ]
    assert half.count(True) >= 1 and half.count(False) >= 1
    none = segment(rules=[{"clauses": [], "weight": 0}])
    assert in_segment(none) is False
    other_kind = segment(rules=[{"clauses": [], "weight": 0, "rolloutContextKind": "org"}])
    assert in_segment(other_kind) is True  # no org context: bucket -1, below any weight
    by_attribute = segment(rules=[{"clauses": [], "weight": 100000, "bucketBy": "email"}])
    assert in_segment(by_attribute) is True


def test_nested_segments_and_cycles() -> None:
    outer = segment("s", rules=[{"clauses": [clause("", "segmentMatch", "inner")]}])
    inner = segment("inner", included=["u1"])
    assert in_segment(outer, inner) is True
    loop = segment("inner", rules=[{"clauses": [clause("", "segmentMatch", "s")]}])
    item = flag(rules=[rule(clause("", "segmentMatch", "s"))], fallthrough={"variation": 0})
    assert reason(evaluate(item, segments=[outer, loop])) == MALFORMED
    self_loop = segment("s", rules=[{"clauses": [clause("", "segmentMatch", "s")]}])
    assert reason(evaluate(item, segments=[self_loop])) == MALFORMED
    included_first = segment(
        "s", included=["u1"], rules=[{"clauses": [clause("", "segmentMatch", "s")]}]
    )
    assert evaluate(item, segments=[included_first]).value is True  # no rule reached


def test_malformed_segment_fails_the_flags_that_consult_it() -> None:
    broken = compile_segment(segment(included="u1"))
    assert broken.error == "included: must be a list"
    assert compile_segment(3).error == "a segment must be a JSON object"
    assert compile_segment({"key": "s"}).error == "version: is required"
    item = flag(rules=[rule(clause("", "segmentMatch", "s"))], fallthrough={"variation": 0})
    assert reason(evaluate(item, segments=[segment(included="u1")])) == MALFORMED


def test_big_segments_without_a_store() -> None:
    item = flag(rules=[rule(clause("", "segmentMatch", "s"))], fallthrough={"variation": 0})
    no_generation = segment(unbounded=True, included=["u1"])
    env = CompiledEnvironment.from_items([item], [no_generation])
    result = env.evaluate("f", parse_context(USER))
    assert reason(result) == {"kind": "FALLTHROUGH", "bigSegmentsStatus": "NOT_CONFIGURED"}
    assert env.evaluate("f", parse_context(USER)) is result  # built once
    rules_only = segment(
        unbounded=True,
        generation=2,
        included=["u1"],
        rules=[{"clauses": [clause("email", "in", "a@b.c")]}],
    )
    matched = evaluate(item, segments=[rules_only])
    assert reason(matched) == {
        "kind": "RULE_MATCH",
        "ruleIndex": 0,
        "ruleId": "r",
        "bigSegmentsStatus": "NOT_CONFIGURED",
    }
    other_kind = segment(unbounded=True, generation=2, unboundedContextKind="org")
    assert reason(evaluate(item, segments=[other_kind])) == {"kind": "FALLTHROUGH"}
    prereq = flag("top", prerequisites=[{"key": "f", "variation": 1}], fallthrough={"variation": 1})
    through = evaluate(prereq, flags=[item], segments=[rules_only])
    assert reason(through) == {"kind": "FALLTHROUGH", "bigSegmentsStatus": "NOT_CONFIGURED"}


def test_results_are_shared_objects() -> None:
    item = flag(rules=[rule(clause("email", "in", "a@b.c"))], fallthrough={"variation": 0})
    env = CompiledEnvironment.from_items([item])
    ctx = parse_context(USER)
    assert env.evaluate("f", ctx) is env.evaluate("f", ctx)
    assert env.evaluate("f", ctx).reason == Reason("RULE_MATCH", 0, "r")


def test_flag_with_segment_clauses_turns_failures_into_errors() -> None:
    # The scoped fast path (segment clauses, no prerequisites) catches as the general one.
    context = parse_context({"kind": "user", "key": "k", "n": 10**5000})
    seg = {"key": "s", "version": 1, "included": ["k"]}
    by_n = flag(
        rules=[
            {
                "id": "r",
                "clauses": [{"attribute": "segmentMatch", "op": "segmentMatch", "values": ["s"]}],
                "rollout": rollout((0, 100000), bucketBy="n"),
            }
        ]
    )
    env = CompiledEnvironment.from_items([by_n], [seg])
    assert reason(env.evaluate("f", context)) == {"kind": "ERROR", "errorKind": "EXCEPTION"}
    run = env.runner("f")
    assert run is not None and env.runner("missing") is None
    assert reason(run(context)) == {"kind": "ERROR", "errorKind": "EXCEPTION"}
