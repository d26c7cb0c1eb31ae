"""Evaluation results and reasons, and their client-side JSON, encoded once per result.

A compiled flag builds each distinct result it can give (a variation with a reason and the
prerequisites evaluated on the way) once, the first time it is needed, with its JSON already
encoded; evaluating returns that same object. So an evaluation allocates nothing in the
common case, and results can be compared with ``is`` within one flag version (``==``
compares fields, across versions too).

Client-side JSON of one flag (the ``evalx`` format of LaunchDarkly's client-side endpoints,
as its Relay Proxy writes it; ``body(with_reasons)``):
``{"value": V, "variation": N|null, "version": flagVersion, "flagVersion": flagVersion,
"trackEvents": true?, "trackReason": true?, "reason": {...}?, "debugEventsUntilDate": ms?,
"prerequisites": [keys]?}``, where ``trackEvents`` = the flag's ``trackEvents`` or the
result is part of an experiment, ``trackReason`` = part of an experiment (an ``inExperiment``
rollout bucket, or a rule / fallthrough with ``trackEvents`` / ``trackEventsFallthrough``),
``reason`` is written when reasons are asked for *or* ``trackReason`` is true, and optional
fields are left out when false or empty. ``patch(with_reasons)`` is the same object with
``"key"`` first: the data of an evaluated stream's ``patch`` event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "ERROR_KINDS",
    "ErrorKind",
    "EvaluationResult",
    "Reason",
    "ReasonKind",
    "ValueType",
    "check_type",
    "encode_json",
    "make_result",
]

ReasonKind = Literal[
    "OFF", "FALLTHROUGH", "TARGET_MATCH", "RULE_MATCH", "PREREQUISITE_FAILED", "ERROR"
]
ErrorKind = Literal[
    "MALFORMED_FLAG", "FLAG_NOT_FOUND", "USER_NOT_SPECIFIED", "WRONG_TYPE", "EXCEPTION"
]
ERROR_KINDS: Final = (
    "MALFORMED_FLAG",
    "FLAG_NOT_FOUND",
    "USER_NOT_SPECIFIED",
    "WRONG_TYPE",
    "EXCEPTION",
)


_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_CONSTANTS: Final = {True: b"true", False: b"false", None: b"null"}


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON (raises ValueError for NaN/Infinity, TypeError for non-JSON)."""
    if value is None or value is True or value is False:
        return _CONSTANTS[value]
    if type(value) is int:
        return str(value).encode()
    return _ENCODE(value).encode()


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a flag gave its value (LaunchDarkly's ``EvaluationReason``)."""

    kind: ReasonKind
    rule_index: int | None = None
    rule_id: str | None = None
    prerequisite_key: str | None = None
    error_kind: ErrorKind | None = None
    in_experiment: bool = False
    big_segments_status: str | None = None

    def encoded(self) -> bytes:
        """``to_json()`` encoded (cached: a flag's results share few reasons)."""
        found = _encoded_reasons.get(self)
        if found is None:
            if len(_encoded_reasons) >= _REASON_CACHE_SIZE:
                _encoded_reasons.clear()
            found = _encoded_reasons[self] = encode_json(self.to_json())
        return found

    def to_json(self) -> dict[str, Any]:
        """LaunchDarkly's JSON form: absent fields left out."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.rule_index is not None:
            out["ruleIndex"] = self.rule_index
        if self.rule_id is not None:
            out["ruleId"] = self.rule_id
        if self.prerequisite_key is not None:
            out["prerequisiteKey"] = self.prerequisite_key
        if self.in_experiment:
            out["inExperiment"] = True
        if self.error_kind is not None:
            out["errorKind"] = self.error_kind
        if self.big_segments_status is not None:
            out["bigSegmentsStatus"] = self.big_segments_status
        return out


_REASON_CACHE_SIZE: Final = 65536  # bounded: emptied when full
_encoded_reasons: dict[Reason, bytes] = {}


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """One flag's result for one context.

    ``variation`` is None when the flag gave no variation (an error, or off without an
    ``offVariation``): the caller then uses its default value. ``version`` is the flag's
    version (None for ``FLAG_NOT_FOUND``). ``prerequisites`` are the keys of the flag's
    direct prerequisites evaluated, in order (up to the first that failed).
    """

    key: str
    value: Any
    variation: int | None
    reason: Reason
    version: int | None
    track_events: bool = False
    track_reason: bool = False
    debug_events_until_date: int | float | None = None
    prerequisites: tuple[str, ...] = ()
    # JSON encodings, built by make_result: ("key":{...} without / with reasons).
    _fragments: tuple[bytes, bytes] = field(default=(b"", b""), compare=False, repr=False)

    @property
    def is_error(self) -> bool:
        return self.reason.kind == "ERROR"

    def fragment(self, with_reasons: bool) -> bytes:
        """``"key":{...}``: this flag's member of an all-flags JSON object."""
        return self._fragments[with_reasons]

    def body(self, with_reasons: bool) -> bytes:
        """The evaluated flag's client-side JSON object (module docstring)."""
        return self._fragments[with_reasons][len(encode_json(self.key)) + 1 :]

    def patch(self, with_reasons: bool) -> bytes:
        """The body with ``"key"`` first: an evaluated ``patch`` event's data."""
        body = self.body(with_reasons)
        return b'{"key":' + encode_json(self.key) + b"," + body[1:]

    def detail(self) -> dict[str, Any]:
        """``{value, variationIndex, reason}`` as LaunchDarkly's ``variationDetail`` gives it."""
        return {
            "value": self.value,
            "variationIndex": self.variation,
            "reason": self.reason.to_json(),
        }


def make_result(
    key: str,
    value: Any,
    variation: int | None,
    reason: Reason,
    version: int | None,
    *,
    track_events: bool = False,
    track_reason: bool = False,
    debug_events_until_date: int | float | None = None,
    prerequisites: tuple[str, ...] = (),
    value_json: bytes | None = None,
) -> EvaluationResult:
    """Build a result with its encodings (``value_json`` if the caller has it already)."""
    encoded_value = encode_json(value) if value_json is None else value_json
    head = b'{"value":' + encoded_value + b',"variation":' + encode_json(variation)
    head += b',"version":' + encode_json(version) + b',"flagVersion":' + encode_json(version)
    if track_events:
        head += b',"trackEvents":true'
    if track_reason:
        head += b',"trackReason":true'
    tail = b""
    if debug_events_until_date:
        tail += b',"debugEventsUntilDate":' + encode_json(debug_events_until_date)
    if prerequisites:
        tail += b',"prerequisites":' + encode_json(list(prerequisites))
    tail += b"}"
    with_reason = head + b',"reason":' + reason.encoded() + tail
    without_reason = with_reason if track_reason else head + tail
    member = encode_json(key) + b":"
    return EvaluationResult(
        key,
        value,
        variation,
        reason,
        version,
        track_events,
        track_reason,
        debug_events_until_date,
        prerequisites,
        (member + without_reason, member + with_reason),
    )


ValueType = Literal["bool", "int", "double", "string", "any"]


def check_type(result: EvaluationResult, value_type: ValueType) -> EvaluationResult:
    """``result``, or ``ERROR/WRONG_TYPE`` if its value is not of ``value_type`` (what a typed
    getter such as LaunchDarkly's ``boolVariation`` gives). ``int`` and ``double`` accept any
    number; a result without a variation (the caller's default applies) passes."""
    if result.variation is None or value_type == "any":
        return result
    t = type(result.value)
    ok = (
        t is bool
        if value_type == "bool"
        else t is str
        if value_type == "string"
        else t in (int, float)
    )
    if ok:
        return result
    return make_result(
        result.key,
        None,
        None,
        Reason("ERROR", error_kind="WRONG_TYPE"),
        result.version,
        track_events=result.track_events,
        debug_events_until_date=result.debug_events_until_date,
        prerequisites=result.prerequisites,
    )
