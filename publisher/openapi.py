"""The OpenAPI 3.1 description served at ``/openapi.json`` (a test keeps it true to the router)."""

from __future__ import annotations

import copy
from typing import Any, Final

__all__ = ["openapi_spec"]

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_ENV = {"name": "env", "in": "path", "required": True, "schema": {"type": "string"}}
_KIND = {
    "name": "kinds",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["flags", "segments"]},
}
_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'Expected current version ("3", 3, or *); stale → 412.',
    "schema": {"type": "string"},
}
_COMMENT = {
    "name": "X-Change-Comment",
    "in": "header",
    "required": False,
    "description": "Comment recorded in the audit log (or a `comment` body field).",
    "schema": {"type": "string"},
}
_JSON_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object"}}},
}
_WRITE_RESPONSES = {
    "200": {"description": "Stored and acknowledged by Kafka; body is the stored item."},
    "201": {"description": "Created and acknowledged by Kafka; body is the stored item."},
    "202": {
        "description": "Stored in the Redis outbox, Kafka has not acknowledged yet; delivered "
        'later. Body: {"delivery": "pending", "item": <stored item>}.'
    },
    "400": _PROBLEM,
    "401": _PROBLEM,
    "403": _PROBLEM,
    "404": _PROBLEM,
    "412": _PROBLEM,
    "413": _PROBLEM,
    "422": _PROBLEM,
    "503": _PROBLEM,
}


def _op(
    summary: str,
    *,
    params: list[Any] | None = None,
    body: bool | dict[str, Any] = False,
    responses: dict[str, Any] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": responses
        or {
            "200": {"description": "OK"},
            "400": _PROBLEM,
            "401": _PROBLEM,
            "403": _PROBLEM,
            "404": _PROBLEM,
            "503": _PROBLEM,
        },
    }
    if body:
        op["requestBody"] = _JSON_BODY if body is True else body
    if public:
        op["security"] = []
    return op


_NULLABLE_BOOL = {"type": ["boolean", "null"]}
_ENV_PATCH_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "requiredApprovals": {"type": ["integer", "null"], "minimum": 0, "maximum": 5},
                    "allowSelfApproval": _NULLABLE_BOOL,
                    "requireComment": _NULLABLE_BOOL,
                    "critical": _NULLABLE_BOOL,
                    "secureMode": {"type": "boolean"},
                    "secureModeSecret": {"type": "string", "minLength": 16, "maxLength": 256},
                    "rotateSecureModeSecret": {"type": "boolean"},
                    "allowedOrigins": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "maxItems": 100,
                    },
                    "clientStreamMode": {"type": "string", "enum": ["evaluated", "ping"]},
                    "comment": {"type": ["string", "null"], "maxLength": 2000},
                },
                "additionalProperties": False,
            }
        }
    },
}

