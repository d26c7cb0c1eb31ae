"""The Kafka record value: a msgpack envelope around one pre-encoded item.

Wire format (schema 1): a msgpack **map** with these string keys (extra keys are ignored, so a
later schema can add fields without breaking older relays):

=============  ==========  ===============================================================
``s``          int         schema version, ``1``; any other value is refused
``kind``       str         ``flag`` | ``segment`` | ``env``
``env``        str         environment key
``key``        str         item key (for kind ``env``: the environment key again)
``v``          int         the item's version (>= 0)
``ts``         int         publish timestamp, ms since the Unix epoch (publisher clock)
``actor``      str         who made the change (audit; never a secret)
``item``       bin         the item's compact UTF-8 JSON, encoded once by the publisher
``del``        bool        tombstone flag (the item JSON then carries ``deleted: true``)
=============  ==========  ===============================================================

Decoding never re-parses ``item``: relays splice those bytes into SSE payloads unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, cast

import msgpack

from protocol.errors import EnvelopeError
from protocol.keys import KINDS, Kind

__all__ = ["SCHEMA_VERSION", "Envelope", "decode_envelope", "encode_envelope"]

SCHEMA_VERSION: Final = 1
# Bounds for the unpacker: a record larger than Kafka's default max (1 MiB) by a wide margin is
# refused rather than allowed to allocate without limit.
_MAX_RECORD_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Envelope:
    """One state change of one item, as carried by one Kafka record."""

    kind: Kind
    env: str
    key: str
    version: int
    published_ms: int
    actor: str
    item: bytes
    deleted: bool = False


def encode_envelope(e: Envelope) -> bytes:
    """Serialize ``e`` to msgpack bytes (the Kafka record value)."""
    return cast(
        bytes,
        msgpack.packb(
            {
                "s": SCHEMA_VERSION,
                "kind": e.kind,
                "env": e.env,
                "key": e.key,
                "v": e.version,
                "ts": e.published_ms,
                "actor": e.actor,
                "item": e.item,
                "del": e.deleted,
            },
            use_bin_type=True,
        ),
    )


# (field, wire name, type) for the slow path that names the bad field.
_FIELDS: Final = (
    ("kind", str),
    ("env", str),
    ("key", str),
    ("v", int),
    ("ts", int),
    ("actor", str),
    ("item", bytes),
    ("del", bool),
)


def decode_envelope(data: bytes | None) -> Envelope:
    """Parse a Kafka record value; raise only EnvelopeError (count and skip it).

    ``None`` (a Kafka tombstone record, which flagstream never writes) is an error too.
    """
    if data is None:
        raise EnvelopeError("record has no value")
    if len(data) > _MAX_RECORD_BYTES:
        raise EnvelopeError("record value too large")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types (ValueError, ExtraData, ...)
        raise EnvelopeError(f"malformed msgpack: {type(exc).__name__}") from exc
    if type(obj) is not dict:
        raise EnvelopeError("envelope is not a map")
    get = obj.get
    schema = get("s")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise EnvelopeError(f"unknown envelope schema {schema!r}")
    kind, env, key, version = get("kind"), get("env"), get("key"), get("v")
    published_ms, actor, item, deleted = get("ts"), get("actor"), get("item"), get("del")
    # One combined check on the hot path; `type(x) is` because bool is a subclass of int.
    if (
        type(kind) is not str
        or type(env) is not str
        or type(key) is not str
        or type(version) is not int
        or type(published_ms) is not int
        or type(actor) is not str
        or type(item) is not bytes
        or type(deleted) is not bool
    ):
        bad = next(name for name, typ in _FIELDS if type(get(name)) is not typ)
        raise EnvelopeError(f"envelope field {bad!r} is missing or has the wrong type")
    if kind not in KINDS:
        raise EnvelopeError(f"unknown envelope kind {kind!r}")
    if version < 0:
        raise EnvelopeError("envelope version is negative")
    return Envelope(cast(Kind, kind), env, key, version, published_ms, actor, item, deleted)
