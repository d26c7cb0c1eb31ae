"""Which environment, and which of its flags, an OFREP request's credential opens.

Rules:

1. The credential is the ``Authorization`` header (``Bearer <credential>``; a bare value is
   tolerated, as for SDK streams) or, without one, ``X-API-Key``.
2. It is tried as an SDK key (sees every flag: audience ``server``), then as a mobile key
   (flags with ``clientSideAvailability.usingMobileKey``: ``mobile``), then as a client-side
   id (flags with ``usingEnvironmentId``: ``client``; client-side ids are public, which is
   why they see only what the environment marks for browsers). Unknown, expired, or of a
   deleted environment → None (the route answers 401).
3. SDK keys resolve through the state's ``CredentialIndex`` (a hash lookup). Mobile keys and
   client-side ids are found by one pass of plain comparisons over the environment records
   (about a microsecond per environment; an unknown credential costs that pass), then
   remembered; a
   remembered credential is checked against the environment's current record on every use,
   so a rotated or removed one stops working at once. Only valid credentials are
   remembered, so memory is bounded by the credentials that exist.
4. ``notice_token(env)`` is the environment's notice-stream token (``protocol.ofrep`` rule
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
        self._others: dict[str, tuple[str, CredentialKind]] = {}  # hash or id -> env, kind
        self._tokens: dict[str, tuple[EnvironmentRecord, str]] = {}

    def resolve(self, credential: str) -> Grant | None:
        state = self._state
        digest = hash_secret(credential)
        env = state.credentials.resolve(credential)
        if env is not None:
            return self._grant(env, "sdk", digest)
        now = int(time.time() * 1000)
        remembered = self._others.get(digest)
        if remembered is not None:
            if self._valid(*remembered, credential, digest, now):
                return self._grant(*remembered, digest)
            del self._others[digest]
        # One pass of plain comparisons (the hash of the presented key, the public id);
        # the match is then checked as above (expiry).
        credentials = state.credentials
        for env in state.environments:
            record = credentials.record(env)
            if record is None:
                continue
            kind: CredentialKind
            if record.client_side_id == credential:
                kind = "client"
            elif any(c.sha256 == digest for c in record.mobile_keys):
                kind = "mobile"
            else:
                continue
            if self._valid(env, kind, credential, digest, now):
                self._others[digest] = (env, kind)
                return self._grant(env, kind, digest)
        return None

    def _valid(
        self, env: str, kind: CredentialKind, credential: str, digest: str, now: int
    ) -> bool:
        record = self._state.credentials.record(env)
        if record is None:
            return False
        if kind == "mobile":
            return record.accepts_mobile_key(digest, now)
        return record.client_side_id == credential

    def _grant(self, env: str, kind: CredentialKind, digest: str) -> Grant | None:
        environment = self._state.environments.get(env)
        if environment is None or environment.deleted:
            return None
        return Grant(env, kind, AUDIENCE[kind], digest)

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
