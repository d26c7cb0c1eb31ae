import contextlib
import copy
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ldclient.impl.model import FeatureFlag, Segment

from protocol.errors import ValidationError
from protocol.model import (
    CLAUSE_OPERATORS,
    MAX_DEPTH,
    _check_json,
    _explain_json,
    _plainly_json,
    encode_item,
    flag_references,
    make_tombstone,
    segment_references,
    validate_flag,
    validate_segment,
)

pytestmark = pytest.mark.unit

# Bounded so the whole protocol suite stays fast on a shared machine; raise locally to dig.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def full_flag() -> dict[str, Any]:
    return {
        "key": "checkout",
        "version": 7,
        "on": True,
        "variations": ["a", "b", {"c": [1, 2.5, None]}],
        "fallthrough": {
            "rollout": {
                "kind": "experiment",
                "bucketBy": "email",
                "contextKind": "user",
                "seed": 42,
                "variations": [
                    {"variation": 0, "weight": 60000, "untracked": False},
                    {"variation": 1, "weight": 40000},
                ],
            }
        },
        "offVariation": 1,
        "targets": [{"values": ["u1", "u2"], "variation": 0}],
        "contextTargets": [{"contextKind": "org", "values": ["o1"], "variation": 2}],
        "rules": [
            {
                "id": "r1",
                "clauses": [
                    {"attribute": "email", "op": "endsWith", "values": ["@x.com"], "negate": True},
                    {"attribute": "", "op": "segmentMatch", "values": ["beta"]},
                    {
                        "attribute": "n",
                        "op": "in",
                        "values": [1, 2.5, True, None, "s"],
                        "contextKind": "org",
                    },
                ],
                "variation": 2,
                "trackEvents": True,
                "description": "kept",
            },
            {
                "clauses": [],
                "rollout": {"variations": [{"variation": 2, "weight": 100000}]},
            },
        ],
        "prerequisites": [{"key": "other-flag", "variation": 3}],
        "salt": "abc",
        "trackEvents": False,
        "trackEventsFallthrough": True,
        "clientSideAvailability": {"usingMobileKey": True, "usingEnvironmentId": False, "x": 1},
        "deleted": False,
        "debugEventsUntilDate": 1_800_000_000_000,
        "samplingRatio": 10,
        "excludeFromSummaries": False,
        "migration": {"checkRatio": 5},
        "futureField": {"anything": [1, 2]},
    }


def full_segment() -> dict[str, Any]:
    return {
        "key": "beta",
        "version": 2,
        "included": ["u1"],
        "excluded": ["u2"],
        "includedContexts": [{"contextKind": "org", "values": ["o1"]}],
        "excludedContexts": [{"contextKind": "org", "values": []}],
        "rules": [
            {
                "id": "sr1",
                "clauses": [
                    {"attribute": "country", "op": "in", "values": ["fr"]},
                    {"attribute": "", "op": "segmentMatch", "values": ["other"]},
                ],
                "weight": 50000,
                "bucketBy": "key",
                "rolloutContextKind": "user",
            },
            {"clauses": []},
        ],
        "salt": "s",
        "unbounded": False,
        "unboundedContextKind": "user",
        "generation": 3,
        "deleted": False,
        "extra": True,
    }


# --- happy paths -----------------------------------------------------------------------------


def test_minimal_flag_gets_launchdarkly_defaults() -> None:
    out = validate_flag({"key": "f", "variations": [True, False], "fallthrough": {"variation": 0}})
    assert out == {
        "key": "f",
        "variations": [True, False],
        "fallthrough": {"variation": 0},
        "deleted": False,
        "on": False,
        "offVariation": None,
        "targets": [],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
        "salt": "",
        "trackEvents": False,
        "trackEventsFallthrough": False,
        # Absent: as LaunchDarkly reads its old schema (mobile sees it, JS if clientSide).
        "clientSideAvailability": {"usingMobileKey": True, "usingEnvironmentId": False},
    }
    assert "version" not in out  # the publisher assigns versions
    old = validate_flag({"key": "f", "variations": [1], "clientSide": True})
    assert old["clientSideAvailability"] == {"usingMobileKey": True, "usingEnvironmentId": True}


