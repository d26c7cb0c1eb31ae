"""Environments and their credentials.

Secrets (SDK keys, mobile keys) are never stored or shipped: an ``EnvironmentRecord`` holds
only their SHA-256 hex digests, each with an optional expiry (a rotated key stays valid until
then). The client-side id is public (browsers see it), so it is stored as is.

JSON form (the ``item`` of a Kafka envelope of kind ``env``)::

    {"key": "prod", "name": "Production", "version": 3,
     "sdkKeys": [{"sha256": "<64 hex>", "expiresMs": null}],
     "mobileKeys": [{"sha256": "<64 hex>", "expiresMs": 1767225600000}],
     "clientSideId": "<24 hex>",
     "secureMode": false, "secureModeSecret": null,
     "allowedOrigins": ["*"], "clientStreamMode": "evaluated"}

Client-side settings (DESIGN.md §11; fields absent from older records take their defaults):

- ``secureMode``: the client-side (JS) endpoints then require ``?h=`` = hex
  HMAC-SHA256(``secureModeSecret``, fully-qualified context key). The secret must be shipped
  to relays in clear (an HMAC cannot be checked from a hash of its key); it only lets its
  holder compute hashes for contexts, i.e. read evaluated flags that anyone who can read the
  topic already reads as rules. It is never shown by the API after it was created.
- ``allowedOrigins``: the origins a browser page may call the JS endpoints from
  (``["*"]``: any; otherwise exact ``scheme://host[:port]`` origins).
- ``clientStreamMode``: ``evaluated`` (client streams get evaluated put/patch/delete events)
  or ``ping`` (they get ``ping`` events and re-poll, as LaunchDarkly's Relay Proxy does).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Final, Literal

from protocol.errors import ValidationError
from protocol.keys import validate_key

__all__ = [
    "CLIENT_STREAM_MODES",
    "ClientStreamMode",
    "CredentialHash",
    "EnvironmentRecord",
    "hash_secret",
    "new_client_side_id",
    "new_mobile_key",
    "new_sdk_key",
    "new_secure_mode_secret",
    "validate_allowed_origins",
    "validate_client_stream_mode",
    "validate_secure_mode_secret",
]

_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_CLIENT_SIDE_ID_RE: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")
_NAME_MAX: Final = 256

ClientStreamMode = Literal["evaluated", "ping"]
CLIENT_STREAM_MODES: Final[tuple[ClientStreamMode, ...]] = ("evaluated", "ping")
# An origin as browsers send it: scheme://host[:port], no path (RFC 6454 serialisation).
_ORIGIN_RE: Final = re.compile(r"[a-z][a-z0-9+.-]*://[a-z0-9._~\[\]:-]+")
_MAX_ORIGINS: Final = 100
_SECRET_MIN, _SECRET_MAX = 16, 256


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest of a secret (how SDK and mobile keys are stored and compared)."""
    return hashlib.sha256(_utf8(secret)).hexdigest()


def _utf8(text: str) -> bytes:
    # Header values may carry lone surrogates (surrogateescape); never fail on them.
    return text.encode("utf-8", "surrogatepass")


def new_sdk_key() -> str:
    """A fresh server-side SDK key: ``sdk-`` + a random UUID4."""
    return f"sdk-{uuid.uuid4()}"


def new_mobile_key() -> str:
    """A fresh mobile key: ``mob-`` + a random UUID4."""
    return f"mob-{uuid.uuid4()}"


def new_client_side_id() -> str:
    """A fresh client-side id: 24 lowercase hex characters."""
    return secrets.token_hex(12)


def new_secure_mode_secret() -> str:
    """A fresh secure-mode secret: ``sms-`` + 43 URL-safe random characters (256 bits)."""
    return "sms-" + secrets.token_urlsafe(32)


def validate_allowed_origins(value: object, path: str = "allowedOrigins") -> tuple[str, ...]:
    """``["*"]`` or a list of 1..100 distinct origins ``scheme://host[:port]`` (lowercased
    scheme and host, as browsers send them); raise ValidationError naming the fix."""
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_ORIGINS:
        raise ValidationError(path, f'must be ["*"] or a list of 1..{_MAX_ORIGINS} origins')
    if value == ["*"]:
        return ("*",)
    out: list[str] = []
    for i, origin in enumerate(value):
        if not isinstance(origin, str) or not _ORIGIN_RE.fullmatch(origin) or len(origin) > 300:
            raise ValidationError(
                f"{path}[{i}]",
                'must be "*" alone or an origin like "https://app.example.com" '
                "(lowercase scheme://host[:port], no path)",
            )
        if origin not in out:
            out.append(origin)
    return tuple(out)


def validate_client_stream_mode(value: object, path: str = "clientStreamMode") -> ClientStreamMode:
    if value == "evaluated":
        return "evaluated"
    if value == "ping":
        return "ping"
    raise ValidationError(path, 'must be "evaluated" or "ping"')


def validate_secure_mode_secret(value: object, path: str = "secureModeSecret") -> str:
    if (
        not isinstance(value, str)
        or not _SECRET_MIN <= len(value) <= _SECRET_MAX
        or not value.isprintable()
        or not value.isascii()
    ):
        raise ValidationError(
            path, f"must be a printable ASCII string of {_SECRET_MIN}..{_SECRET_MAX} characters"
        )
    return value


