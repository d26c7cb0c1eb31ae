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
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Final

__all__ = ["bucket", "flag_prefix"]

_SCALE: Final = float(0xFFFFFFFFFFFFFFF)
_FIRST_8_BYTES: Final = struct.Struct(">Q").unpack_from
_sha1: Final = hashlib.sha1
_EXACT: Final = 2.0**53  # floats below this are exact integers


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