def test_full_flag_is_kept_with_nested_defaults_filled() -> None:
    flag = full_flag()
    out = validate_flag(flag)
    assert out["futureField"] == {"anything": [1, 2]}
    assert out["rules"][0]["description"] == "kept"
    assert out["clientSideAvailability"]["x"] == 1
    assert out["rules"][0]["clauses"][1]["negate"] is False
    assert out["rules"][1]["trackEvents"] is False
    expected = full_flag()
    expected["rules"][0]["clauses"][1]["negate"] = False
    expected["rules"][0]["clauses"][2]["negate"] = False
    expected["rules"][1]["trackEvents"] = False
    assert out == expected


def test_input_is_not_modified() -> None:
    flag = {
        "key": "f",
        "variations": [1],
        "fallthrough": {"variation": 0},
        "rules": [{"clauses": [{"attribute": "a", "op": "in", "values": []}], "variation": 0}],
    }
    before = copy.deepcopy(flag)
    out = validate_flag(flag)
    assert flag == before
    out["rules"][0]["clauses"][0]["values"].append("x")
    out["rules"][0]["x"] = 1
    assert flag == before


def test_validation_is_idempotent() -> None:
    once = validate_flag(full_flag())
    assert validate_flag(once) == once
    seg = validate_segment(full_segment())
    assert validate_segment(seg) == seg


def test_null_optional_fields_get_defaults() -> None:
    out = validate_flag(
        {
            "key": "f",
            "variations": [1],
            "fallthrough": {"variation": 0, "rollout": None},
            "on": None,
            "rules": None,
            "salt": None,
            "offVariation": None,
            "debugEventsUntilDate": None,
            "migration": None,
        }
    )
    assert out["on"] is False and out["rules"] == [] and out["salt"] == ""


def test_migration_without_check_ratio() -> None:
    out = validate_flag(
        {"key": "f", "variations": [1], "fallthrough": {"variation": 0}, "migration": {}}
    )
    assert out["migration"] == {}


def test_minimal_segment_gets_defaults() -> None:
    assert validate_segment({"key": "s"}) == {
        "key": "s",
        "deleted": False,
        "included": [],
        "excluded": [],
        "includedContexts": [],
        "excludedContexts": [],
        "rules": [],
        "salt": "",
    }


def test_full_segment() -> None:
    out = validate_segment(full_segment())
    assert out["extra"] is True
    assert out["rules"][0]["clauses"][0]["negate"] is False


def test_tombstones() -> None:
    assert validate_flag(make_tombstone("f", 9)) == {"key": "f", "version": 9, "deleted": True}
    assert validate_segment({"key": "s", "deleted": True, "version": 2, "junk": [1]}) == {
        "key": "s",
        "deleted": True,
        "version": 2,
        "junk": [1],
    }
    with pytest.raises(ValidationError, match=r"^key:"):
        validate_flag({"deleted": True, "version": 3})


def test_every_clause_operator_is_accepted() -> None:
    for op in CLAUSE_OPERATORS:
        values = ["seg"] if op == "segmentMatch" else ["v"]
        flag = {
            "key": "f",
            "variations": [1],
            "fallthrough": {"variation": 0},
            "rules": [
                {"clauses": [{"attribute": "a", "op": op, "values": values}], "variation": 0}
            ],
        }
        validate_flag(flag)


def test_outputs_parse_in_the_launchdarkly_sdk_model() -> None:
    flag = FeatureFlag(validate_flag(full_flag()))
    assert flag.key == "checkout" and flag.version == 7
    segment = Segment(validate_segment(full_segment()))
    assert segment.key == "beta"


# --- errors name the path --------------------------------------------------------------------


