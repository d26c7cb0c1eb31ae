"""Numbers, dates and semantic versions as the clause operators read them."""

from __future__ import annotations

import pytest

from protocol.evaluation import values
from protocol.evaluation.values import is_number, parse_time, semver_key

pytestmark = pytest.mark.unit


def test_numbers_exclude_booleans() -> None:
    assert is_number(1) and is_number(1.5)
    assert not is_number(True) and not is_number("1") and not is_number(None)


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (1512543600000, 1512543600000.0),
        (1.5, 1.5),
        ("2017-12-06T07:00:00.000Z", 1512543600000.0),
        ("2017-12-06T00:00:00.000-07:00", 1512543600000.0),
        ("2017-12-06T07:00:00z", 1512543600000.0),
        ("2017-12-06T07:00:00.001+00:00", 1512543600001.0),
        ("1970-01-01T00:00:00Z", 0.0),
    ],
)
def test_dates(value: object, ms: float) -> None:
    assert parse_time(value) == ms


@pytest.mark.parametrize(
    "value",
    [
        "2017-12-06",
        "2017-12-06T07:00:00",
        "badstring",
        "",
        "1512543600000",
        True,
        None,
        [],
        10**400,
    ],
)
def test_not_dates(value: object) -> None:
    assert parse_time(value) is None


def test_date_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values, "_CACHE_SIZE", 2)
    values._times.clear()
    for i in range(5):
        assert parse_time(f"2017-12-06T07:00:0{i}Z") is not None
    assert len(values._times) <= 2
    assert parse_time("2017-12-06T07:00:04Z") == 1512543604000.0  # cached


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.0.0", (2, 0, 0, 1, ())),
        ("2", (2, 0, 0, 1, ())),
        ("2.1", (2, 1, 0, 1, ())),
        ("2-rc1", (2, 0, 0, 0, ((1, 0, "rc1"),))),
        ("2.0.0-rc.10+build.5", (2, 0, 0, 0, ((1, 0, "rc"), (0, 2, "10")))),
        ("1\nx", (1, 0, 0, 1, ())),  # the SDK drops what follows a newline when padding
    ],
)
def test_semver(text: str, expected: object) -> None:
    assert semver_key(text) == expected


@pytest.mark.parametrize("text", ["", "v1", "01.2.3", "1.2.3.4", "1..2", "1.2.3-", "x", 2, None])
def test_not_semver(text: object) -> None:
    assert semver_key(text) is None


def test_semver_order() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0",
    ]
    keys = [semver_key(v) for v in ordered]
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert len(set(keys)) == len(keys)
    assert semver_key("1.0.0+a") == semver_key("1.0.0+b") == semver_key("1.0.0")


def test_semver_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values, "_CACHE_SIZE", 2)
    values._semvers.clear()
    for i in range(5):
        assert semver_key(f"1.0.{i}") == (1, 0, i, 1, ())
    assert len(values._semvers) <= 2
    assert semver_key("1.0.4") == (1, 0, 4, 1, ())
