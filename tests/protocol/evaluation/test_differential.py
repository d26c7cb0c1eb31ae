"""Differential tests: our evaluator against LaunchDarkly's Python SDK evaluator (``ldclient``).

Hypothesis generates environments (flags with targets, contextTargets, rules with every
operator and odd values, rollouts and experiments, prerequisites including cycles; segments
with included/excluded lists, weighted rules, nesting including cycles, big segments) and
contexts (single and multi kind, missing attributes, arrays, numbers as strings, non-ASCII),
and every flag of the environment is evaluated by both. Value, variation index, reason and
the prerequisites evaluated must be identical, and so must the all-flags metadata
(``$flagsState`` as the SDK builds it from the same result: version, variation, reason,
trackEvents, trackReason, debugEventsUntilDate, prerequisites).

Examples per test: ``FLAGSTREAM_DIFFERENTIAL_EXAMPLES`` (default 2000; e.g. 100000 for a long
run). Generation stays inside what both sides define identically; the deliberate
differences (docs/evaluation.md) are not generated: whole floats as bucketing values (we
follow LaunchDarkly's Go/JS SDKs and published vectors) and booleans nested inside arrays
compared with numbers (the SDK's ``==`` makes ``[true] == [1]``; JSON equality does not).
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ldclient.context import Context as LDContext
from ldclient.evaluation import FeatureFlagsState
from ldclient.impl.evaluator import Evaluator
from ldclient.impl.events.types import EventFactory
from ldclient.impl.model import FeatureFlag, Segment

from protocol.evaluation import CompiledEnvironment, parse_context

pytestmark = [pytest.mark.unit, pytest.mark.slow]

EXAMPLES = int(os.environ.get("FLAGSTREAM_DIFFERENTIAL_EXAMPLES", "2000"))
DIFFERENTIAL = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FLAG_KEYS = ["f0", "f1", "f2", "f3"]
SEGMENT_KEYS = ["s0", "s1", "s2"]
KINDS = ["user", "org", "dev-ice"]
CONTEXT_KEYS = ["k0", "k1", "k2", "ü", "userKeyA", "33"]
ATTRIBUTES = [
    "a",
    "b",
    "email",
    "n",
    "tags",
    "obj",
    "ü",
    "/slash",
    "name",
    "key",
    "anonymous",
    "kind",
]
OPERATORS = [
    "in", "startsWith", "endsWith", "contains", "matches", "lessThan", "lessThanOrEqual",
    "greaterThan", "greaterThanOrEqual", "before", "after", "semVerEqual", "semVerLessThan",
    "semVerGreaterThan", "segmentMatch", "segmentMatch", "segmentMatch", "unknownOp",
]  # fmt: skip
STRINGS = [
    "", "a", "ab", "b", "k0", "userKeyA", "ü", "Ünïcode", "x@example.com", "@example.com",
    "1", "2.5", "-3", "33", "1.0.0", "2.0.0-rc.1", "2.0", "2", "v1", "1.2.3+build",
    "2017-12-06T00:00:00.000-07:00", "2017-12-06T07:00:00Z", "2017-12-06", "not a date",
    "^a", "b$", "[", ".*", "user", "org",
]  # fmt: skip

INTS = [-5, -1, 0, 1, 2, 3, 5, 33, 1512543600000, 2**53 - 1, -(2**40)]
FRACTIONS = [0.5, -1.5, 2.25, 1512543600000.5, 1e-7]
CONTEXT_ATTRIBUTES = ["a", "b", "email", "n", "tags", "obj", "ü", "/slash"]

# The generators below take a ``random.Random`` that hypothesis seeds (``st.randoms``):
# drawing a whole environment through hypothesis's per-value draws costs ~100 times more,
# which would allow only a few hundred examples per minute. Hypothesis picks and replays the
# seeds (a failure prints the seed and the generated data); it cannot shrink inside them.


def rarely(r: random.Random) -> bool:
    """True one time in eight: for the odd cases."""
    return r.random() < 0.125


def pick(r: random.Random, pool: list[Any]) -> Any:
    return pool[r.randrange(len(pool))]


def scalar(r: random.Random) -> Any:
    choice = r.randrange(4)
    if choice == 0:
        return pick(r, STRINGS)
    if choice == 1:
        return pick(r, INTS)
    if choice == 2:
        return pick(r, FRACTIONS)
    return r.random() < 0.5


def flat(r: random.Random) -> Any:
    """Inside arrays and objects: strings and integers only (no booleans for ``==`` to
    conflate with numbers)."""
    return pick(r, STRINGS) if r.random() < 0.6 else pick(r, INTS)


def attribute_value(r: random.Random) -> Any:
    choice = r.randrange(6)
    if choice <= 2:
        return scalar(r)
    if choice == 3:
        return [None if rarely(r) else scalar(r) for _ in range(r.randrange(4))]
    if choice == 4:
        return {pick(r, ["b", "c", "/"]): flat(r) for _ in range(r.randrange(3))}
    return [[flat(r) for _ in range(r.randrange(3))] for _ in range(r.randrange(3))]


def single_context(r: random.Random) -> dict[str, Any]:
    ctx: dict[str, Any] = {"key": pick(r, CONTEXT_KEYS)}
    for name in r.sample(CONTEXT_ATTRIBUTES, r.randrange(5)):
        ctx[name] = attribute_value(r)
    if r.random() < 0.3:
        ctx["name"] = pick(r, STRINGS)
    if r.random() < 0.3:
        ctx["anonymous"] = r.random() < 0.5
    return ctx


def context(r: random.Random) -> dict[str, Any]:
    kinds = r.sample(KINDS, 1 if r.random() < 0.6 else r.randrange(1, 4))
    if len(kinds) == 1:
        return {"kind": kinds[0], **single_context(r)}
    return {"kind": "multi", **{kind: single_context(r) for kind in kinds}}


def index(r: random.Random, size: int) -> int:
    """A variation index: in range, one time in 64 just outside it."""
    if rarely(r) and rarely(r):
        return pick(r, [-1, size])
    return r.randrange(max(1, size))


def clause(r: random.Random, segment: str | None = None) -> dict[str, Any]:
    op = pick(r, OPERATORS)
    out: dict[str, Any] = {"op": op, "negate": r.random() < 0.3}
    if op == "segmentMatch":
        out["attribute"] = ""
        # From a segment, usually only later segments (nesting); rarely any (cycles).
        pool = SEGMENT_KEYS if segment is None else SEGMENT_KEYS[SEGMENT_KEYS.index(segment) + 1 :]
        if rarely(r) or not pool:
            pool = [*SEGMENT_KEYS, "missing"]
        out["values"] = [pick(r, pool) for _ in range(r.randrange(1, 3))]
        return out
    kind = pick(r, [None, *KINDS])
    if kind is not None:
        out["contextKind"] = kind
        attribute = pick(r, [*ATTRIBUTES, "/obj/b", "/obj/~1", "/tags/0"])
    else:
        attribute = pick(r, [*ATTRIBUTES, "/obj/b"])
    if rarely(r) and rarely(r):
        attribute = pick(r, ["", "/", "/a//b", "/a~2"])  # invalid (with a context kind)
    out["attribute"] = attribute
    out["values"] = [
        [flat(r) for _ in range(r.randrange(3))] if rarely(r) else scalar(r)
        for _ in range(r.randrange(4))
    ]
    return out


def rollout(r: random.Random, size: int) -> dict[str, Any]:
    count = 0 if rarely(r) and rarely(r) else r.randrange(1, 4)
    weights = [r.randrange(100001) for _ in range(count)]
    if weights and not rarely(r):  # usually they add up to 100%
        weights[-1] = max(0, 100000 - sum(weights[:-1]))
    out: dict[str, Any] = {
        "variations": [
            {"variation": index(r, size), "weight": w, **({"untracked": True} if rarely(r) else {})}
            for w in weights
        ]
    }
    if r.random() < 0.5:
        out["kind"] = pick(r, ["rollout", "experiment", "experiment"])
    if r.random() < 0.4:
        out["bucketBy"] = pick(r, ["a", "n", "email", "/obj/b", "missing", ""])
    if r.random() < 0.4:
        out["contextKind"] = pick(r, KINDS)
    if r.random() < 0.3:
        out["seed"] = r.randrange(-(2**31), 2**31)
    return out


def outcome(r: random.Random, size: int) -> dict[str, Any]:
    if r.random() < 0.33:
        return {"rollout": rollout(r, size)}
    return {"variation": index(r, size)}


def flag(r: random.Random, key: str) -> dict[str, Any]:
    variations = [{"v": flat(r)} if rarely(r) else scalar(r) for _ in range(r.randrange(1, 4))]
    size = len(variations)
    out: dict[str, Any] = {
        "key": key,
        "version": r.randrange(1, 10),
        "on": not rarely(r),
        "variations": variations,
        "salt": pick(r, ["", "salt", "ü"]),
        "fallthrough": outcome(r, size),
        "trackEvents": r.random() < 0.3,
        "trackEventsFallthrough": r.random() < 0.3,
    }
    if r.random() < 0.5:
        out["offVariation"] = index(r, size)
    if r.random() < 0.2:
        out["debugEventsUntilDate"] = r.randrange(1, 2**40)
    out["targets"] = [
        {"values": r.sample(CONTEXT_KEYS, r.randrange(4)), "variation": index(r, size)}
        for _ in range(r.randrange(3))
    ]
    out["contextTargets"] = [
        {"contextKind": kind, "variation": index(r, size),
         "values": [] if kind == "user" else r.sample(CONTEXT_KEYS, r.randrange(4))}
        for kind in r.sample(KINDS, r.randrange(3))
    ]  # fmt: skip
    out["rules"] = []
    for _ in range(r.randrange(4)):
        rule = {**outcome(r, size), "clauses": [clause(r) for _ in range(r.randrange(4))],
                "trackEvents": r.random() < 0.3}  # fmt: skip
        if r.random() < 0.5:
            rule["id"] = pick(r, ["r0", "r1", ""])
        out["rules"].append(rule)
    # Prerequisites usually point to later flags; rarely anywhere (cycles) or nowhere.
    later = FLAG_KEYS[FLAG_KEYS.index(key) + 1 :] or ["missing"]
    out["prerequisites"] = [
        {
            "key": pick(r, [*FLAG_KEYS, "missing"] if rarely(r) else later),
            "variation": r.randrange(2),
        }
        for _ in range(pick(r, [0, 0, 0, 1, 1, 2]))
    ]
    return out


def segment(r: random.Random, key: str) -> dict[str, Any]:
    def keys() -> list[str]:
        return r.sample(CONTEXT_KEYS, r.randrange(4))

    def targets() -> list[dict[str, Any]]:
        return [{"contextKind": k, "values": keys()} for k in r.sample(KINDS, r.randrange(3))]

    out: dict[str, Any] = {
        "key": key,
        "version": r.randrange(1, 10),
        "salt": pick(r, ["", "salt"]),
        "included": keys(),
        "excluded": keys(),
        "includedContexts": targets(),
        "excludedContexts": targets(),
        "rules": [],
    }
    for _ in range(r.randrange(3)):
        rule: dict[str, Any] = {"clauses": [clause(r, key) for _ in range(r.randrange(3))]}
        if r.random() < 0.5:
            rule["weight"] = r.randrange(100001)
        if r.random() < 0.3:
            rule["bucketBy"] = pick(r, ["a", "n", "/obj/b", ""])
        if r.random() < 0.3:
            rule["rolloutContextKind"] = pick(r, KINDS)
        out["rules"].append(rule)
    if r.random() < 0.25:
        out["unbounded"] = True
        if r.random() < 0.5:
            out["generation"] = r.randrange(1, 6)
        if r.random() < 0.5:
            out["unboundedContextKind"] = pick(r, KINDS)
    return out


def environment(r: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    flag_keys = r.sample(FLAG_KEYS, r.randrange(1, 5))
    segment_keys = r.sample(SEGMENT_KEYS, r.randrange(4))
    return {k: flag(r, k) for k in flag_keys}, {k: segment(r, k) for k in segment_keys}


environments = st.randoms(use_true_random=True).map(environment)
contexts = st.randoms(use_true_random=True).map(context)


def _reason(reason: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if reason is None else {k: v for k, v in reason.items() if v is not None}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class _Reference:
    """LaunchDarkly's Python SDK evaluator over the same data, configured as its client is
    without a big-segment store."""

    def __init__(self, flags_: dict[str, Any], segments_: dict[str, Any]) -> None:
        self.flags = {k: FeatureFlag(v) for k, v in flags_.items()}
        self.segments = {k: Segment(v) for k, v in segments_.items()}
        self.evaluator = Evaluator(
            self.flags.get, self.segments.get, lambda _key: (None, "NOT_CONFIGURED")
        )
        self.events = EventFactory(False)

    def evaluate(self, key: str, context: LDContext) -> Any:
        return self.evaluator.evaluate(self.flags[key], context, self.events)

    def flags_state_meta(self, key: str, context: LDContext) -> dict[str, Any]:
        """What the SDK's ``all_flags_state(with_reasons=True)`` puts in ``$flagsState``."""
        flag = self.flags[key]
        result = self.evaluate(key, context)
        detail = result.detail
        experiment = EventFactory.is_experiment(flag, detail.reason)
        state = FeatureFlagsState(True)
        state.add_flag(
            {
                "key": key, "value": detail.value, "variation": detail.variation_index,
                "reason": detail.reason, "version": flag["version"],
                "prerequisites": result.prerequisites,
                "trackEvents": flag.get("trackEvents", False) or experiment,
                "trackReason": experiment,
                "debugEventsUntilDate": flag.get("debugEventsUntilDate", None),
            },
            True,
            False,
        )  # fmt: skip
        meta: dict[str, Any] = state.to_json_dict()["$flagsState"][key]
        return meta