def setp(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """Mutation setting a dotted/indexed path (``rules[0].clauses[1].op``) to ``value``;
    the sentinel ``...`` deletes the field."""

    def mutate(doc: dict[str, Any]) -> None:
        parts: list[str | int] = []
        for token in path.split("."):
            name, *indexes = token.split("[")
            if name:
                parts.append(name)
            parts.extend(int(i.rstrip("]")) for i in indexes)
        target: Any = doc
        for part in parts[:-1]:
            target = target[part]
        if value is ...:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value

    return mutate


FLAG_ERRORS = [
    ("", None, ""),  # replaced below: not an object
    ("key", ..., "key"),
    ("key", "bad key", "key"),
    ("key", 5, "key"),
    ("version", 0, "version"),
    ("version", 2**53, "version"),
    ("version", True, "version"),
    ("version", 1.0, "version"),
    ("version", None, "version"),
    ("deleted", "no", "deleted"),
    ("variations", {"a": 1}, "variations"),
    ("variations[2].c[1]", math.nan, "variations[2].c[1]"),
    ("variations[0]", math.inf, "variations[0]"),
    ("variations[0]", "\ud800", "variations[0]"),
    ("variations[0]", (1, 2), "variations[0]"),
    ("variations[2]", {1: 2}, "variations[2]"),
    ("variations[2]", {"\udfff": 2}, "variations[2]"),
    ("on", 1, "on"),
    ("fallthrough", [], "fallthrough"),
    ("fallthrough", {}, "fallthrough"),
    ("fallthrough", {"variation": 0, "rollout": {}}, "fallthrough.rollout.variations"),
    ("fallthrough", {"variation": 3}, "fallthrough.variation"),
    ("fallthrough", {"variation": -1}, "fallthrough.variation"),
    ("fallthrough", {"variation": "0"}, "fallthrough.variation"),
    ("fallthrough.rollout", [], "fallthrough.rollout"),
    ("fallthrough.rollout.variations", ..., "fallthrough.rollout.variations"),
    ("fallthrough.rollout.variations", [], "fallthrough.rollout.variations"),
    ("fallthrough.rollout.variations[1]", 5, "fallthrough.rollout.variations[1]"),
    ("fallthrough.rollout.variations[1].weight", 4e4, "fallthrough.rollout.variations[1].weight"),
    (
        "fallthrough.rollout.variations[1].variation",
        3,
        "fallthrough.rollout.variations[1].variation",
    ),
    (
        "fallthrough.rollout.variations[0].untracked",
        "no",
        "fallthrough.rollout.variations[0].untracked",
    ),
    ("fallthrough.rollout.contextKind", 3, "fallthrough.rollout.contextKind"),
    ("fallthrough.rollout.seed", 2**63, "fallthrough.rollout.seed"),
    ("offVariation", 3, "offVariation"),
    ("offVariation", False, "offVariation"),
    ("targets", {}, "targets"),
    ("targets[0]", "u1", "targets[0]"),
    ("targets[0].values[1]", 2, "targets[0].values[1]"),
    ("targets[0].variation", 9, "targets[0].variation"),
    ("rules", "r", "rules"),
    ("rules[1]", None, "rules[1]"),
    ("rules[0].id", 5, "rules[0].id"),
    ("rules[0].clauses[2]", [], "rules[0].clauses[2]"),
    ("rules[0].clauses[0].op", ..., "rules[0].clauses[0].op"),
    ("rules[0].clauses[0].op", 3, "rules[0].clauses[0].op"),
    ("rules[0].clauses[1].attribute", 3, "rules[0].clauses[1].attribute"),
    ("rules[0].clauses[0].values", {}, "rules[0].clauses[0].values"),
    ("rules[0].clauses[0].op", ["in"], "rules[0].clauses[0].op"),
    ("rules[0].clauses[0].attribute", ..., "rules[0].clauses[0].attribute"),
    ("rules[0].clauses[0].attribute", "", "rules[0].clauses[0].attribute"),
    ("rules[0].clauses[0].values", "x", "rules[0].clauses[0].values"),
    ("rules[0].clauses[0].negate", "yes", "rules[0].clauses[0].negate"),
    ("rules[0].clauses[0].contextKind", 3, "rules[0].clauses[0].contextKind"),
    ("rules[0].variation", ..., "rules[0]"),
    ("rules[0].variation", 5, "rules[0].variation"),
    ("rules[0].trackEvents", "t", "rules[0].trackEvents"),
    ("prerequisites", {}, "prerequisites"),
    ("prerequisites[0]", "other-flag", "prerequisites[0]"),
    ("prerequisites[0].key", "checkout", "prerequisites[0].key"),
    ("prerequisites[0].key", "", "prerequisites[0].key"),
    ("prerequisites[0].variation", -1, "prerequisites[0].variation"),
    ("prerequisites[0].variation", ..., "prerequisites[0].variation"),
    ("salt", 5, "salt"),
    ("trackEvents", "f", "trackEvents"),
    ("trackEventsFallthrough", 0, "trackEventsFallthrough"),
    ("clientSideAvailability", [], "clientSideAvailability"),
    ("clientSideAvailability", None, "clientSide"),  # then clientSide is read: set below
    ("clientSideAvailability.usingMobileKey", "y", "clientSideAvailability.usingMobileKey"),
    ("clientSideAvailability.usingEnvironmentId", 1, "clientSideAvailability.usingEnvironmentId"),
    ("debugEventsUntilDate", "soon", "debugEventsUntilDate"),
    ("samplingRatio", -1, "samplingRatio"),
    ("excludeFromSummaries", "no", "excludeFromSummaries"),
    ("migration", [], "migration"),
    ("migration.checkRatio", "x", "migration.checkRatio"),
]


@pytest.mark.parametrize(("path", "value", "error_path"), FLAG_ERRORS[1:])
def test_flag_errors_name_the_path(path: str, value: object, error_path: str) -> None:
    flag = full_flag()
    setp(path, value)(flag)
    if error_path == "clientSide":
        flag["clientSide"] = "yes"
    with pytest.raises(ValidationError) as exc:
        validate_flag(flag)
    assert exc.value.path == error_path, str(exc.value)
    assert exc.value.reason


@pytest.mark.parametrize("doc", [None, [], "flag", 3, 2.5, True])
def test_root_must_be_an_object(doc: object) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_flag(doc)
    assert exc.value.path == ""
    with pytest.raises(ValidationError):
        validate_segment(doc)


def test_error_messages_are_clear() -> None:
    flag = full_flag()
    flag["rules"][2:] = [{"clauses": [{"attribute": "a", "op": "in", "values": []}]}]
    with pytest.raises(ValidationError) as exc:
        validate_flag(flag)
    assert str(exc.value) == "rules[2]: must have a variation or a rollout"
    flag = full_flag()
    flag["rules"][0]["clauses"][0]["attribute"] = ""
    with pytest.raises(ValidationError, match=r"^rules\[0\]\.clauses\[0\]\.attribute: must not"):
        validate_flag(flag)
    flag = full_flag()
    flag["offVariation"] = 5
    with pytest.raises(ValidationError, match=r"out of range \(0\.\.2\)"):
        validate_flag(flag)


# What LaunchDarkly stores and evaluates without an error: accepted (see protocol.model).
LAUNCHDARKLY_ACCEPTS = [
    ("fallthrough", ...),  # off flags are stored without one
    ("fallthrough.rollout.variations[1].weight", 39999),  # the last bucket takes the rest
    ("fallthrough.rollout.variations[1].weight", 100001),
    ("fallthrough.rollout.kind", "ab"),  # a plain rollout
    ("fallthrough.rollout.bucketBy", ""),  # bucket by key
    ("fallthrough.rollout.contextKind", ""),
    ("targets[0].values", ...),
    ("contextTargets[0].contextKind", ""),
    ("contextTargets[0].values", ...),  # a user context target keeps its keys in targets
    ("rules[0].clauses", ...),  # matches everyone
    ("rules[0].clauses[0].op", "like"),  # an unknown operator never matches
    ("rules[0].clauses[0].values", ...),
    ("rules[0].clauses[0].values[0]", ["x"]),  # `in` compares arrays and objects deeply
    ("rules[0].clauses[0].values[0]", {"x": 1}),
    ("rules[0].clauses[0].contextKind", ""),
    ("rules[0].clauses[1].values[0]", "not a key!"),  # no such segment: no match
    ("rules[0].clauses[1].values[0]", 3),
    ("rules[0].clauses[1].attribute", ...),  # segmentMatch reads no attribute
    ("rules[0].variation", 0),  # with a rollout too: the variation wins
    ("rules[1].rollout.variations[0].weight", 5),
    ("clientSideAvailability", ...),
]


@pytest.mark.parametrize(("path", "value"), LAUNCHDARKLY_ACCEPTS)
def test_data_launchdarkly_evaluates_is_accepted(path: str, value: object) -> None:
    flag = full_flag()
    flag["rules"][0]["rollout"] = {"variations": [{"variation": 0, "weight": 100000}]}
    setp(path, value)(flag)
    out = validate_flag(flag)
    assert validate_flag(out) == out
    sdk_accepts_flag(out)


def test_an_off_flag_without_variations_is_accepted() -> None:
    out = validate_flag({"key": "f", "on": False})
    assert out["variations"] == [] and "fallthrough" not in out
    with pytest.raises(
        ValidationError, match="offVariation: variation index 0, but the flag has no"
    ):
        validate_flag({"key": "f", "on": False, "offVariation": 0})


SEGMENT_ACCEPTS = [
    ("includedContexts[0].contextKind", ...),  # user
    ("excludedContexts[0].values", None),
    ("rules[0].clauses", None),
    ("rules[0].weight", 100001),
    ("rules[0].bucketBy", ""),
    ("unboundedContextKind", ""),
]


@pytest.mark.parametrize(("path", "value"), SEGMENT_ACCEPTS)
def test_segment_data_launchdarkly_evaluates_is_accepted(path: str, value: object) -> None:
    segment = full_segment()
    setp(path, value)(segment)
    out = validate_segment(segment)
    assert validate_segment(out) == out
    sdk_accepts_segment(out)


SEGMENT_ERRORS = [
    ("key", "a/b", "key"),
    ("version", -3, "version"),
    ("included", "u1", "included"),
    ("excluded[0]", None, "excluded[0]"),
    ("includedContexts", {}, "includedContexts"),
    ("includedContexts[0]", [], "includedContexts[0]"),
    ("rules", {}, "rules"),
    ("rules[0]", 1, "rules[0]"),
    ("rules[0].weight", 1.5, "rules[0].weight"),
    ("rules[0].bucketBy", 1, "rules[0].bucketBy"),
    ("includedContexts[0].contextKind", 5, "includedContexts[0].contextKind"),
    ("rules[0].clauses[0].attribute", "", "rules[0].clauses[0].attribute"),
    ("rules[0].clauses[1].values[0]", "beta", "rules[0].clauses[1].values[0]"),
    ("rules[0].rolloutContextKind", 1, "rules[0].rolloutContextKind"),
    ("salt", [], "salt"),
    ("unbounded", "no", "unbounded"),
    ("unboundedContextKind", 1, "unboundedContextKind"),
    ("generation", -1, "generation"),
    ("deleted", 1, "deleted"),
]


@pytest.mark.parametrize(("path", "value", "error_path"), SEGMENT_ERRORS)
def test_segment_errors_name_the_path(path: str, value: object, error_path: str) -> None:
    segment = full_segment()
    setp(path, value)(segment)
    with pytest.raises(ValidationError) as exc:
        validate_segment(segment)
    assert exc.value.path == error_path, str(exc.value)


# --- encode_item -----------------------------------------------------------------------------


def test_encode_item_is_compact_utf8_in_given_order() -> None:
    assert encode_item({"z": 1, "a": ["é", None]}) == '{"z":1,"a":["é",null]}'.encode()


def test_encode_item_refuses_non_json() -> None:
    with pytest.raises(ValueError):
        encode_item({"x": math.nan})
    with pytest.raises(TypeError):
        encode_item({"x": object()})


def test_make_tombstone() -> None:
    assert make_tombstone("f", 4) == {"key": "f", "version": 4, "deleted": True}


# --- properties ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)

safe_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
finite_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | safe_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(safe_text, inner, max_size=3),
    max_leaves=10,
)

