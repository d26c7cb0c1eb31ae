"""JSON at orjson's speed with the standard library's exact results.

The publisher decodes every request body and encodes every item it stores; for a bulk import
of ~1 KB flags the standard library's codec was a third of the publisher's CPU
(BENCHMARKS.md, "publisher"). orjson is 3-12x faster but differs in corner cases, so each
function here uses it only where its answer is provably the one ``json`` gives, and asks
``json`` otherwise:

1. ``loads``: orjson turns an integer beyond 64 bits into a float, where ``json`` keeps it
   exact: a body with a run of 20 or more digits is decoded by ``json``. Whatever orjson
   refuses (NaN, Infinity, a lone surrogate, UTF-16, nesting past its limit, a syntax error)
   is decoded by ``json``, which accepts or refuses it as before, with its own messages.
2. ``dumps``: compact UTF-8, keys in their given order, as ``json.dumps(separators=(",", ":"),
   ensure_ascii=False)``. orjson refuses integers beyond 64 bits and non-string keys (TypeError):
   ``json`` encodes those. Floats are written in the shortest form that reads back to the same
   double, which can differ from ``repr`` in the exponent's spelling (``1.5e-7`` for
   ``1.5e-07``): the same JSON number.
3. ``dumps_strict``: ``dumps`` that refuses NaN and infinities (ValueError) as
   ``json.dumps(allow_nan=False)`` does. orjson writes them as ``null``, so an output that
   contains ``null`` anywhere is encoded again by ``json``; one without cannot have held one.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

__all__ = ["dumps", "dumps_strict", "loads"]

# Every digit becomes "0" and every other byte a space: a run of 20 zeros is a run of 20
# digits. Two passes of C over the body, ~15x faster than a regular expression for it.
_DIGITS_ONLY: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_TWENTY_DIGITS: Final = b"0" * 20


def loads(raw: bytes) -> Any:
    """``json.loads(raw)``, faster (rule 1). Raises what ``json.loads`` raises."""
    if _TWENTY_DIGITS not in raw.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value`` (rule 2). Raises TypeError for what is not JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_strict(value: Any) -> bytes:
    """``dumps`` refusing NaN and infinities with ValueError (rule 3)."""
    try:
        out = orjson.dumps(value)
    except TypeError:
        return _json_strict(value)  # encodes it, or names what is wrong with it
    return _json_strict(value) if b"null" in out else out


def _json_strict(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
