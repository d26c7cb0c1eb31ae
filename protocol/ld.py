"""LaunchDarkly FDv1 payloads, as ready-to-write bytes.

Items arrive as pre-encoded JSON bytes (from the Kafka envelope) and are spliced into the
payload unchanged, never re-parsed, so a relay encodes one change once for all connections.
Keys are JSON-escaped (valid keys need no escaping; escaping keeps the output valid JSON
whatever the caller passes).

``/all`` stream (server-side SDKs)::

    event: put     data: {"path":"/","data":{"flags":{KEY:ITEM,..},"segments":{..}}}
    event: patch   data: {"path":"/flags/KEY","data":ITEM}      (or /segments/KEY)
    event: delete  data: {"path":"/flags/KEY","version":N}      (or /segments/KEY)

Legacy ``/flags`` stream (old SDKs): ``put`` data is the flags map itself, ``patch`` and
``delete`` paths are ``"/KEY"``.

Polling (``/sdk/latest-all``): ``{"flags":{..},"segments":{..}}``.

Tombstones (``deleted: true`` items) are included in ``put`` and polling bodies like any
item, so an SDK that holds an older version learns about the deletion and a replayed older
update cannot resurrect the item.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from protocol.keys import ItemKind
from protocol.sse import encode_comment, encode_event

__all__ = [
    "delete_event",
    "flags_delete_event",
    "flags_patch_event",
    "flags_put_event",
    "heartbeat",
    "patch_event",
    "polling_body",
    "put_event",
]

_COLLECTION: Final[dict[str, bytes]] = {"flag": b"/flags/", "segment": b"/segments/"}
_HEARTBEAT: Final = encode_comment()


def _key(key: str) -> bytes:
    return json.dumps(key).encode()


def _map(items: Mapping[str, bytes]) -> bytes:
    return b"{" + b",".join(_key(k) + b":" + v for k, v in items.items()) + b"}"


def _path(prefix: bytes, key: str) -> bytes:
    # json.dumps('/flags/' + key) without building the str twice.
    return b'"' + prefix + _key(key)[1:]


def _collection(kind: ItemKind) -> bytes:
    try:
        return _COLLECTION[kind]
    except KeyError:
        raise ValueError(f"unknown item kind {kind!r}") from None


def polling_body(flags: Mapping[str, bytes], segments: Mapping[str, bytes]) -> bytes:
    """The ``/sdk/latest-all`` body: ``{"flags":{..},"segments":{..}}``."""
    return b'{"flags":' + _map(flags) + b',"segments":' + _map(segments) + b"}"


def put_event(flags: Mapping[str, bytes], segments: Mapping[str, bytes], id: str) -> bytes:
    """``/all`` full state: ``event: put``, data ``{"path":"/","data":{flags, segments}}``."""
    body = b'{"path":"/","data":' + polling_body(flags, segments) + b"}"
    return encode_event(body, event="put", id=id)


def patch_event(kind: ItemKind, key: str, item: bytes, id: str) -> bytes:
    """``/all`` upsert of one item: data ``{"path":"/flags/KEY","data":ITEM}``."""
    body = b'{"path":' + _path(_collection(kind), key) + b',"data":' + item + b"}"
    return encode_event(body, event="patch", id=id)


def delete_event(kind: ItemKind, key: str, version: int, id: str) -> bytes:
    """``/all`` deletion: data ``{"path":"/flags/KEY","version":N}``."""
    body = b'{"path":' + _path(_collection(kind), key) + b',"version":%d}' % version
    return encode_event(body, event="delete", id=id)


def flags_put_event(flags: Mapping[str, bytes], id: str) -> bytes:
    """Legacy ``/flags`` full state: ``event: put``, data is the flags map ``{KEY:ITEM,..}``."""
    return encode_event(_map(flags), event="put", id=id)


def flags_patch_event(key: str, item: bytes, id: str) -> bytes:
    """Legacy ``/flags`` upsert: data ``{"path":"/KEY","data":ITEM}``."""
    body = b'{"path":' + _path(b"/", key) + b',"data":' + item + b"}"
    return encode_event(body, event="patch", id=id)


def flags_delete_event(key: str, version: int, id: str) -> bytes:
    """Legacy ``/flags`` deletion: data ``{"path":"/KEY","version":N}``."""
    body = b'{"path":' + _path(b"/", key) + b',"version":%d}' % version
    return encode_event(body, event="delete", id=id)


def heartbeat() -> bytes:
    """The keep-alive comment sent on idle streams (``b":\\n"``)."""
    return _HEARTBEAT