FLAG_FIELDS = [
    "key",
    "version",
    "on",
    "variations",
    "fallthrough",
    "offVariation",
    "targets",
    "contextTargets",
    "rules",
    "prerequisites",
    "salt",
    "trackEvents",
    "trackEventsFallthrough",
    "clientSideAvailability",
    "deleted",
    "migration",
]
SEGMENT_FIELDS = [
    "key",
    "version",
    "included",
    "excluded",
    "includedContexts",
    "excludedContexts",
    "rules",
    "salt",
    "deleted",
    "generation",
]


def sdk_accepts_flag(out: dict[str, Any]) -> None:
    """An accepted item must survive the LaunchDarkly SDK's own model parsing and JSON."""
    FeatureFlag({**out, "version": out.get("version", 1)})
    assert json.loads(encode_item(out)) == out


def sdk_accepts_segment(out: dict[str, Any]) -> None:
    Segment({**out, "version": out.get("version", 1)})
    assert json.loads(encode_item(out)) == out


@FAST
@given(json_values)
def test_arbitrary_json_raises_only_validation_error(doc: object) -> None:
    for validate in (validate_flag, validate_segment):
        with contextlib.suppress(ValidationError):
            validate(doc)


@FAST
@given(st.dictionaries(st.sampled_from(FLAG_FIELDS), json_values, max_size=8))
def test_arbitrary_flag_shaped_objects(doc: dict[str, Any]) -> None:
    try:
        out = validate_flag(doc)
    except ValidationError:
        return
    sdk_accepts_flag(out)


