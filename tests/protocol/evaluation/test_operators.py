"""The clause operator table: one test of a context value against a clause's values."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.evaluation.operators import OPERATORS, build_test, json_equal

pytestmark = pytest.mark.unit


def holds(op: str, value: Any, clause_values: list[Any]) -> bool:
    return build_test(op, clause_values)(value)


@pytest.mark.parametrize(
    ("value", "clause_values", "expected"),
    [
        ("a", ["a", "b"], True),
        ("c", ["a", "b"], False),
        (1, ["1"], False),
        ("1", [1], False),
        (1, [1.0], True),
        (1.0, [2, 1], True),
        (True, [1], False),
        (1, [True], False),
        (False, [0, False], True),
        (None, [None], True),
        (None, [1], False),
        ([1, 2], [[1, 2]], True),
        ([1, True], [[1, 1]], False),
        ({"a": [1]}, [{"a": [1.0]}], True),
        ({"a": 1}, [{"b": 1}], False),
        ({"a": 1}, [{"a": 1, "b": 2}], False),
        (float("nan"), [float("nan")], False),
        ("a", ["a", "a"], True),
        ("a", [], False),
    ],
)
def test_in(value: Any, clause_values: list[Any], expected: bool) -> None:
    assert holds("in", value, clause_values) is expected


@pytest.mark.parametrize(
    ("op", "value", "clause_values", "expected"),
    [
        ("startsWith", "abc", ["x", "ab"], True),
        ("startsWith", "abc", ["bc"], False),
        ("startsWith", "abc", [""], True),
        ("startsWith", 1, ["1"], False),
        ("startsWith", "1", [1], False),
        ("endsWith", "abc", ["bc"], True),
        ("endsWith", "abc", ["ab"], False),
        ("contains", "abc", ["b"], True),
        ("contains", "abc", ["x", 1], False),
        ("contains", 5, ["5"], False),
        ("matches", "abc", ["^a.c$"], True),
        ("matches", "xabc", ["b"], True),
        ("matches", "abc", ["[", "^z"], False),  # an invalid regex never matches
        ("matches", 1, ["1"], False),
    ],
)
def test_string_operators(op: str, value: Any, clause_values: list[Any], expected: bool) -> None:
    assert holds(op, value, clause_values) is expected


@pytest.mark.parametrize(
    ("op", "value", "clause_values", "expected"),
    [
        ("lessThan", 1, [2], True),
        ("lessThan", 2, [2], False),
        ("lessThan", 3, [1, 5], True),  # any clause value: below the highest
        ("lessThanOrEqual", 2, [2.0], True),
        ("greaterThan", 3, [2], True),
        ("greaterThan", 3, [5, 2], True),  # above the lowest
        ("greaterThan", 2, [2], False),
        ("greaterThanOrEqual", 2, [2], True),
        ("lessThan", "1", [2], False),
        ("lessThan", True, [2], False),
        ("lessThan", 1, ["2", True, float("nan"), 10**400], False),
        ("lessThan", 10**400, [1], False),
        ("greaterThan", float("nan"), [1], False),
    ],
)
def test_numeric_operators(op: str, value: Any, clause_values: list[Any], expected: bool) -> None:
    assert holds(op, value, clause_values) is expected


@pytest.mark.parametrize(
    ("op", "value", "clause_values", "expected"),
    [
        ("before", "2017-12-06T00:00:00Z", ["2017-12-07T00:00:00Z"], True),
        ("before", 1000, [2000], True),
        ("before", 3000, [2000, 4000], True),
        ("before", 3000, [2000], False),
        ("after", "2017-12-08T00:00:00Z", ["2017-12-07T00:00:00Z"], True),
        ("after", 1000, [500, 2000], True),
        ("after", 1000, [2000], False),
        ("after", "x", [0], False),
        ("before", 1000, ["x", None], False),
        ("semVerEqual", "2.0", ["2.0.0"], True),
        ("semVerEqual", "2.0.1", ["2.0.0"], False),
        ("semVerEqual", "x", ["2.0.0"], False),
        ("semVerEqual", "2.0.0", ["x"], False),
        ("semVerLessThan", "2.0.0-rc", ["2.0.0"], True),
        ("semVerLessThan", "2.0.0", ["1.0.0", "3.0.0"], True),
        ("semVerLessThan", "3.0.0", ["2.0.0"], False),
        ("semVerLessThan", 2, ["3.0.0"], False),
        ("semVerGreaterThan", "2.0.1", ["2.0.0"], True),
        ("semVerGreaterThan", "2.0.0", ["3.0.0", "1.0.0"], True),
        ("semVerGreaterThan", "1.0.0", ["2.0.0"], False),
        ("semVerGreaterThan", "x", ["1.0.0"], False),
        ("semVerGreaterThan", "2.0.0", [{}], False),
    ],
)
def test_date_and_semver_operators(
    op: str, value: Any, clause_values: list[Any], expected: bool
) -> None:
    assert holds(op, value, clause_values) is expected


def test_unknown_operator_never_holds() -> None:
    assert holds("unsupportedOperator", "a", ["a"]) is False
    assert holds("segmentMatch", "a", ["a"]) is False  # not a value operator


def test_the_table_has_every_value_operator() -> None:
    assert set(OPERATORS) == {
        "in",
        "startsWith",
        "endsWith",
        "contains",
        "matches",
        "lessThan",
        "lessThanOrEqual",
        "greaterThan",
        "greaterThanOrEqual",
        "before",
        "after",
        "semVerEqual",
        "semVerLessThan",
        "semVerGreaterThan",
    }


def test_json_equal() -> None:
    assert json_equal([1, {"a": "x"}], [1.0, {"a": "x"}])
    assert not json_equal([1], [1, 2])
    assert not json_equal("1", 1)
    assert not json_equal(None, False)
    assert json_equal(None, None)
