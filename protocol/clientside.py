"""Client-side and mobile SDK wire formats: evaluated events, versions, CORS, secure mode.

What LaunchDarkly's client-side SDKs (browser, React Native, iOS, Android) read from the
``evalx`` polling endpoints and the ``/eval`` / ``/meval`` streams (DESIGN.md §11):

- all flags: ``{"KEY": {"value": V, "variation": N, "version": v, "flagVersion": fv, ...}}``
  (the evaluated JSON of ``protocol.evaluation.result``);
- stream events: ``put`` (data: all flags), ``patch`` (data: one flag with ``"key"`` first),
  ``delete`` (data: ``{"key": K, "version": v}``), ``ping`` (data: one space, as LaunchDarkly's
  Relay Proxy sends it: an event with empty data is never dispatched by an ``EventSource``).

Versions. A client SDK ignores a ``patch`` or ``delete`` whose ``version`` is not greater than
the one it holds for that flag. A flag's *result* can change without a new flag version
(a segment or a prerequisite changed), so ``version`` cannot be the flag's version
(``flagVersion`` is). Rules:

1. ``version`` is a position in the environment's log: ``offset + 1`` of a change.
2. In a full payload (poll or ``put``) a flag's ``version`` is ``dependency offset + 1``: the
   highest offset of any item the flag's result depends on (the flag, its prerequisites and
   their dependencies, the segments its rules use and their nested segments), so it stays
   the same until something the flag reads changes, and never exceeds the payload's
   position.
3. A ``patch`` or ``delete`` caused by a change at offset O has ``version`` ``O + 1``: greater
   than any version in a payload of an earlier position, whatever the flag's own version.
   ``restamp`` rewrites the pre-encoded ``version`` of a result's JSON accordingly.

CORS: the JS endpoints answer browsers on other origins (``cors_headers``). Secure mode: the
hash a page passes as ``?h=`` is hex HMAC-SHA256(secret, fully-qualified context key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Final

from protocol.evaluation import CompiledFlag, CompiledSegment
from protocol.sse import encode_event

__all__ = [
    "ALLOWED_HEADERS",
    "EXPOSED_HEADERS",
    "PING_EVENT",
    "cors_headers",
    "delete_data",
    "delete_event",
    "dependency_offsets",
    "patch_event",
    "put_event",
    "restamp",
    "secure_mode_hash",
    "unversioned",
    "valid_secure_mode_hash",
]

# Request headers LaunchDarkly's browser SDKs send (and LaunchDarkly's own services allow).
ALLOWED_HEADERS: Final = (
    "Accept",
    "Authorization",
    "Cache-Control",
    "Content-Type",
    "Content-Length",
    "Accept-Encoding",
    "Last-Event-ID",
    "X-LaunchDarkly-User-Agent",
    "X-LaunchDarkly-Payload-ID",
    "X-LaunchDarkly-Wrapper",
    "X-LaunchDarkly-Event-Schema",
    "X-LaunchDarkly-Tags",
)
EXPOSED_HEADERS: Final = ("Date", "ETag")
_ALLOWED: Final = ",".join(ALLOWED_HEADERS)
_EXPOSED: Final = ",".join(EXPOSED_HEADERS)
_MAX_AGE: Final = "300"

PING_EVENT: Final = encode_event(b" ", event="ping")


def cors_headers(
    origin: str | None, allowed_origins: tuple[str, ...], methods: str, *, preflight: bool
) -> dict[str, str]:
    """The CORS response headers for a request from ``origin`` (its ``Origin`` header).

    An origin the environment allows is echoed (with ``Vary: Origin``); without an
    ``Origin`` header (not a browser) an environment open to all gets ``*``. A refused
    origin gets no ``Access-Control-Allow-Origin``, so the browser blocks the response.
    ``preflight`` adds the methods, headers and max-age a preflight answer carries.
    """
    headers: dict[str, str] = {"Vary": "Origin"}
    open_to_all = allowed_origins == ("*",)
    if origin is None:
        if open_to_all:
            headers["Access-Control-Allow-Origin"] = "*"
    elif open_to_all or origin in allowed_origins:
        headers["Access-Control-Allow-Origin"] = origin
    if "Access-Control-Allow-Origin" not in headers:
        return headers
    headers["Access-Control-Allow-Credentials"] = "false"
    headers["Access-Control-Expose-Headers"] = _EXPOSED
    if preflight:
        headers["Access-Control-Allow-Methods"] = methods
        headers["Access-Control-Allow-Headers"] = _ALLOWED
        headers["Access-Control-Max-Age"] = _MAX_AGE
    return headers


def secure_mode_hash(secret: str, fully_qualified_key: str) -> str:
    """Hex HMAC-SHA256 of the context's fully-qualified key under the environment's secret."""
    return hmac.new(
        secret.encode("utf-8", "surrogatepass"),
        fully_qualified_key.encode("utf-8", "surrogatepass"),
        hashlib.sha256,
    ).hexdigest()


def valid_secure_mode_hash(secret: str, fully_qualified_key: str, given: str) -> bool:
    """True if ``given`` is the context's secure-mode hash (constant-time compare)."""
    expected = secure_mode_hash(secret, fully_qualified_key).encode()
    return hmac.compare_digest(expected, given.strip().lower().encode("utf-8", "replace"))


