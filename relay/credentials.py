"""Credential -> environment lookup, from the ``env`` records: SDK keys, mobile keys and
client-side ids.

Rules:
- The relay never sees a secret at rest: ``env`` records carry only SHA-256 hashes. A request's
  key is hashed once and looked up; the secret itself is never stored, logged or labelled.
- A key is accepted only while the environment record that carries it accepts it
  (``EnvironmentRecord.accepts_sdk_key``: unknown hash or past its expiry -> refused), so a
  rotated key stops working at its expiry without any new record.
- Updating an environment replaces all of its hashes at once (a key removed from the record
  stops resolving immediately).
- ``listeners`` are called with (new record, previous record or None) after every update,
  synchronously (``relay.clientside`` closes client streams whose settings changed).
- Mobile keys resolve like SDK keys (``resolve_mobile``, ``accepts_mobile_key``). A client-side
  id is public and never expires: ``resolve_client_side_id`` looks it up as is. An id or key
  that two environments claim resolves to the one updated last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from protocol.environment import EnvironmentRecord, hash_secret
from protocol.errors import ValidationError

log = logging.getLogger("flagstream.relay.credentials")

# Schemes some clients put before the key; LaunchDarkly SDKs send the bare key.
_SCHEMES = frozenset({"bearer", "api_key"})


def sdk_key_from_header(value: str | None) -> str | None:
    """The SDK key of an ``Authorization`` header (bare key, ``Bearer`` tolerated)."""
    parts = (value or "").split(None, 1)
    if not parts:
        return None
    if parts[0].lower() in _SCHEMES:
        return parts[1].strip() if len(parts) == 2 else None
    return (value or "").strip()


class CredentialIndex:
    """Maps SDK-key hashes to environments. Not thread-safe; one per event loop."""

    def __init__(self) -> None:
        self._records: dict[str, EnvironmentRecord] = {}
        self._by_hash: dict[str, str] = {}
        self._by_mobile_hash: dict[str, str] = {}
        self._by_client_side_id: dict[str, str] = {}
        self.listeners: list[Callable[[EnvironmentRecord, EnvironmentRecord | None], None]] = []

    def __len__(self) -> int:
        return len(self._records)

    def update_from_json(self, env: str, raw: bytes) -> EnvironmentRecord:
        """Parse an ``env`` record's JSON (raises ValidationError) and index its keys."""
        record = EnvironmentRecord.from_json(raw)
        if record.key != env:
            raise ValidationError("key", "environment record key differs from the envelope")
        self.update(record)
        return record

    def update(self, record: EnvironmentRecord) -> None:
        previous = self._records.get(record.key)
        self.remove(record.key)
        self._records[record.key] = record
        for cred in record.sdk_keys:
            self._by_hash[cred.sha256] = record.key
        for cred in record.mobile_keys:
            self._by_mobile_hash[cred.sha256] = record.key
        self._by_client_side_id[record.client_side_id] = record.key
        for listener in self.listeners:
            try:
                listener(record, previous)
            except Exception:  # a listener bug must not stop the consumer
                log.exception("credential listener failed")

    def remove(self, env: str) -> None:
        old = self._records.pop(env, None)
        if old is not None:
            for cred in old.sdk_keys:
                if self._by_hash.get(cred.sha256) == env:
                    del self._by_hash[cred.sha256]
            for cred in old.mobile_keys:
                if self._by_mobile_hash.get(cred.sha256) == env:
                    del self._by_mobile_hash[cred.sha256]
            if self._by_client_side_id.get(old.client_side_id) == env:
                del self._by_client_side_id[old.client_side_id]

    def record(self, env: str) -> EnvironmentRecord | None:
        return self._records.get(env)

    def resolve(self, sdk_key: str | None, now_ms: int | None = None) -> str | None:
        """The environment an SDK key opens, or None (unknown, expired, or no key)."""
        if not sdk_key:
            return None
        digest = hash_secret(sdk_key)
        env = self._by_hash.get(digest)
        if env is None:
            return None
        record = self._records[env]
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return env if record.accepts_sdk_key(digest, now) else None

    def resolve_mobile(self, mobile_key: str | None, now_ms: int | None = None) -> str | None:
        """The environment a mobile key opens, or None (unknown, expired, or no key)."""
        if not mobile_key:
            return None
        digest = hash_secret(mobile_key)
        env = self._by_mobile_hash.get(digest)
        if env is None:
            return None
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return env if self._records[env].accepts_mobile_key(digest, now) else None

    def resolve_client_side_id(self, client_side_id: str) -> EnvironmentRecord | None:
        """The record of the environment with this client-side id, or None."""
        env = self._by_client_side_id.get(client_side_id)
        return None if env is None else self._records[env]
