"""Item keys, Kafka record keys and the environment -> partition function.

Rules:
- A key (environment, flag or segment) is 1..256 characters of ``[A-Za-z0-9._-]``. The charset
  has no ``/``, so ``"{env}/{kind}/{key}"`` splits back unambiguously, and nothing needs JSON
  or URL escaping.
- The record key is ``b"{env}/{kind}/{key}"``; one item per record key, which is what lets a
  compacted topic keep exactly the latest state of every item.
- The partition is chosen from the **environment only**, so all changes of one environment
  are totally ordered. The hash is Kafka's own ``murmur2`` (``Utils.murmur2``, positive-masked,
  modulo the partition count), i.e. the partition Kafka's Java default partitioner would pick
  for a record keyed by the environment name: Java tools and every Python process agree.
"""

from __future__ import annotations

import re
from typing import Final, Literal, cast

from protocol.errors import EnvelopeError, ValidationError

__all__ = [
    "ITEM_KINDS",
    "KEY_MAX_LENGTH",
    "KINDS",
    "ItemKind",
    "Kind",
    "is_valid_key",
    "murmur2",
    "parse_record_key",
    "partition_for",
    "record_key",
    "validate_key",
]

Kind = Literal["flag", "segment", "env"]
ItemKind = Literal["flag", "segment"]
ITEM_KINDS: Final = ("flag", "segment")
KINDS: Final = ("flag", "segment", "env")
KEY_MAX_LENGTH: Final = 256

_KEY_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,256}")


def is_valid_key(key: object) -> bool:
    """True if ``key`` is a string of 1..256 characters of ``[A-Za-z0-9._-]``."""
    return isinstance(key, str) and _KEY_RE.fullmatch(key) is not None


def validate_key(key: object, *, path: str = "key") -> str:
    """Return ``key`` if it is a valid key, else raise ValidationError naming ``path``."""
    if not isinstance(key, str):
        raise ValidationError(path, "must be a string")
    if _KEY_RE.fullmatch(key) is None:
        raise ValidationError(
            path, f"must be 1..{KEY_MAX_LENGTH} characters of A-Z, a-z, 0-9, '.', '_', '-'"
        )
    return key


def record_key(env: str, kind: Kind, key: str) -> bytes:
    """The Kafka record key of an item: ``b"{env}/{kind}/{key}"``."""
    return f"{env}/{kind}/{key}".encode()


def parse_record_key(raw: bytes) -> tuple[str, Kind, str]:
    """Split a record key into ``(env, kind, key)``; raise EnvelopeError if malformed."""
    try:
        text = raw.decode("ascii")
    except (UnicodeDecodeError, AttributeError) as exc:
        raise EnvelopeError("record key is not ASCII bytes") from exc
    parts = text.split("/")
    if len(parts) != 3:
        raise EnvelopeError("record key is not '{env}/{kind}/{key}'")
    env, kind, key = parts
    if kind not in KINDS:
        raise EnvelopeError(f"record key has unknown kind {kind!r}")
    if not (is_valid_key(env) and is_valid_key(key)):
        raise EnvelopeError("record key has an invalid environment or item key")
    return env, cast(Kind, kind), key


_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (seed 0x9747b28c) as a signed 32-bit int, like Java returns."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    n4 = length & ~3
    for i in range(0, n4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    # Java's switch falls through from case 3 to case 1; the multiply happens once.
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h ^= data[n4]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(env: str, partitions: int) -> int:
    """The partition of every record of ``env``: ``(murmur2(env) & 0x7fffffff) % partitions``."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return (murmur2(env.encode()) & 0x7FFFFFFF) % partitions