@dataclass(frozen=True, slots=True)
class CredentialHash:
    """One credential, as its SHA-256 hex digest; valid until ``expires_ms`` (None: forever)."""

    sha256: str
    expires_ms: int | None = None

    def valid_at(self, now_ms: int) -> bool:
        return self.expires_ms is None or now_ms < self.expires_ms


def _matches(creds: tuple[CredentialHash, ...], secret_hash: str, now_ms: int) -> bool:
    # Compare bytes: compare_digest refuses non-ASCII str, and the hash comes from a client.
    found = False
    for cred in creds:
        # Constant-time compare, and no early exit, so timing says nothing about which key.
        if hmac.compare_digest(cred.sha256.encode(), _utf8(secret_hash)) and cred.valid_at(now_ms):
            found = True
    return found


@dataclass(frozen=True, slots=True)
class EnvironmentRecord:
    """An environment as replicated to relays: identity, version and credential hashes."""

    key: str
    name: str
    version: int
    sdk_keys: tuple[CredentialHash, ...]
    mobile_keys: tuple[CredentialHash, ...]
    client_side_id: str
    secure_mode: bool = False
    secure_mode_secret: str | None = None
    allowed_origins: tuple[str, ...] = ("*",)
    client_stream_mode: ClientStreamMode = "evaluated"

    def allows_origin(self, origin: str) -> bool:
        """True if a page of ``origin`` may call this environment's JS endpoints."""
        return self.allowed_origins == ("*",) or origin in self.allowed_origins

    def accepts_sdk_key(self, secret_hash: str, now_ms: int) -> bool:
        """True if ``secret_hash`` (``hash_secret(key)``) is an unexpired SDK key."""
        return _matches(self.sdk_keys, secret_hash, now_ms)

    def accepts_mobile_key(self, secret_hash: str, now_ms: int) -> bool:
        """True if ``secret_hash`` is an unexpired mobile key."""
        return _matches(self.mobile_keys, secret_hash, now_ms)

    def to_dict(self) -> dict[str, Any]:
        def creds(cs: tuple[CredentialHash, ...]) -> list[dict[str, Any]]:
            return [{"sha256": c.sha256, "expiresMs": c.expires_ms} for c in cs]

        return {
            "key": self.key,
            "name": self.name,
            "version": self.version,
            "sdkKeys": creds(self.sdk_keys),
            "mobileKeys": creds(self.mobile_keys),
            "clientSideId": self.client_side_id,
            "secureMode": self.secure_mode,
            "secureModeSecret": self.secure_mode_secret,
            "allowedOrigins": list(self.allowed_origins),
            "clientStreamMode": self.client_stream_mode,
        }

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON (the envelope item of kind ``env``)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_dict(cls, obj: object) -> EnvironmentRecord:
        """Build from parsed JSON; raise ValidationError naming the bad field."""
        if not isinstance(obj, dict):
            raise ValidationError("", "must be an object")
        key = validate_key(obj.get("key"), path="key")
        name = obj.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= _NAME_MAX:
            raise ValidationError("name", f"must be a string of 1..{_NAME_MAX} characters")
        version = obj.get("version")
        if type(version) is not int or version < 1:
            raise ValidationError("version", "must be a positive integer")
        client_side_id = obj.get("clientSideId")
        if not isinstance(client_side_id, str) or not _CLIENT_SIDE_ID_RE.fullmatch(client_side_id):
            raise ValidationError("clientSideId", "must be 1..64 characters of [0-9A-Za-z_-]")
        secure_mode = obj.get("secureMode", False)
        if not isinstance(secure_mode, bool):
            raise ValidationError("secureMode", "must be true or false")
        secret = obj.get("secureModeSecret")
        if secret is not None:
            secret = validate_secure_mode_secret(secret)
        if secure_mode and secret is None:
            raise ValidationError("secureModeSecret", "is required when secureMode is true")
        return cls(
            key=key,
            name=name,
            version=version,
            sdk_keys=_credentials(obj.get("sdkKeys"), "sdkKeys"),
            mobile_keys=_credentials(obj.get("mobileKeys"), "mobileKeys"),
            client_side_id=client_side_id,
            secure_mode=secure_mode,
            secure_mode_secret=secret,
            allowed_origins=validate_allowed_origins(obj.get("allowedOrigins", ["*"])),
            client_stream_mode=validate_client_stream_mode(
                obj.get("clientStreamMode", "evaluated")
            ),
        )

    @classmethod
    def from_json(cls, raw: bytes) -> EnvironmentRecord:
        """Parse ``to_json`` output; raise only ValidationError."""
        try:
            obj = json.loads(raw)
        except (ValueError, TypeError, RecursionError) as exc:
            raise ValidationError("", "not valid UTF-8 JSON") from exc
        return cls.from_dict(obj)


def _credentials(value: object, path: str) -> tuple[CredentialHash, ...]:
    if not isinstance(value, list):
        raise ValidationError(path, "must be a list")
    out = []
    for i, entry in enumerate(value):
        p = f"{path}[{i}]"
        if not isinstance(entry, dict):
            raise ValidationError(p, "must be an object")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
            raise ValidationError(f"{p}.sha256", "must be 64 lowercase hex characters")
        expires = entry.get("expiresMs")
        if expires is not None and type(expires) is not int:
            raise ValidationError(f"{p}.expiresMs", "must be an integer or null")
        out.append(CredentialHash(digest, expires))
    return tuple(out)
