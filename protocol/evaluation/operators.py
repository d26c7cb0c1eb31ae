"""Every clause operator, in one table: clause values in, a test of one context value out.

A clause matches a context value ``v`` if the operator holds for ``v`` and *any* of the
clause's values ``c`` (an OR). The test is built once per clause version (values to sets,
regexes compiled, dates and versions parsed, min/max taken), so a test costs a type check
and a set lookup or one comparison. Values of the wrong type never match and never fail.

| operator             | holds when                                                          |
|----------------------|---------------------------------------------------------------------|
| `in`                 | `v == c`, same JSON type (`1 == 1.0`, `true != 1`; arrays, objects deep) |
| `startsWith`         | both strings, `v` starts with `c`                                   |
| `endsWith`           | both strings, `v` ends with `c`                                     |
| `contains`           | both strings, `c` is a substring of `v`                             |
| `matches`            | both strings, Python regex `c` found in `v` (an invalid one: never) |
| `lessThan`           | both numbers, `v < c`  (so: `v < max(c)`)                           |
| `lessThanOrEqual`    | both numbers, `v <= c` (so: `v <= max(c)`)                          |
| `greaterThan`        | both numbers, `v > c`  (so: `v > min(c)`)                           |
| `greaterThanOrEqual` | both numbers, `v >= c` (so: `v >= min(c)`)                          |
| `before`             | both dates (values.py), `v < c` (so: `v < max(c)`)                  |
| `after`              | both dates, `v > c` (so: `v > min(c)`)                              |
| `semVerEqual`        | both semantic versions, equal (build metadata ignored)              |
| `semVerLessThan`     | both semantic versions, `v < c` (so: `v < max(c)`)                  |
| `semVerGreaterThan`  | both semantic versions, `v > c` (so: `v > min(c)`)                  |
| anything else        | never (an unknown operator is a non-match, not an error)            |

``segmentMatch`` is not here: it reads segments, not a value (see compiler.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from protocol.evaluation.values import is_number, parse_time, semver_key

__all__ = ["OPERATORS", "Test", "build_test", "json_equal"]

Test = Callable[[Any], bool]
_NEVER: Final[Test] = lambda _v: False  # noqa: E731


def build_test(op: str, values: Sequence[Any]) -> Test:
    """The test of one context value against ``values`` for ``op`` (never for unknown ops)."""
    factory = OPERATORS.get(op)
    return _NEVER if factory is None else factory(values)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: same type (int and float are one type, bool is not a number), deep."""
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta in (int, float):
        return tb in (int, float) and a == b
    if ta is list:
        return tb is list and len(a) == len(b) and all(map(json_equal, a, b))
    if ta is dict:
        return (
            tb is dict
            and a.keys() == b.keys()
            and all(json_equal(value, b[name]) for name, value in a.items())
        )
    return ta is tb and a == b


def _in(values: Sequence[Any]) -> Test:
    strings = frozenset(v for v in values if type(v) is str)
    numbers = frozenset(v for v in values if is_number(v) and not _is_nan(v))
    booleans = frozenset(v for v in values if type(v) is bool)
    has_null = any(v is None for v in values)
    structured = tuple(v for v in values if type(v) in (list, dict))
    if all(type(v) is str for v in values):  # the common case: a list of strings
        return lambda v: type(v) is str and v in strings

    def test(v: Any) -> bool:
        t = type(v)
        if t is str:
            return v in strings
        if t is int or t is float:
            return v in numbers
        if t is bool:
            return v in booleans
        if v is None:
            return has_null
        return any(json_equal(v, c) for c in structured)

    return test


def _is_nan(v: Any) -> bool:
    return type(v) is float and math.isnan(v)


def _strings(values: Sequence[Any]) -> tuple[str, ...]:
    return tuple(v for v in values if type(v) is str)


def _starts_with(values: Sequence[Any]) -> Test:
    prefixes = _strings(values)
    return lambda v: type(v) is str and v.startswith(prefixes)