def all_paths(doc: object, prefix: str = "") -> list[str]:
    paths = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            p = f"{prefix}.{k}" if prefix else k
            paths.append(p)
            paths.extend(all_paths(v, p))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            p = f"{prefix}[{i}]"
            paths.append(p)
            paths.extend(all_paths(v, p))
    return paths


FULL_FLAG_PATHS = all_paths(full_flag())
FULL_SEGMENT_PATHS = all_paths(full_segment())


@FAST
@given(path=st.sampled_from(FULL_FLAG_PATHS), value=json_values | st.just(...))
def test_mutated_flag_raises_only_validation_error(path: str, value: object) -> None:
    flag = full_flag()
    setp(path, value)(flag)
    try:
        out = validate_flag(flag)
    except ValidationError as exc:
        assert isinstance(exc.path, str)
        return
    sdk_accepts_flag(out)


@FAST
@given(path=st.sampled_from(FULL_SEGMENT_PATHS), value=json_values | st.just(...))
def test_mutated_segment_raises_only_validation_error(path: str, value: object) -> None:
    segment = full_segment()
    setp(path, value)(segment)
    try:
        out = validate_segment(segment)
    except ValidationError:
        return
    sdk_accepts_segment(out)


@st.composite
def valid_flags(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=4))
    index = st.integers(min_value=0, max_value=n - 1)

    def rollout() -> dict[str, Any]:
        k = draw(st.integers(min_value=1, max_value=3))
        cuts = sorted(draw(st.lists(st.integers(0, 100_000), min_size=k - 1, max_size=k - 1)))
        weights = [b - a for a, b in zip([0, *cuts], [*cuts, 100_000], strict=True)]
        return {"variations": [{"variation": draw(index), "weight": w} for w in weights]}

    def vor() -> dict[str, Any]:
        return {"variation": draw(index)} if draw(st.booleans()) else {"rollout": rollout()}

    op = draw(st.sampled_from(sorted(CLAUSE_OPERATORS)))
    values = (
        ["seg-a"]
        if op == "segmentMatch"
        else draw(
            st.lists(st.one_of(st.text(max_size=5), st.integers(), st.booleans()), max_size=3)
        )
    )
    return {
        "key": "flag-" + str(draw(st.integers(0, 99))),
        "version": draw(st.integers(1, 2**53 - 1)),
        "variations": draw(st.lists(finite_json_values, min_size=n, max_size=n)),
        "fallthrough": vor(),
        "offVariation": draw(st.none() | index),
        "targets": [
            {"values": draw(st.lists(st.text(max_size=5), max_size=3)), "variation": draw(index)}
        ],
        "rules": [{"clauses": [{"attribute": "a", "op": op, "values": values}], **vor()}],
        "on": draw(st.booleans()),
    }


