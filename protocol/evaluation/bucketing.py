"""LaunchDarkly's percentage bucketing: a context's place in [0, 1) for a rollout or segment rule.

``bucket(prefix, value)``: the SHA-1 of ``prefix + value`` (UTF-8), its first 15 hex digits
read as an integer, divided by ``0xFFFFFFFFFFFFFFF``. ``prefix`` (``flag_prefix``) is
``"{seed}."`` if the rollout has a seed, else ``"{flag or segment key}.{salt}."``. ``value``
is the context key or the ``bucketBy`` attribute: a string as is, an integral number in
decimal (``33333.0`` as ``33333``, as LaunchDarkly's Go and JavaScript SDKs and its published
test vectors do; its Python SDK buckets a JSON float at 0.0 even when it is whole); any other
type (boolean, fractional number, array, object) buckets at 0.0, like a missing attribute.

Published vectors (LaunchDarkly's SDK tests): flag ``hashKey``, salt ``saltyA``: key
``userKeyA`` → 0.42157587, ``userKeyB`` → 0.6708485, ``userKeyC`` → 0.10343106; attribute
``33333`` (integer, string or ``33333.0``) → 0.54771423; ``999.999`` → 0.

The hot path of a rollout by context key (compiler.py) does the same without the float:
``prefix_hasher(prefix)`` hashes the fixed prefix once (a copy of it takes the value), and
``digest_cut(threshold)`` is the smallest 8-byte digest prefix whose bucket reaches
``threshold``, so ``digest >= digest_cut(t)`` (bytes order is big-endian number order) is
exactly ``bucket >= t``: one SHA-1 and one bytes comparison per bucket boundary.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Final

__all__ = ["bucket", "digest_cut", "flag_prefix", "prefix_hasher", "utf8"]

_SCALE: Final = float(0xFFFFFFFFFFFFFFF)
_FIRST_8_BYTES: Final = struct.Struct(">Q").unpack_from
_sha1: Final = hashlib.sha1
_EXACT: Final = 2.0**53  # floats below this are exact integers
_TOP: Final = 1 << 60  # buckets come from the first 60 bits of the digest
# Above every 20-byte digest (a digest that is a prefix of it is smaller): "never reached".
_NEVER: Final = b"\xff" * 21


def flag_prefix(key: str, salt: str, seed: int | None) -> str:
    """The hash prefix of a rollout (``seed`` wins) or segment rule (``seed`` is None), with
    the ``.`` that separates it from the value."""
    return f"{seed}." if seed is not None else f"{key}.{salt}."


def bucket(prefix: str, value: Any) -> float:
    """The bucket of ``value`` under ``prefix`` (from ``flag_prefix``)."""
    t = type(value)
    if t is str:
        text = prefix + value
    elif t is int:
        text = prefix + str(value)
    elif t is float and value.is_integer() and -_EXACT < value < _EXACT:
        text = prefix + str(int(value))
    else:
        return 0.0
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate (a JSON "\ud800" escape): hash it anyway
        data = text.encode("utf-8", "surrogatepass")
    # The first 15 hex digits are the first 60 bits: 8 bytes less the last 4 bits.
    high: int = _FIRST_8_BYTES(_sha1(data).digest())[0]
    return (high >> 4) / _SCALE


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, a lone surrogate (a JSON ``"\\ud800"`` escape) included."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def prefix_hasher(prefix: str) -> Any:
    """A SHA-1 that has read ``prefix``: ``h = hasher.copy(); h.update(utf8(value))`` is the
    digest ``bucket(prefix, value)`` starts from (UTF-8 of a concatenation is the
    concatenation of the UTF-8s)."""
    return _sha1(utf8(prefix))


def _bucket_of(top60: int) -> float:
    return top60 / _SCALE  # what ``bucket`` computes from the digest's first 60 bits


def digest_cut(threshold: float) -> bytes:
    """The smallest 8-byte big-endian digest prefix whose bucket is ``>= threshold``, as
    bytes: for a SHA-1 ``digest``, ``digest >= digest_cut(t)`` iff its bucket is ``>= t``
    (the bucket grows with the digest's first 60 bits, and a 20-byte digest whose first 8
    bytes equal the cut is greater than it)."""
    if _bucket_of(0) >= threshold:
        return b"\x00" * 8
    if not _bucket_of(_TOP - 1) >= threshold:  # also NaN
        return _NEVER
    low, high = 0, _TOP - 1  # bucket(low) < threshold <= bucket(high)
    while high - low > 1:
        middle = (low + high) // 2
        if _bucket_of(middle) >= threshold:
            high = middle
        else:
            low = middle
    return (high << 4).to_bytes(8, "big")
