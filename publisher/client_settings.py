"""An environment's client-side settings: validation of the fields an operator may set.

Fields (DESIGN.md §11; what they do: ``protocol.environment``, docs/client-side.md), accepted
when an environment is created and by ``PATCH /api/v1/environments/{env}``:

- ``secureMode`` (bool): the JS endpoints then require ``?h=``. Turning it on when the
  environment has no secure-mode secret yet generates one.
- ``secureModeSecret`` (string of 16..256 printable ASCII characters): set the secret, e.g.
  to a server-side SDK key so that LaunchDarkly's server SDKs' ``secure_mode_hash`` helpers
  compute valid hashes (that key is then stored and shipped like this secret).
- ``rotateSecureModeSecret`` (true): generate a new secret.
- ``allowedOrigins`` (``["*"]`` or origins), ``clientStreamMode`` (``evaluated`` | ``ping``).

A generated secret is returned once, as ``secureModeSecret`` in the answer of the write that
made it, like a new SDK key; the API never shows it again. Rules: validate everything before
anything changes; a body with only unchanged values changes nothing (no new version).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from protocol.environment import (
    EnvironmentRecord,
    new_secure_mode_secret,
    validate_allowed_origins,
    validate_client_stream_mode,
    validate_secure_mode_secret,
)
from protocol.errors import ValidationError
from publisher.problems import ApiError

__all__ = ["CLIENT_SETTINGS_FIELDS", "apply_client_settings", "client_settings_view"]

CLIENT_SETTINGS_FIELDS: Final = frozenset(
    {
        "secureMode",
        "secureModeSecret",
        "rotateSecureModeSecret",
        "allowedOrigins",
        "clientStreamMode",
    }
)


def client_settings_view(record: EnvironmentRecord) -> dict[str, Any]:
    """What the API shows of the settings (never the secret itself)."""
    return {
        "secureMode": record.secure_mode,
        "secureModeSecretSet": record.secure_mode_secret is not None,
        "allowedOrigins": list(record.allowed_origins),
        "clientStreamMode": record.client_stream_mode,
    }


def apply_client_settings(
    record: EnvironmentRecord, body: dict[str, Any]
) -> tuple[EnvironmentRecord, str | None]:
    """``record`` with the settings of ``body`` (only ``CLIENT_SETTINGS_FIELDS`` are read),
    and the secret to show once if one was generated. Raises ApiError 422 naming the field;
    the version is left to the caller."""
    changes: dict[str, Any] = {}
    generated: str | None = None
    try:
        if "secureMode" in body:
            if not isinstance(body["secureMode"], bool):
                raise ValidationError("secureMode", "must be true or false")
            changes["secure_mode"] = body["secureMode"]
        if "secureModeSecret" in body:
            if body.get("rotateSecureModeSecret"):
                raise ValidationError(
                    "secureModeSecret", "give either a secret or rotateSecureModeSecret, not both"
                )
            changes["secure_mode_secret"] = validate_secure_mode_secret(body["secureModeSecret"])
        if "rotateSecureModeSecret" in body:
            rotate = body["rotateSecureModeSecret"]
            if not isinstance(rotate, bool):
                raise ValidationError("rotateSecureModeSecret", "must be true or false")
            if rotate:
                generated = changes["secure_mode_secret"] = new_secure_mode_secret()
        if "allowedOrigins" in body:
            changes["allowed_origins"] = validate_allowed_origins(body["allowedOrigins"])
        if "clientStreamMode" in body:
            changes["client_stream_mode"] = validate_client_stream_mode(body["clientStreamMode"])
    except ValidationError as exc:
        raise ApiError(422, f"invalid environment: {exc}", type_="invalid-environment") from exc
    updated = dataclasses.replace(record, **changes)
    if updated.secure_mode and updated.secure_mode_secret is None:
        generated = new_secure_mode_secret()
        updated = dataclasses.replace(updated, secure_mode_secret=generated)
    return updated, generated