@FAST
@given(valid_flags())
def test_valid_flags_are_accepted_and_sdk_compatible(flag: dict[str, Any]) -> None:
    out = validate_flag(flag)
    assert validate_flag(out) == out
    sdk_accepts_flag(out)


def test_references() -> None:
    assert flag_references(validate_flag(full_flag())) == (
        frozenset({"other-flag"}),
        frozenset({"beta"}),
    )
    assert segment_references(validate_segment(full_segment())) == frozenset({"other"})
    assert flag_references(make_tombstone("f", 2)) == (frozenset(), frozenset())
    assert segment_references(make_tombstone("s", 2)) == frozenset()
    minimal = validate_flag({"key": "f", "variations": [1], "fallthrough": {"variation": 0}})
    assert flag_references(minimal) == (frozenset(), frozenset())


def test_nesting_depth_is_bounded() -> None:
    def nested(depth: int) -> object:
        value: object = 1
        for _ in range(depth):
            value = [value]
        return value

    flag = {"key": "f", "variations": [nested(MAX_DEPTH - 2)], "fallthrough": {"variation": 0}}
    encode_item(validate_flag(flag))
    flag["variations"] = [nested(100_000)]  # no RecursionError, a clear error instead
    with pytest.raises(ValidationError, match="nested deeper than"):
        validate_flag(flag)


