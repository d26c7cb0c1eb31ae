"""OpenFeature Remote Evaluation Protocol (OFREP): requests, answers and notices (sans-I/O).

The contract is the OFREP OpenAPI spec (tests/relay/ofrep_spec/, spec 0.3.0, with ADR-0008's
event streams); docs/openfeature.md explains it for operators. Rules, in the order a request
meets them:

1. Request. The body is JSON ``{"context": {...}}``; not JSON → ``PARSE_ERROR``; valid JSON
   but not an object → ``PARSE_ERROR``; ``context`` absent or null → an empty context (so
   ``TARGETING_KEY_MISSING``); ``context`` not an object → ``INVALID_CONTEXT``.
2. Context mapping (OpenFeature → LaunchDarkly context, then ``protocol.evaluation``'s own
   validation): ``kind`` (default ``user``) is the context kind; ``targetingKey`` is the key
   (``key`` is accepted when ``targetingKey`` is absent; a missing or empty one is
   ``TARGETING_KEY_MISSING``); ``privateAttributes`` becomes ``_meta.privateAttributes``;
   every other field is an attribute (``name`` and ``anonymous`` keep LaunchDarkly's meaning).
   ``kind: "multi"``: every other object field is one context of that kind, mapped the same
   way (without ``kind``); a top-level ``targetingKey`` is ignored there. Anything
   ``parse_context`` refuses is ``INVALID_CONTEXT`` with its message.
3. Answer of one flag (``encode_evaluation``), from the LaunchDarkly result: ``value`` (left
   out when no variation was served: the provider then uses its code default), ``variant``
   (always present: the flag's ``variationNames[i]`` when it is a non-empty string, else the
   variation index as a string; ``"default"`` when no variation was served), ``reason`` and
   ``metadata`` (``reasonKind``, ``flagVersion`` and, when set, ``variationIndex``,
   ``ruleIndex``, ``ruleId``, ``inExperiment``, ``prerequisiteKey``).
4. Reasons (only the spec's success values): ``OFF`` and ``PREREQUISITE_FAILED`` →
   ``DISABLED`` (the off variation is served); ``TARGET_MATCH`` → ``TARGETING_MATCH``;
   ``RULE_MATCH`` → ``SPLIT`` if that rule serves a percentage rollout, else
   ``TARGETING_MATCH``; ``FALLTHROUGH`` → ``SPLIT`` for a rollout, else ``STATIC``
   (OpenFeature's ``DEFAULT`` would fit a targeting flag that fell through, but the spec's
   success enum has no ``DEFAULT``; ``metadata.reasonKind`` keeps LaunchDarkly's kind).
5. Errors: an unknown flag is ``FLAG_NOT_FOUND`` (HTTP 404); any other LaunchDarkly error
   (``MALFORMED_FLAG`` …) is ``GENERAL``; in a bulk answer both are failure items.
6. Bulk answer (``bulk_body``): ``{"flags": [...], "eventStreams": [...]}``; its ``ETag``
   (``bulk_etag``, weak) is a digest of the environment's position, the audience, the
   request body and the event-stream entry: computed without evaluating anything, equal
   only when the answer is the same (a provider sends the same bytes for the same context;
   the same context spelled differently only costs a 200 instead of a 304).
7. Notices (ADR-0008, ``notice_event``): one SSE ``message`` per notice,
   ``id: <position>`` and data ``{"type":"refetchEvaluation","etag":"<position>"}``.
8. Notice-stream tokens (``notice_token``): ``<env, base64url>.<HMAC-SHA256>`` keyed by the
   environment's credential hashes (never a secret itself), so every relay computes the same
   token, a token opens only its environment's notice stream, and rotating a key changes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from protocol.evaluation import Context, ContextError, EvaluationResult, Reason, parse_context
from protocol.evaluation.result import encode_json
from protocol.sse import encode_event

__all__ = [
    "ErrorCode",
    "FlagInfo",
    "OfrepError",
    "bulk_body",
    "bulk_etag",
    "encode_evaluation",
    "encode_failure",
    "etag_matches",
    "event_streams_json",
    "flag_info",
    "map_context",
    "notice_event",
    "notice_token",
    "ofrep_reason",
    "parse_request",
    "token_environment",
]

ErrorCode = Literal[
    "PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL", "FLAG_NOT_FOUND"
]
OfrepReason = Literal["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED"]

NO_VARIANT: Final = "default"  # variant of an answer without value (rule 3)
_TOKEN_LABEL: Final = b"flagstream ofrep notices v1\n"
_TOKEN_MAC_BYTES: Final = 18


class OfrepError(Exception):
    """A request OFREP answers with an error code (``code``) and ``errorDetails``."""

    def __init__(self, code: ErrorCode, details: str) -> None:
        super().__init__(details)
        self.code: ErrorCode = code
        self.details = details


# --- requests (rules 1 and 2) ---------------------------------------------------------------


def parse_request(body: bytes) -> Context:
    """The evaluation context of an OFREP request body; raises ``OfrepError``."""
    try:
        obj = json.loads(_json_text(body))
    except (ValueError, RecursionError):
        raise OfrepError("PARSE_ERROR", "the request body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise OfrepError("PARSE_ERROR", 'the request body must be a JSON object {"context": {...}}')
    context = obj.get("context")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise OfrepError("INVALID_CONTEXT", '"context" must be a JSON object')
    return map_context(context)


def _json_text(body: bytes) -> str | bytes:
    """``body`` decoded as ``json.loads`` would decode it, skipping its encoding detection
    (``json.detect_encoding``) in the usual case: a body opening with ``{`` not followed by
    a NUL byte is UTF-8 to it. Anything else is left to ``json.loads``."""
    if body[:1] == b"{" and body[1:2] != b"\0":
        return body.decode("utf-8", "surrogatepass")
    return body


def map_context(context: Mapping[str, Any]) -> Context:
    """An OpenFeature evaluation context as a LaunchDarkly ``Context`` (rule 2)."""
    kind = context.get("kind", "user")
    ld: dict[str, Any]
    if kind == "multi":
        ld = {"kind": "multi"}
        for name, value in context.items():
            if name in ("kind", "targetingKey"):
                continue
            if not isinstance(value, dict):
                raise OfrepError(
                    "INVALID_CONTEXT", f'multi-kind context: "{name}" must be an object'
                )
            ld[name] = _single(value, f"{name}.")
        if len(ld) == 1:
            raise OfrepError("INVALID_CONTEXT", "multi-kind context must contain at least one kind")
    else:
        ld = {"kind": kind, **_single(context, "")}
    try:
        return parse_context(ld)
    except ContextError as exc:
        raise OfrepError("INVALID_CONTEXT", str(exc)) from None


def _single(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    key = obj.get("targetingKey")
    if key is None:
        key = obj.get("key")
    if key is None or key == "":
        raise OfrepError("TARGETING_KEY_MISSING", f"{where}targetingKey is missing")
    if not isinstance(key, str):
        raise OfrepError("INVALID_CONTEXT", f"{where}targetingKey must be a string")
    out: dict[str, Any] = {"key": key}
    for name, value in obj.items():
        if name in ("targetingKey", "key", "kind"):
            continue
        if name == "privateAttributes":
            out["_meta"] = {"privateAttributes": value}
        else:
            out[name] = value
    return out


# --- flags and answers (rules 3 to 5) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlagInfo:
    """What an OFREP answer needs from one flag version besides its evaluation result."""

    variants: tuple[str, ...] = ()  # variant name per variation index ("" = use the index)
    split_rules: frozenset[int] = frozenset()  # indexes of rules that serve a rollout
    split_fallthrough: bool = False

    def variant(self, variation: int) -> str:
        if variation < len(self.variants) and self.variants[variation]:
            return self.variants[variation]
        return str(variation)


def flag_info(item: object) -> FlagInfo:
    """The ``FlagInfo`` of a flag's JSON (parsed); anything unreadable is left out."""
    if not isinstance(item, dict):
        return FlagInfo()
    names = item.get("variationNames")
    variants = (
        tuple(n if isinstance(n, str) else "" for n in names) if isinstance(names, list) else ()
    )
    rules = item.get("rules")
    split_rules = frozenset(
        i
        for i, rule in enumerate(rules if isinstance(rules, list) else ())
        if isinstance(rule, dict) and rule.get("rollout") is not None
    )
    fallthrough = item.get("fallthrough")
    split_fallthrough = isinstance(fallthrough, dict) and fallthrough.get("rollout") is not None
    return FlagInfo(variants, split_rules, split_fallthrough)


def ofrep_reason(reason: Reason, info: FlagInfo) -> OfrepReason:
    """The OFREP reason of a LaunchDarkly reason that is not an error (rule 4)."""
    kind = reason.kind
    if kind in ("OFF", "PREREQUISITE_FAILED"):
        return "DISABLED"
    if kind == "TARGET_MATCH":
        return "TARGETING_MATCH"
    if kind == "RULE_MATCH":
        return "SPLIT" if reason.rule_index in info.split_rules else "TARGETING_MATCH"
    return "SPLIT" if info.split_fallthrough else "STATIC"


def encode_evaluation(result: EvaluationResult, info: FlagInfo) -> tuple[int, bytes]:
    """``(HTTP status, JSON)`` of one flag's answer: 200 success, 404 not found, 400 error."""
    reason = result.reason
    if reason.kind == "ERROR":
        if reason.error_kind == "FLAG_NOT_FOUND":
            return 404, encode_failure(
                "FLAG_NOT_FOUND", f"flag {result.key!r} was not found", key=result.key
            )
        return 400, encode_failure(
            "GENERAL",
            f"flag {result.key!r} could not be evaluated ({reason.error_kind})",
            key=result.key,
        )
    metadata: dict[str, Any] = {"reasonKind": reason.kind}
    if result.version is not None:
        metadata["flagVersion"] = result.version
    answer: dict[str, Any] = {"key": result.key}
    if result.variation is None:
        variant = NO_VARIANT
    else:
        answer["value"] = result.value
        variant = info.variant(result.variation)
        metadata["variationIndex"] = result.variation
    if reason.rule_index is not None:
        metadata["ruleIndex"] = reason.rule_index
    if reason.rule_id is not None:
        metadata["ruleId"] = reason.rule_id
    if reason.in_experiment:
        metadata["inExperiment"] = True
    if reason.prerequisite_key is not None:
        metadata["prerequisiteKey"] = reason.prerequisite_key
    answer["reason"] = ofrep_reason(reason, info)
    answer["variant"] = variant
    answer["metadata"] = metadata
    return 200, encode_json(answer)


def encode_failure(code: ErrorCode, details: str, *, key: str | None = None) -> bytes:
    """An error answer: with ``key`` for one flag, without it for a failed bulk request."""
    body: dict[str, Any] = {} if key is None else {"key": key}
    body["errorCode"] = code
    body["errorDetails"] = details
    return encode_json(body)


def event_streams_json(url: str, inactivity_delay: int) -> bytes:
    """The ``eventStreams`` array of a bulk answer: one SSE notice stream."""
    return encode_json([{"type": "sse", "url": url, "inactivityDelaySec": inactivity_delay}])


def bulk_body(flags: Iterable[bytes], event_streams: bytes) -> bytes:
    """A bulk answer from already-encoded flag answers and ``event_streams_json``."""
    # One join of the parts: chaining ``+`` would copy the whole (tens of KB) answer per part.
    return b"".join((b'{"flags":[', b",".join(flags), b'],"eventStreams":', event_streams, b"}"))


def bulk_etag(position: str, audience: str, request_body: bytes, event_streams: bytes) -> str:
    """The weak ETag of a bulk answer (rule 6)."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{position}\n{audience}\n{len(request_body)}\n".encode())
    digest.update(request_body)
    digest.update(event_streams)
    return f'W/"{digest.hexdigest()}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """``If-None-Match`` against ``etag`` with the weak comparison (RFC 9110 §13.1.2)."""
    if not if_none_match:
        return False
    opaque = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == opaque:
            return True
    return False


# --- notices (rules 7 and 8) -----------------------------------------------------------------


def notice_event(position: str) -> bytes:
    """The SSE frame telling providers to re-fetch their bulk evaluation."""
    data = encode_json({"type": "refetchEvaluation", "etag": position})
    return encode_event(data, id=position)


def notice_token(env: str, secrets: Iterable[str]) -> str:
    """The token of ``env``'s notice stream, keyed by ``secrets`` (credential hashes)."""
    key = "\n".join(sorted(secrets)).encode()
    mac = hmac.new(key, _TOKEN_LABEL + env.encode(), hashlib.sha256).digest()[:_TOKEN_MAC_BYTES]
    return f"{_b64(env.encode())}.{_b64(mac)}"


def token_environment(token: str | None) -> str | None:
    """The environment a token names (not yet verified: compare with ``notice_token``)."""
    if not token or token.count(".") != 1:
        return None
    encoded = token.split(".", 1)[0] + "=" * (-len(token.split(".", 1)[0]) % 4)
    try:
        return base64.b64decode(encoded, altchars=b"-_", validate=True).decode() or None
    except (binascii.Error, ValueError):
        return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
