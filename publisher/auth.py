"""API tokens: who is calling and what they may do.

Rules:
- A request carries ``Authorization: Bearer <token>``. Missing, malformed, unknown or revoked
  token → 401. A valid token without the needed scope or environment → 403.
- Tokens are stored only as SHA-256 hex digests; the presented token is hashed and the hashes
  are compared with ``hmac.compare_digest``. The bootstrap admin token (from configuration)
  is compared the same way.
- Scopes: ``read`` (GET flags, segments, environments, audit), ``write`` (implies read; PUT,
  PATCH, DELETE of flags and segments), ``admin`` (everything: environments, key rotation,
  tokens). A token is limited to a list of environments or valid for all (``"*"``); an
  ``admin`` token is always valid for all.
- A token's *name* (never its secret) is what the audit log records as the actor.
- A token found in the store may be remembered by the app for a bounded time
  (``publisher.tokencache``): a revocation takes effect at once on the instance that revoked
  the token and within ``FLAGSTREAM_PUBLISHER_TOKEN_CACHE_TTL`` on the others.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Final, Literal

from protocol.environment import hash_secret

__all__ = [
    "SCOPES",
    "Principal",
    "Scope",
    "authorizes",
    "new_token_secret",
    "parse_bearer",
    "principal_for",
    "token_sha256",
]

Scope = Literal["read", "write", "admin", "bypass-approvals"]
# bypass-approvals (publisher.governance): direct writes where approvals are required; never
# implied by admin, only held when granted (the bootstrap admin token holds every scope).
SCOPES: Final = ("read", "write", "admin", "bypass-approvals")
_TOKEN_PREFIX: Final = "fst_"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    token_id: str | None  # None for the bootstrap admin token
    scopes: frozenset[str]
    environments: frozenset[str] | None  # None = all

    def may(self, scope: Scope, env: str | None = None) -> bool:
        return authorizes(self, scope, env)


def authorizes(p: Principal, scope: Scope, env: str | None) -> bool:
    """True if ``p`` holds ``scope`` (for ``env`` when given)."""
    if "admin" in p.scopes:
        return True
    if scope == "admin":
        return False
    held = scope in p.scopes or (scope == "read" and "write" in p.scopes)
    if not held:
        return False
    return env is None or p.environments is None or env in p.environments


def new_token_secret() -> str:
    """A fresh API token: ``fst_`` + 43 URL-safe characters (256 random bits)."""
    return _TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(secret: str) -> str:
    return hash_secret(secret)


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, None if absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        return None
    return value


def principal_for(
    presented_sha256: str, admin_sha256: str | None, admin_name: str = "admin"
) -> Principal | None:
    """The bootstrap admin principal if the hashes match (constant time), else None."""
    if admin_sha256 is not None and hmac.compare_digest(
        presented_sha256.encode(), admin_sha256.encode()
    ):
        return Principal(admin_name, None, frozenset(SCOPES), None)
    return None