def _ends_with(values: Sequence[Any]) -> Test:
    suffixes = _strings(values)
    return lambda v: type(v) is str and v.endswith(suffixes)


def _contains(values: Sequence[Any]) -> Test:
    parts = _strings(values)
    return lambda v: type(v) is str and any(p in v for p in parts)


def _matches(values: Sequence[Any]) -> Test:
    patterns: list[re.Pattern[str]] = []
    for v in _strings(values):
        try:
            patterns.append(re.compile(v))
        except Exception:  # re.error, RecursionError, OverflowError: as the SDKs, no match
            continue
    return lambda v: type(v) is str and any(p.search(v) for p in patterns)


def _numbers(values: Sequence[Any]) -> list[float]:
    out = []
    for v in values:
        if is_number(v) and not _is_nan(v):
            try:
                out.append(float(v))
            except OverflowError:
                continue  # an integer beyond float range: no number compares with it here
    return out


def _as_float(v: Any) -> float | None:
    t = type(v)
    if t is float:
        return float(v)
    if t is int:
        try:
            return float(v)
        except OverflowError:
            return None
    return None


def _numeric(values: Sequence[Any], compare: Callable[[float, float], bool], high: bool) -> Test:
    numbers = _numbers(values)
    if not numbers:
        return _NEVER
    bound = max(numbers) if high else min(numbers)

    def test(v: Any) -> bool:
        f = _as_float(v)
        return f is not None and compare(f, bound)

    return test


def _dates(values: Sequence[Any], compare: Callable[[float, float], bool], high: bool) -> Test:
    times = [t for t in map(parse_time, values) if t is not None and not math.isnan(t)]
    if not times:
        return _NEVER
    bound = max(times) if high else min(times)

    def test(v: Any) -> bool:
        t = parse_time(v)
        return t is not None and compare(t, bound)

    return test


def _semver_equal(values: Sequence[Any]) -> Test:
    keys = frozenset(k for k in map(semver_key, values) if k is not None)
    if not keys:
        return _NEVER
    return lambda v: semver_key(v) in keys


def _semver_order(values: Sequence[Any], less: bool) -> Test:
    keys = [k for k in map(semver_key, values) if k is not None]
    if not keys:
        return _NEVER
    if less:
        high = max(keys)
        return lambda v: (k := semver_key(v)) is not None and k < high
    low = min(keys)
    return lambda v: (k := semver_key(v)) is not None and k > low


def _lt(a: float, b: float) -> bool:
    return a < b


def _le(a: float, b: float) -> bool:
    return a <= b


def _gt(a: float, b: float) -> bool:
    return a > b


def _ge(a: float, b: float) -> bool:
    return a >= b


OPERATORS: Final[dict[str, Callable[[Sequence[Any]], Test]]] = {
    # v == c, same JSON type
    "in": _in,
    # v.startswith(c), strings only
    "startsWith": _starts_with,
    # v.endswith(c), strings only
    "endsWith": _ends_with,
    # c in v, strings only
    "contains": _contains,
    # re.search(c, v), strings only, invalid regexes never match
    "matches": _matches,
    # v < c, numbers only: v < max(c)
    "lessThan": lambda values: _numeric(values, _lt, True),
    # v <= c, numbers only: v <= max(c)
    "lessThanOrEqual": lambda values: _numeric(values, _le, True),
    # v > c, numbers only: v > min(c)
    "greaterThan": lambda values: _numeric(values, _gt, False),
    # v >= c, numbers only: v >= min(c)
    "greaterThanOrEqual": lambda values: _numeric(values, _ge, False),
    # time(v) < time(c), dates only: < the latest c
    "before": lambda values: _dates(values, _lt, True),
    # time(v) > time(c), dates only: > the earliest c
    "after": lambda values: _dates(values, _gt, False),
    # semver(v) == semver(c)
    "semVerEqual": _semver_equal,
    # semver(v) < semver(c): < the highest c
    "semVerLessThan": lambda values: _semver_order(values, True),
    # semver(v) > semver(c): > the lowest c
    "semVerGreaterThan": lambda values: _semver_order(values, False),
}
