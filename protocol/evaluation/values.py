"""Typed readings of JSON values for the clause operators: numbers, dates, semantic versions.

Rules (LaunchDarkly's Python SDK, which the differential tests compare against):

- A *number* is a JSON int or float, never a boolean.
- A *date* is a number (milliseconds since the Unix epoch) or an RFC 3339 string with a time
  zone (``Z`` or ``±hh:mm``), as Python's ``datetime.fromisoformat`` reads it once a final
  ``Z`` is replaced by ``+00:00``; it becomes milliseconds since the epoch (a float). A string
  without a time zone, or anything else, is not a date.
- A *semantic version* is ``MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`` (semver 2.0; no leading
  zeros; ASCII digits). A missing minor or patch is read as ``.0`` (``"2"`` → ``2.0.0``,
  ``"2-rc1"`` → ``2.0.0-rc1``). Versions order by major, minor, patch, then a version without
  prerelease above any with one, prerelease identifiers compared one by one (numeric ones
  numerically and below alphanumeric ones, fewer identifiers first when all else is equal);
  build metadata is ignored. ``semver_key`` returns a tuple that orders exactly so.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["SemverKey", "is_number", "parse_time", "semver_key"]

_EPOCH: Final = datetime.fromtimestamp(0, UTC)
_FINAL_Z: Final = re.compile("Z$", re.IGNORECASE)
_PRERELEASE_ID: Final = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
_BUILD_ID: Final = r"[0-9a-zA-Z-]+"
_SEMVER: Final = re.compile(
    rf"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-({_PRERELEASE_ID}(?:\.{_PRERELEASE_ID})*))?"
    rf"(?:\+{_BUILD_ID}(?:\.{_BUILD_ID})*)?",
    re.ASCII,
)
# Without DOTALL, as in the SDK: "1\nx" reads as "1.0.0" (what follows a newline is dropped).
_LEADING_NUMBERS: Final = re.compile(r"^([0-9.]*)(.*)")

# (major, minor, patch, 1, ()) for a release; (major, minor, patch, 0, identifiers) for a
# prerelease, each identifier (0, length, digits) if numeric else (1, 0, text).
SemverKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def is_number(value: Any) -> bool:
    t = type(value)
    return t is int or t is float


# Parsed strings, so a context attribute read by many evaluations is parsed once. Bounded:
# emptied when full (the next evaluations parse again).
_CACHE_SIZE: Final = 4096
_times: dict[str, float | None] = {}
_semvers: dict[str, SemverKey | None] = {}


def parse_time(value: Any) -> float | None:
    """Milliseconds since the epoch, or None if ``value`` is not a date (module rules)."""
    t = type(value)
    if t is int or t is float:
        try:
            return float(value)
        except OverflowError:
            return None
    if t is not str:
        return None
    try:
        return _times[value]
    except KeyError:
        pass
    if len(_times) >= _CACHE_SIZE:
        _times.clear()
    parsed = _times[value] = _parse_time(value)
    return parsed


def _parse_time(text: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(_FINAL_Z.sub("+00:00", text))
        return (parsed - _EPOCH).total_seconds() * 1000.0
    except (ValueError, TypeError, OverflowError):
        return None  # not ISO 8601, no time zone (naive - aware), or out of range


def semver_key(value: Any) -> SemverKey | None:
    """The ordering key of a semantic version string, or None if it is not one."""
    if type(value) is not str:
        return None
    try:
        return _semvers[value]
    except KeyError:
        pass
    if len(_semvers) >= _CACHE_SIZE:
        _semvers.clear()
    key = _semvers[value] = _semver_key(value)
    return key


def _semver_key(value: str) -> SemverKey | None:
    match = _SEMVER.fullmatch(value)
    if match is None:
        # "2" and "2.1" (and "2-rc1") get the missing components, as LaunchDarkly allows.
        for _ in range(2):
            head = _LEADING_NUMBERS.match(value)
            assert head is not None  # the pattern matches every string
            value = head.group(1) + ".0" + head.group(2)
            match = _SEMVER.fullmatch(value)
            if match is not None:
                break
        else:
            return None
    major, minor, patch, prerelease = match.groups()
    if prerelease is None:
        return (int(major), int(minor), int(patch), 1, ())
    identifiers = tuple(
        (0, len(part), part) if part.isdigit() else (1, 0, part) for part in prerelease.split(".")
    )
    return (int(major), int(minor), int(patch), 0, identifiers)