# --- versions (rules 1-3) ---------------------------------------------------------------


def _version_marker(version: int | None) -> bytes:
    return b',"version":' + json.dumps(version).encode() + b',"flagVersion":'


def restamp(encoded: bytes, flag_version: int | None, version: int) -> bytes:
    """``encoded`` (a result's fragment, body or patch JSON) with ``"version"`` set to
    ``version``; ``flagVersion`` stays the flag's. The value comes first in that JSON and may
    itself hold the same bytes, so the *last* occurrence is the result's own (nothing after
    it can: reasons and prerequisites have fixed keys and JSON-escaped strings)."""
    marker = _version_marker(flag_version)
    at = encoded.rfind(marker)
    if at < 0:
        return encoded
    new = b',"version":%d,"flagVersion":' % version
    return encoded[:at] + new + encoded[at + len(marker) :]


def unversioned(encoded: bytes, flag_version: int | None) -> bytes:
    """``encoded`` without its ``version`` and ``flagVersion`` values: what a client sees
    of a result apart from versions (two results are the same to a client iff equal)."""
    marker = _version_marker(flag_version)
    at = encoded.rfind(marker)
    if at < 0:
        return encoded
    end = at + len(marker)
    # flagVersion's value is the same number as version's; skip it.
    end += len(json.dumps(flag_version))
    return encoded[:at] + encoded[end:]


def dependency_offsets(
    flags: Mapping[str, CompiledFlag],
    segments: Mapping[str, CompiledSegment],
    offset_of: Callable[[str, str], int],
) -> dict[str, int]:
    """Rule 2: each flag's dependency offset. ``offset_of(kind, key)`` is the offset of the
    record that last changed the item (-1 if none: a reference to a missing item). A
    prerequisite or segment cycle is cut where it closes (such flags evaluate to
    ``MALFORMED_FLAG`` anyway)."""
    segment_memo: dict[str, int] = {}
    flag_memo: dict[str, int] = {}

    def segment_offset(key: str, seen: set[str]) -> int:
        known = segment_memo.get(key)
        if known is not None:
            return known
        best = offset_of("segment", key)
        if key in seen:
            return best  # a cycle closes here; not memoized (the outer call finishes it)
        segment = segments.get(key)
        if segment is not None:
            seen.add(key)
            for nested in segment.segment_keys:
                best = max(best, segment_offset(nested, seen))
            seen.discard(key)
        segment_memo[key] = best
        return best

    def flag_offset(key: str, seen: set[str]) -> int:
        known = flag_memo.get(key)
        if known is not None:
            return known
        best = offset_of("flag", key)
        if key in seen:
            return best
        flag = flags.get(key)
        if flag is not None:
            seen.add(key)
            for prerequisite in flag.prerequisite_keys:
                best = max(best, flag_offset(prerequisite, seen))
            for segment in flag.segment_keys:
                best = max(best, segment_offset(segment, set()))
            seen.discard(key)
        flag_memo[key] = best
        return best

    return {key: flag_offset(key, set()) for key in flags}


# --- stream events ----------------------------------------------------------------------


def put_event(all_flags: bytes, id: str) -> bytes:
    """``put`` of every evaluated flag (``all_flags``: the all-flags JSON object)."""
    return encode_event(all_flags, event="put", id=id)


def patch_event(patch: bytes, id: str) -> bytes:
    """``patch`` of one evaluated flag (``patch``: its JSON with ``"key"`` first)."""
    return encode_event(patch, event="patch", id=id)


def delete_data(key: str, version: int) -> bytes:
    """The data of a ``delete`` event: ``{"key":K,"version":v}``."""
    return b'{"key":' + json.dumps(key).encode() + b',"version":%d}' % version


def delete_event(key: str, version: int, id: str) -> bytes:
    """``delete`` of one flag (deleted, or no longer visible to this SDK)."""
    return encode_event(delete_data(key, version), event="delete", id=id)