_SPEC: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "flagstream publisher",
        "version": "1",
        "description": "Admin API: environments, flags, segments, audit, tokens. "
        "Authorization: Bearer <token>. Errors are application/problem+json.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "Problem": {
                "description": "RFC 9457 problem document",
                "content": {
                    "application/problem+json": {
                        "schema": {
                            "type": "object",
                            "required": ["type", "title", "status", "detail"],
                            "properties": {
                                "type": {"type": "string"},
                                "title": {"type": "string"},
                                "status": {"type": "integer"},
                                "detail": {"type": "string"},
                            },
                        }
                    }
                },
            }
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/livez": {"get": _op("Process is alive", public=True)},
        "/readyz": {"get": _op("Ready: Redis reachable (503 otherwise)", public=True)},
        "/metrics": {"get": _op("Prometheus metrics", public=True)},
        "/openapi.json": {"get": _op("This document", public=True)},
        "/api/v1/environments": {
            "get": _op("List environments the token can read"),
            "post": _op(
                "Create an environment {key, name, and optionally the client-side settings "
                "of PATCH}; the answer holds its SDK key and mobile key, shown once (admin "
                "scope)",
                params=[_COMMENT],
                body=True,
                responses={**_WRITE_RESPONSES, "409": _PROBLEM},
            ),
        },
        "/api/v1/environments/{env}": {
            "get": _op("Show an environment", params=[_ENV]),
            "patch": _op(
                "Change the environment's settings with one JSON merge patch (admin scope): "
                "its governance policy (requiredApprovals 0-5, allowSelfApproval, "
                "requireComment, critical; null restores a default) and its client-side "
                "settings (secureMode, secureModeSecret, rotateSecureModeSecret, "
                "allowedOrigins, clientStreamMode; a generated secure-mode secret is shown "
                "once). Both parts are validated before either is written; any other field "
                "is a 422. The answer is the environment with both parts.",
                params=[_ENV, _COMMENT],
                body=_ENV_PATCH_BODY,
                responses={
                    "200": {
                        "description": "Changed (and, if the environment record changed, "
                        "acknowledged by Kafka); body: the environment with its policy fields "
                        "and client-side settings"
                    },
                    "202": {
                        "description": "The environment record changed, Kafka has not "
                        'acknowledged it yet: {"delivery": "pending", "item": <environment>}'
                    },
                    **{
                        code: _PROBLEM
                        for code in ("400", "401", "403", "404", "409", "413", "422", "501", "503")
                    },
                },
            ),
        },
        "/api/v1/environments/{env}/sdk-keys/rotate": {
            "post": _op(
                "New SDK key (shown once); old keys stay valid for expireOldInSeconds "
                "(admin scope)",
                params=[_ENV, _COMMENT],
                # absent (or null) = expire the old keys now
                body={
                    "required": False,
                    "content": {"application/json": {"schema": {"type": ["object", "null"]}}},
                },
                responses=_WRITE_RESPONSES,
            )
        },
        "/api/v1/environments/{env}/{kinds}": {
            "get": _op(
                "List flags or segments (?includeDeleted=true for tombstones)",
                params=[_ENV, _KIND],
            )
        },
        "/api/v1/environments/{env}/{kinds}/{key}": {
            "get": _op("Get a flag or segment (ETag: its version)", params=[_ENV, _KIND, _KEY]),
            "put": _op(
                "Create or replace a flag or segment (full LaunchDarkly JSON model)",
                params=[_ENV, _KIND, _KEY, _IF_MATCH, _COMMENT],
                body=True,
                responses=_WRITE_RESPONSES,
            ),
            "patch": _op(
                'JSON merge patch (RFC 7386) of a flag or segment, e.g. {"on": false}',
                params=[_ENV, _KIND, _KEY, _IF_MATCH, _COMMENT],
                body=True,
                responses=_WRITE_RESPONSES,
            ),
            "delete": _op(
                "Delete: stores a versioned tombstone",
                params=[_ENV, _KIND, _KEY, _IF_MATCH, _COMMENT],
                responses=_WRITE_RESPONSES,
            ),
        },
        "/api/v1/environments/{env}/bulk": {
            "post": _op(
                "Up to 1,000 operations on flags and segments, applied atomically (all or "
                'nothing): body {"operations": [{"op": "put"|"patch"|"delete", "kind": '
                '"flag"|"segment", "key", "value"?, "ifMatch"?}], "comment"?, '
                '"skipUnchanged"?}. Every operation is validated first; a refusal lists every '
                "failing operation in `errors` (index, status, detail, currentVersion) and "
                "writes nothing. One audit entry per item with a shared requestId.",
                params=[
                    _ENV,
                    _COMMENT,
                    {
                        "name": "dryRun",
                        "in": "query",
                        "required": False,
                        "description": "true: validate and report, write nothing",
                        "schema": {"type": "boolean"},
                    },
                ],
                body=True,
                responses={
                    "200": {
                        "description": "Applied and acknowledged by Kafka (or a dry run): "
                        "{requestId, dryRun, written, unchanged, results: [{index, op, kind, "
                        "key, version, created?, unchanged?}]}"
                    },
                    "202": {
                        "description": "Applied in Redis, Kafka has not acknowledged yet "
                        '(the same body with "delivery": "pending")'
                    },
                    **{
                        code: _PROBLEM
                        for code in ("400", "401", "403", "404", "409", "412", "413", "422", "503")
                    },
                },
            )
        },
        "/api/v1/environments/{env}/audit": {
            "get": _op(
                "Audit log, newest first: who, when, what (before/after), comment",
                params=[
                    _ENV,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
            )
        },
        "/api/v1/tokens": {
            "get": _op("List tokens, without secrets (admin scope)"),
            "post": _op(
                'Create a token {name, scopes: [read|write|admin], environments: "*"|[..]}; '
                "the secret is shown once (admin scope)",
                body=True,
                responses={
                    "201": {"description": "Created"},
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "413": _PROBLEM,
                    "422": _PROBLEM,
                    "503": _PROBLEM,
                },
            ),
        },
        "/api/v1/tokens/{id}": {
            "delete": _op(
                "Revoke a token (admin scope)",
                params=[
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                responses={
                    "204": {"description": "Revoked"},
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "404": _PROBLEM,
                },
            )
        },
    },
}


def openapi_spec() -> dict[str, Any]:
    """A copy of the document (callers may modify it)."""
    from publisher.governance.openapi import add_governance  # imports this module

    spec = copy.deepcopy(_SPEC)
    add_governance(spec)  # governance (publisher.governance): its paths, audit filters
    return spec
