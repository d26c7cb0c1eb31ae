"""Which environment, and which of its flags, an OFREP request's credential opens.

Rules:

1. The credential is the ``Authorization`` header (``Bearer <credential>``; a bare value is
   tolerated, as for SDK streams) or, without one, ``X-API-Key``.
2. It is tried as an SDK key (sees every flag: audience ``server``), then as a mobile key
   (flags with ``clientSideAvailability.usingMobileKey``: ``mobile``), then as a client-side
   id (flags with ``usingEnvironmentId``: ``client``; client-side ids are public, which is
   why they see only what the environment marks for browsers). Unknown, expired, or of a
   deleted environment → None (the route answers 401).
3. Lookup: through the state's ``CredentialIndex``, the same indexes the SDK, mobile and
   client-side routes use (a hash lookup per kind; an unknown credential costs three).
4. A credential found is remembered under its hash with the environment record it was found
   in and its expiry; it is answered from there while that record is still the
   environment's current one (any new record, e.g. a rotation, makes it be looked up again),
   it has not expired and the environment is not deleted. Only valid credentials are
   remembered, so memory is bounded by the credentials that exist.
   Remembered under the hash, not the credential: an SDK key never stays in the relay's
   memory in clear (keying by the credential would save one SHA-256, ~3% of a single-flag
   request, measured; not worth that).
5. ``notice_token(env)`` is the environment's notice-stream token (``protocol.ofrep`` rule
   8), computed once per environment record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from protocol.environment import EnvironmentRecord, hash_secret
from protocol.evaluation import SdkKind
from protocol.ofrep import notice_token
from relay.credentials import sdk_key_from_header
from relay.state import State

__all__ = ["CredentialKind", "CredentialResolver", "Grant", "credential_from_headers"]

CredentialKind = Literal["sdk", "mobile", "client"]
AUDIENCE: dict[CredentialKind, SdkKind] = {"sdk": "server", "mobile": "mobile", "client": "client"}


@dataclass(frozen=True, slots=True)
class Grant:
    """What a credential opens: an environment, seen as ``audience``."""

    env: str
    kind: CredentialKind
    audience: SdkKind
    bucket: str  # rate-limit key: the credential's hash, or the (public) client-side id


def credential_from_headers(headers: Mapping[str, str]) -> str | None:
    """The credential of a request (rule 1), or None."""
    credential = sdk_key_from_header(headers.get("Authorization"))
    if not credential:
        credential = (headers.get("X-API-Key") or "").strip()
    return credential or None


class CredentialResolver:
    """Resolves OFREP credentials against one relay's state (rules above)."""

    def __init__(self, state: State) -> None:
        self._state = state
        # hash -> (grant, the record it was found in, the credential's expiry)
        self._grants: dict[str, tuple[Grant, EnvironmentRecord, int | None]] = {}
        self._tokens: dict[str, tuple[EnvironmentRecord, str]] = {}

    def resolve(self, credential: str) -> Grant | None:
        state = self._state
        digest = hash_secret(credential)
        now = int(time.time() * 1000)
        cached = self._grants.get(digest)
        if cached is not None:
            grant, record, expires_ms = cached
            environment = state.environments.get(grant.env)
            if (
                state.credentials.record(grant.env) is record
                and (expires_ms is None or now < expires_ms)
                and environment is not None
                and not environment.deleted
            ):
                return grant
            del self._grants[digest]
        found = self._find(credential, digest, now)
        if found is None:
            return None
        grant, record = found
        self._grants[digest] = (grant, record, _expiry(record, grant.kind, digest))
        return grant

    def _find(
        self, credential: str, digest: str, now: int
    ) -> tuple[Grant, EnvironmentRecord] | None:
        """Rule 2, without the cache: the grant and the record that gives it."""
        credentials = self._state.credentials
        env = credentials.resolve(credential, now)
        if env is not None:
            return self._grant(env, "sdk", digest)
        env = credentials.resolve_mobile(credential, now)
        if env is not None:
            return self._grant(env, "mobile", digest)
        record = credentials.resolve_client_side_id(credential)
        if record is not None:
            return self._grant(record.key, "client", digest)
        return None

    def _grant(
        self, env: str, kind: CredentialKind, digest: str
    ) -> tuple[Grant, EnvironmentRecord] | None:
        environment = self._state.environments.get(env)
        record = self._state.credentials.record(env)
        if environment is None or environment.deleted or record is None:
            return None
        return Grant(env, kind, AUDIENCE[kind], digest), record

    def notice_token(self, env: str) -> str | None:
        """``env``'s notice-stream token (None: no such environment record)."""
        record = self._state.credentials.record(env)
        if record is None:
            return None
        cached = self._tokens.get(env)
        if cached is not None and cached[0] is record:
            return cached[1]
        secrets = [c.sha256 for c in record.sdk_keys + record.mobile_keys]
        token = notice_token(env, [*secrets, record.client_side_id])
        self._tokens[env] = (record, token)
        return token


def _expiry(record: EnvironmentRecord, kind: CredentialKind, digest: str) -> int | None:
    """When the credential ``digest`` of ``kind`` in ``record`` expires (None: never)."""
    if kind == "client":
        return None
    creds = record.sdk_keys if kind == "sdk" else record.mobile_keys
    expiries = [c.expires_ms for c in creds if c.sha256 == digest]
    if not expiries or None in expiries:
        return None
    return max(e for e in expiries if e is not None)