# --- the JSON check's fast path -------------------------------------------------------------

odd_values = st.recursive(
    json_values
    | st.tuples(st.integers())  # not JSON
    | st.builds(lambda s: s + "\ud800", st.text(max_size=3))  # a lone surrogate
    | st.dictionaries(st.integers(), st.none(), min_size=1, max_size=2),  # non-string keys
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


def nested_in(depth: int, leaf: object) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@FAST
@given(odd_values)
def test_the_fast_json_check_accepts_only_what_the_exact_one_accepts(doc: object) -> None:
    try:
        _explain_json(doc)
        valid = True
    except ValidationError:
        valid = False
    if _plainly_json(doc):
        assert valid  # unsure cases go to the exact check, never the other way round


@pytest.mark.parametrize("depth", [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
def test_depth_is_decided_by_the_exact_check_near_the_limit(depth: int) -> None:
    leaves: list[object] = ["s", 1.5, [], "\u00e9"]
    for leaf in leaves:
        doc = {"k": nested_in(depth, leaf)}
        try:
            _check_json(doc)
            fast_valid = True
        except ValidationError:
            fast_valid = False
        try:
            _explain_json(doc)
            exact_valid = True
        except ValidationError:
            exact_valid = False
        assert fast_valid == exact_valid, (depth, leaf)
