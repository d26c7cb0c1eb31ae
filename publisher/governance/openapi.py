"""The governance paths of ``/openapi.json`` (merged in by ``publisher.openapi``)."""

from __future__ import annotations

from typing import Any, Final

from publisher.openapi import _COMMENT, _ENV, _KEY, _PROBLEM, _op

__all__ = ["add_governance", "governance_paths"]

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_SECRET = {
    "name": "secret",
    "in": "path",
    "required": True,
    "description": "The trigger's secret, shown once when the trigger was created.",
    "schema": {"type": "string"},
}


def _q(name: str, description: str, enum: tuple[str, ...] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum is not None:
        schema["enum"] = list(enum)
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _responses(*codes: str, ok: str = "OK", ok_code: str = "200") -> dict[str, Any]:
    out: dict[str, Any] = {ok_code: {"description": ok}}
    for code in ("400", "401", "403", "404", "409", "413", "422", "501", "503", *codes):
        out[code] = _PROBLEM
    return out


_WRITE_ANSWER = (
    "The write is committed: 200 once Kafka acknowledged its record, 202 with "
    '"delivery": "pending" otherwise; the body holds the stored item under "item".'
)

# Request bodies: as strict as the handlers where a schema can say it (unknown fields are
# refused, types, ranges), looser where the rule needs the stored state (validation of the
# change on the item, executeAt within a year, variation indices).
_TEXT = {"type": "string", "maxLength": 2000}
_COMMENT_FIELD = {
    "type": ["string", "null"],
    "maxLength": 2000,
    "description": "recorded in the audit log (or the X-Change-Comment header, which wins)",
}
_WHEN = {
    "type": ["integer", "string", "null"],
    "description": "epoch milliseconds or an RFC 3339 time with a zone, within a year ahead",
}
_CHANGE = {
    "description": 'exactly one of {"mergePatch": {...}}, {"item": {...}} or {"delete": true}',
    "oneOf": [
        {
            "type": "object",
            "required": ["mergePatch"],
            "properties": {"mergePatch": {"type": "object"}},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["item"],
            "properties": {"item": {"type": "object"}},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["delete"],
            "properties": {"delete": {"const": True}},
            "additionalProperties": False,
        },
    ],
}
_BASE_VERSION = {
    "type": ["integer", "null"],
    "minimum": 0,
    "maximum": 2**53 - 1,
    "description": "the item's version the change is based on (0: it must not exist yet); "
    "null or absent: applies on whatever version is current",
}


def _json(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _object(properties: dict[str, Any], *required: str, **more: Any) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return {**schema, **more}


_CR_BODY = _json(
    _object(
        {
            "resource": {
                "type": "string",
                "pattern": "^(flags|segments)/",
                "description": "flags/KEY or segments/KEY",
            },
            "baseVersion": _BASE_VERSION,
            "change": _CHANGE,
            "description": _TEXT,
            "comment": _COMMENT_FIELD,
            "executeAt": _WHEN,
        },
        "resource",
        "change",
    )
)
_CR_EDIT_BODY = _json(
    _object(
        {
            "baseVersion": _BASE_VERSION,
            "change": _CHANGE,
            "description": _TEXT,
            "comment": _COMMENT_FIELD,
            "executeAt": _WHEN,
        }
    )
)
_REVIEW_BODY = _json(
    _object(
        {
            "decision": {"type": "string", "enum": ["approve", "decline"]},
            "comment": {"type": ["string", "null"], "maxLength": 2000},
        },
        "decision",
    )
)
_TRIGGER_BODY = _json(
    _object(
        {
            "action": {"type": "string", "enum": ["on", "off"]},
            "description": {"type": "string", "maxLength": 500},
            "comment": _COMMENT_FIELD,
        },
        "action",
    )
)
_TRIGGER_UPDATE_BODY = _json(
    _object(
        {
            "enabled": {"type": "boolean"},
            "description": {"type": "string", "maxLength": 500},
            "comment": _COMMENT_FIELD,
        },
        minProperties=1,
    )
)
_PLAN_BODY = _json(
    _object(
        {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": 20,
                "description": "percentages strictly increasing, at most 3 decimals",
                "items": _object(
                    {
                        "percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                        "holdSeconds": {"type": "integer", "minimum": 0, "maximum": 2_592_000},
                    },
                    "percent",
                    "holdSeconds",
                ),
            },
            "toVariation": {"type": "integer", "minimum": 0},
            "fromVariation": {
                "type": "integer",
                "minimum": 0,
                "description": "default: the target's variation",
            },
            "target": {
                "oneOf": [
                    {"type": "null"},
                    {"const": "fallthrough"},
                    _object({"rule": {"type": "string", "minLength": 1}}, "rule"),
                ]
            },
            "startAt": _WHEN,
            "comment": _COMMENT_FIELD,
        },
        "steps",
        "toVariation",
    )
)
# pause, resume, stop, revert, cancel: an optional {"comment"} (or the X-Change-Comment header)
_COMMENT_BODY = _json(
    {
        "type": ["object", "null"],
        "properties": {"comment": _COMMENT_FIELD},
        "additionalProperties": False,
    },
    required=False,
)


def _with_body(op: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    op["requestBody"] = body
    return op


_ENV_PATH: Final = "/api/v1/environments/{env}"
_CR: Final = _ENV_PATH + "/change-requests"
_TRIGGERS: Final = _ENV_PATH + "/flags/{key}/triggers"
_PLAN: Final = _ENV_PATH + "/flags/{key}/rollout-plan"


def governance_paths() -> dict[str, Any]:
    env, key, cid = [_ENV], [_ENV, _KEY], [_ENV, _ID]
    return {
        _CR: {
            "get": _op(
                "List change requests, newest first",
                params=[
                    *env,
                    _q(
                        "status",
                        "apply state",
                        ("pending", "scheduled", "applied", "failed", "cancelled"),
                    ),
                    _q("reviewStatus", "review state", ("pending", "approved", "declined")),
                    _q("resource", "flags/KEY or segments/KEY"),
                    _q("author", "the author's token name"),
                ],
                responses=_responses(),
            ),
            "post": _with_body(
                _op(
                    "Propose a change (validated as the direct write would be); with executeAt "
                    "it is applied then, once approved",
                    params=[*env, _COMMENT],
                    responses=_responses(ok="Created", ok_code="201"),
                ),
                _CR_BODY,
            ),
        },
        _CR + "/{id}": {
            "get": _op("Show a change request", params=cid, responses=_responses()),
            "patch": _with_body(
                _op(
                    "Edit a change request (author only): baseVersion, change, description, "
                    "executeAt; revokes every review",
                    params=[*cid, _COMMENT],
                    responses=_responses(),
                ),
                _CR_EDIT_BODY,
            ),
        },
        _CR + "/{id}/reviews": {
            "post": _with_body(
                _op(
                    "Approve or decline (one review per reviewer; not the author unless the "
                    "policy allows self-approval)",
                    params=cid,
                    responses=_responses(),
                ),
                _REVIEW_BODY,
            )
        },
        _CR + "/{id}/apply": {
            "post": _op(
                "Apply an approved change request now, atomically with its write; a "
                "baseVersion conflict fails it (409 with currentVersion) and writes nothing",
                params=cid,
                responses={**_responses(), "202": {"description": _WRITE_ANSWER}},
            )
        },
        _CR + "/{id}/cancel": {
            "post": _with_body(
                _op(
                    "Cancel (author or admin) a pending, scheduled or failed change request",
                    params=[*cid, _COMMENT],
                    responses=_responses(),
                ),
                _COMMENT_BODY,
            )
        },
        _TRIGGERS: {
            "get": _op("List a flag's triggers (no secrets)", params=key, responses=_responses()),
            "post": _with_body(
                _op(
                    'Create a trigger {action: "on"|"off", description}; the answer\'s "url" '
                    "holds its secret and is shown only once",
                    params=[*key, _COMMENT],
                    responses=_responses(ok="Created", ok_code="201"),
                ),
                _TRIGGER_BODY,
            ),
        },
        _TRIGGERS + "/{id}": {
            "get": _op("Show a trigger", params=[*key, _ID], responses=_responses()),
            "patch": _with_body(
                _op(
                    "Enable or disable a trigger, or change its description",
                    params=[*key, _ID, _COMMENT],
                    responses=_responses(),
                ),
                _TRIGGER_UPDATE_BODY,
            ),
            "delete": _op(
                "Delete (revoke) a trigger: its URL answers 404 from now on",
                params=[*key, _ID, _COMMENT],
                responses=_responses(ok="Deleted", ok_code="204"),
            ),
        },
        _TRIGGERS + "/{id}/reviews": {
            "post": _with_body(
                _op(
                    "Review a trigger created where approvals are required",
                    params=[*key, _ID],
                    responses=_responses(),
                ),
                _REVIEW_BODY,
            )
        },
        "/api/v1/triggers/{secret}": {
            "post": _op(
                "Call a trigger (no token: the secret is the credential): turns the flag on or "
                'off; "changed": false when it already was. Unknown secret → 404; disabled or '
                "awaiting approval → 403; too many calls → 429 with Retry-After",
                params=[_SECRET],
                responses={**_responses("429"), "202": {"description": _WRITE_ANSWER}},
                public=True,
            )
        },
        _ENV_PATH + "/rollout-plans": {
            "get": _op("List rollout plans, newest first", params=env, responses=_responses())
        },
        _PLAN: {
            "get": _op("The flag's latest rollout plan", params=key, responses=_responses()),
            "put": _with_body(
                _op(
                    "Start a progressive rollout {steps: [{percent, holdSeconds}], toVariation, "
                    'fromVariation, target: "fallthrough" | {rule: id}, startAt}',
                    params=[*key, _COMMENT],
                    responses=_responses(ok="Created", ok_code="201"),
                ),
                _PLAN_BODY,
            ),
            "delete": _op(
                "Stop the plan (the flag stays as it is)",
                params=[*key, _COMMENT],
                responses=_responses(),
            ),
        },
        _PLAN + "/pause": {
            "post": _with_body(
                _op("Pause the plan", params=[*key, _COMMENT], responses=_responses()),
                _COMMENT_BODY,
            )
        },
        _PLAN + "/resume": {
            "post": _with_body(
                _op(
                    "Resume the plan from the flag as it is now",
                    params=[*key, _COMMENT],
                    responses=_responses(),
                ),
                _COMMENT_BODY,
            )
        },
        _PLAN + "/revert": {
            "post": _with_body(
                _op(
                    "Revert: write the target back as it was before the plan",
                    params=[*key, _COMMENT],
                    responses={**_responses(), "202": {"description": _WRITE_ANSWER}},
                ),
                _COMMENT_BODY,
            )
        },
        _PLAN + "/reviews": {
            "post": _with_body(
                _op(
                    "Review a plan created where approvals are required",
                    params=key,
                    responses=_responses(),
                ),
                _REVIEW_BODY,
            )
        },
    }


def add_governance(spec: dict[str, Any]) -> None:
    """Add the governance paths to ``spec``, and the audit log's filters."""
    for path, operations in governance_paths().items():
        spec["paths"].setdefault(path, {}).update(operations)
    audit = spec["paths"]["/api/v1/environments/{env}/audit"]["get"]
    audit["parameters"] += [
        _q("requestId", "only entries of this change request, trigger or rollout plan"),
        _q("actor", "only entries by this actor (a token name, or a trigger id)"),
    ]