@DIFFERENTIAL
@given(environments, st.lists(contexts, min_size=1, max_size=4))
def test_evaluation_matches_launchdarkly_python_sdk(
    generated: tuple[dict[str, Any], dict[str, Any]], context_jsons: list[dict[str, Any]]
) -> None:
    flags_, segments_ = generated
    ours = CompiledEnvironment.from_items(flags_, segments_)
    reference = _Reference(flags_, segments_)
    for context_json in context_jsons:
        _compare(ours, reference, flags_, context_json)


def _compare(
    ours: CompiledEnvironment,
    reference: _Reference,
    flags_: dict[str, Any],
    context_json: dict[str, Any],
) -> None:
    context = parse_context(context_json)
    ld_context = LDContext.from_dict(context_json)
    assert ld_context.valid, ld_context.error
    all_flags = json.loads(ours.all_flags_json(context, with_reasons=True))
    for key in flags_:
        expected = reference.evaluate(key, ld_context)
        got = ours.evaluate(key, context)
        detail = expected.detail
        assert (_canonical(got.value), got.variation, got.reason.to_json()) == (
            _canonical(detail.value),
            detail.variation_index,
            _reason(detail.reason),
        ), key
        assert list(got.prerequisites) == expected.prerequisites, key
        meta = reference.flags_state_meta(key, ld_context)
        member = all_flags[key]
        assert _canonical(member["value"]) == _canonical(detail.value)
        assert member["version"] == member["flagVersion"] == meta["version"]
        assert member["variation"] == meta.get("variation")
        assert member["reason"] == _reason(meta["reason"])
        for name in ("trackEvents", "trackReason", "debugEventsUntilDate", "prerequisites"):
            assert member.get(name) == meta.get(name), (key, name)


@DIFFERENTIAL
@given(contexts)
def test_context_parsing_matches_launchdarkly_python_sdk(context_json: dict[str, Any]) -> None:
    ours = parse_context(context_json)
    theirs = LDContext.from_dict(context_json)
    assert ours.fully_qualified_key == theirs.fully_qualified_key
    assert ours.kind == theirs.kind and ours.key == theirs.key
    assert ours.to_json() == theirs.to_dict()
