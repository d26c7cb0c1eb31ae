"""The governance routes of the publisher's API (``/api/v1``; see docs/governance.md).

Handlers parse the request, check the token's scope, call ``Governance`` and shape the answer;
errors are ``ApiError``s, which the app's middleware answers as problem+json. A governance
step that writes a flag (apply, trigger, revert) is answered like a write: 200 once Kafka
acknowledged its record, 202 with ``"delivery": "pending"`` if it did not within the ack
timeout (the write is committed and will be delivered).

Scopes: reading needs ``read``; proposing, reviewing, applying, cancelling, triggers and
rollout plans need ``write`` on the environment; the policy needs ``admin``. Calling a trigger
URL needs no token (the secret in the URL is the credential).

``PATCH /api/v1/environments/{env}`` is one handler for the environment's two kinds of
settings, ``patch_environment`` (rules there); the app routes it here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from publisher.app import FORWARDER, PUBLISHER, _answer_write, _json, _json_body, _principal
from publisher.client_settings import CLIENT_SETTINGS_FIELDS, apply_client_settings
from publisher.governance.core import Written, only_fields, parse_comment, require_object
from publisher.governance.install import GOVERNANCE, UNAVAILABLE, Governance
from publisher.governance.model import ChangeRequest, Policy, RolloutPlan
from publisher.governance.policy import POLICY_FIELDS, validate_policy_patch
from publisher.governance.triggers import TRIGGER_PATH
from publisher.problems import ApiError
from publisher.service import WriteResult, env_view

__all__ = ["ROUTES", "add_routes", "filtered_audit", "policy_fields"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ENV = "/api/v1/environments/{env}"
_CR = _ENV + "/change-requests"
_TRIGGERS = _ENV + "/flags/{key}/triggers"
_PLAN = _ENV + "/flags/{key}/rollout-plan"
_AUDIT_LIMIT_MAX = 1000


def _gov(request: web.Request) -> Governance:
    reason = request.app.get(UNAVAILABLE)
    if reason is not None:
        raise ApiError(501, reason, type_="governance-unavailable")
    return request.app[GOVERNANCE]


def _comment_header(request: web.Request) -> str | None:
    return request.headers.get("X-Change-Comment")


async def _answer(
    request: web.Request, body: dict[str, Any], written: Written | None, *, created: bool = False
) -> web.Response:
    """Like a write's answer: wait for Kafka's ack of the record, else 202 pending."""
    status = 201 if created else 200
    if written is None:
        return _json(body, status)
    body = {**body, "item": written.result.body}
    forwarder = request.app[FORWARDER]
    forwarder.kick()
    if await forwarder.wait_delivered(written.result.entry_id, _gov(request).ack_timeout):
        return _json({**body, "delivery": "acknowledged"}, status)
    return _json({**body, "delivery": "pending"}, 202)


def _cr_view(cr: ChangeRequest, policy: Policy) -> dict[str, Any]:
    return cr.view(policy.required_approvals)


# -- policy and environment views -----------------------------------------------------------
async def policy_fields(app: web.Application, envs: list[str]) -> dict[str, dict[str, Any]]:
    """The policy fields shown with each environment of ``envs`` (none where governance is
    unavailable)."""
    if app.get(UNAVAILABLE) is not None:
        return {env: {} for env in envs}
    return await app[GOVERNANCE].policies.views(envs)


async def patch_environment(request: web.Request) -> web.Response:
    """``PATCH /api/v1/environments/{env}`` (admin scope): one JSON merge patch of the
    environment's policy fields (``POLICY_FIELDS``, governance) and client-side settings
    (``CLIENT_SETTINGS_FIELDS``, ``publisher.client_settings``).

    1. Any other field is a 422 naming it (and naming the fields there are); nothing written.
    2. Both parts are validated before either is written: an invalid value in one part is a
       422 and leaves the other unchanged too.
    3. The client-side settings are written first (a new version of the environment record,
       which relays receive through the log; audited ``update-client-settings``), then the
       policy (a new policy revision; audited ``update-policy``). A part that changes nothing
       writes nothing. The two are separate atomic steps: a failure of the store between them
       (503) leaves the first written, and the same request can simply be sent again.
    4. The answer is the environment's view with both parts. When the environment record
       changed, it is answered like any write: 200 once Kafka acknowledged the new record,
       else 202 with ``"delivery": "pending"``.
    """
    env = request.match_info["env"]
    actor = _principal(request, "admin", env)
    patch = require_object(
        await _json_body(request),
        "a merge patch of the environment's policy fields and client-side settings",
    )
    comment = parse_comment(_comment_header(request), patch)
    unknown = set(patch) - POLICY_FIELDS - CLIENT_SETTINGS_FIELDS
    if unknown:
        raise ApiError(
            422,
            f"invalid environment: unknown field(s) {sorted(unknown)[:10]}; PATCH of an "
            f"environment changes its policy fields {sorted(POLICY_FIELDS)} and its "
            f"client-side settings {sorted(CLIENT_SETTINGS_FIELDS)} (the name and the "
            "credentials have their own routes)",
            type_="unknown-field",
        )
    policy_part = {k: v for k, v in patch.items() if k in POLICY_FIELDS}
    settings_part = {k: v for k, v in patch.items() if k in CLIENT_SETTINGS_FIELDS}
    publisher = request.app[PUBLISHER]
    record = await publisher.require_environment(env)
    # Rule 2: validate both parts before writing either.
    apply_client_settings(record, settings_part)
    if policy_part:
        _gov(request)  # 501 where governance is unavailable: nothing written either
        validate_policy_patch(policy_part)
    result = None
    if settings_part:
        result = await publisher.update_client_settings(
            env, settings_part, actor=actor, comment_header=comment
        )
    if policy_part:
        await _gov(request).policies.patch(env, policy_part, actor=actor, comment_header=comment)
    view = {**env_view(await publisher.require_environment(env))}
    view.update((await policy_fields(request.app, [env]))[env])
    if result is None:
        return _json(view)
    if "secureModeSecret" in result.body:  # generated now: shown once, like a new SDK key
        view["secureModeSecret"] = result.body["secureModeSecret"]
    return await _answer_write(request, WriteResult(view, result.entry_id, created=False))


# -- change requests -------------------------------------------------------------------------
async def create_request(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    actor = _principal(request, "write", env)
    body = await _json_body(request)
    cr, policy = await _gov(request).requests.create(
        env, body, actor=actor, comment_header=_comment_header(request)
    )
    _gov(request).scheduler.kick()
    return _json(_cr_view(cr, policy), 201)


async def list_requests(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    _principal(request, "read", env)
    gov = _gov(request)
    items = await gov.requests.list_requests(env, dict(request.query))
    policy = await gov.policies.get(env)
    return _json({"items": [_cr_view(cr, policy) for cr in items]})


async def get_request(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    _principal(request, "read", env)
    gov = _gov(request)
    cr = await gov.requests.get(env, request.match_info["id"])
    return _json(_cr_view(cr, await gov.policies.get(env)))


async def edit_request(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    actor = _principal(request, "write", env)
    body = await _json_body(request)
    cr, policy = await _gov(request).requests.edit(
        env, request.match_info["id"], body, actor=actor, comment_header=_comment_header(request)
    )
    _gov(request).scheduler.kick()
    return _json(_cr_view(cr, policy))


async def review_request(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    actor = _principal(request, "write", env)
    body = await _json_body(request)
    cr, policy = await _gov(request).requests.review(
        env, request.match_info["id"], body, actor=actor
    )
    _gov(request).scheduler.kick()
    return _json(_cr_view(cr, policy))


async def apply_request(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    actor = _principal(request, "write", env)
    if await request.read():
        raise ApiError(400, "apply takes no body; the change is the request's")
    cr, policy, written = await _gov(request).requests.apply(
        env, request.match_info["id"], actor=actor
    )
    return await _answer(request, {"changeRequest": _cr_view(cr, policy)}, written)


async def cancel_request(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    actor = _principal(request, "write", env)
    body = await _json_body(request, optional=True)
    cr, policy = await _gov(request).requests.cancel(
        env, request.match_info["id"], body, actor=actor, comment_header=_comment_header(request)
    )
    return _json(_cr_view(cr, policy))


# -- triggers --------------------------------------------------------------------------------
def _trigger_url(request: web.Request, secret: str) -> str:
    return f"{request.url.origin()}{TRIGGER_PATH}{secret}"


async def create_trigger(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    actor = _principal(request, "write", env)
    body = await _json_body(request)
    trigger, secret = await _gov(request).triggers.create(
        env, key, body, actor=actor, comment_header=_comment_header(request)
    )
    # The URL holds the secret: this answer is the only time it is shown.
    return _json({**trigger.view(), "url": _trigger_url(request, secret)}, 201)


async def list_triggers(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    _principal(request, "read", env)
    items = await _gov(request).triggers.list_triggers(env, key)
    return _json({"items": [t.view() for t in items]})


async def get_trigger(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    _principal(request, "read", env)
    trigger = await _gov(request).triggers.get(env, key, request.match_info["id"])
    return _json(trigger.view())


async def update_trigger(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    actor = _principal(request, "write", env)
    body = await _json_body(request)
    trigger = await _gov(request).triggers.update(
        env,
        key,
        request.match_info["id"],
        body,
        actor=actor,
        comment_header=_comment_header(request),
    )
    return _json(trigger.view())


async def delete_trigger(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    actor = _principal(request, "write", env)
    await _gov(request).triggers.delete(
        env, key, request.match_info["id"], actor=actor, comment_header=_comment_header(request)
    )
    return web.Response(status=204)


async def review_trigger(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    actor = _principal(request, "write", env)
    body = await _json_body(request)
    trigger = await _gov(request).triggers.review(
        env, key, request.match_info["id"], body, actor=actor
    )
    return _json(trigger.view())


async def fire_trigger(request: web.Request) -> web.Response:
    """POST /api/v1/triggers/{secret}: no token; any body is ignored (webhook senders)."""
    trigger, written = await _gov(request).triggers.fire(request.match_info["secret"])
    body: dict[str, Any] = {
        "trigger": trigger.id,
        "environment": trigger.env,
        "flag": trigger.flag,
        "action": trigger.action,
        "changed": written is not None,
    }
    if written is not None:
        body["version"] = written.version
    return await _answer(request, body, written)


# -- rollout plans ---------------------------------------------------------------------------
def _plan_view(plan: RolloutPlan) -> dict[str, Any]:
    return plan.view()


async def get_plan(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    _principal(request, "read", env)
    return _json(_plan_view(await _gov(request).rollouts.latest(env, key)))


async def list_plans(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    _principal(request, "read", env)
    return _json({"items": [_plan_view(p) for p in await _gov(request).rollouts.list_plans(env)]})


async def create_plan(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    actor = _principal(request, "write", env)
    body = await _json_body(request)
    plan = await _gov(request).rollouts.create(
        env, key, body, actor=actor, comment_header=_comment_header(request)
    )
    _gov(request).scheduler.kick()
    return _json(_plan_view(plan), 201)


async def _plan_comment(request: web.Request) -> str | None:
    body = await _json_body(request, optional=True)
    obj = {} if body is None else require_object(body, '{"comment": ...}')
    comment = parse_comment(_comment_header(request), obj)
    only_fields(obj, frozenset(), "this action")
    return comment


def _plan_action(name: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        env, key = request.match_info["env"], request.match_info["key"]
        actor = _principal(request, "write", env)
        comment = await _plan_comment(request)
        rollouts = _gov(request).rollouts
        action = {"pause": rollouts.pause, "resume": rollouts.resume, "stop": rollouts.stop}[name]
        plan = await action(env, key, actor=actor, comment=comment)
        _gov(request).scheduler.kick()
        return _json(_plan_view(plan))

    handler.__name__ = f"{name}_plan"
    return handler


async def revert_plan(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    actor = _principal(request, "write", env)
    comment = await _plan_comment(request)
    plan, written = await _gov(request).rollouts.revert(env, key, actor=actor, comment=comment)
    return await _answer(request, {"rolloutPlan": _plan_view(plan)}, written)


async def review_plan(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    actor = _principal(request, "write", env)
    body = await _json_body(request)
    plan = await _gov(request).rollouts.review(env, key, body, actor=actor)
    _gov(request).scheduler.kick()
    return _json(_plan_view(plan))


# -- audit filters (the app's audit handler delegates here when a filter is given) ----------
AUDIT_FILTERS = frozenset({"requestId", "actor"})


async def filtered_audit(request: web.Request) -> web.Response:
    """GET …/audit?requestId=…&actor=…&limit=N: the newest N entries matching every filter."""
    env = request.match_info["env"]
    _principal(request, "read", env)
    raw = request.query.get("limit", "50")
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw[:7]) <= _AUDIT_LIMIT_MAX:
        raise ApiError(400, f"limit must be an integer from 1 to {_AUDIT_LIMIT_MAX}")
    await request.app[PUBLISHER].require_environment(env)
    entries = await _gov(request).core.read_audit(
        env,
        int(raw),
        request_id=request.query.get("requestId"),
        actor=request.query.get("actor"),
    )
    return _json({"items": entries})


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", _CR, list_requests),
    ("POST", _CR, create_request),
    ("GET", _CR + "/{id}", get_request),
    ("PATCH", _CR + "/{id}", edit_request),
    ("POST", _CR + "/{id}/reviews", review_request),
    ("POST", _CR + "/{id}/apply", apply_request),
    ("POST", _CR + "/{id}/cancel", cancel_request),
    ("GET", _TRIGGERS, list_triggers),
    ("POST", _TRIGGERS, create_trigger),
    ("GET", _TRIGGERS + "/{id}", get_trigger),
    ("PATCH", _TRIGGERS + "/{id}", update_trigger),
    ("DELETE", _TRIGGERS + "/{id}", delete_trigger),
    ("POST", _TRIGGERS + "/{id}/reviews", review_trigger),
    ("POST", TRIGGER_PATH + "{secret}", fire_trigger),
    ("GET", _ENV + "/rollout-plans", list_plans),
    ("GET", _PLAN, get_plan),
    ("PUT", _PLAN, create_plan),
    ("DELETE", _PLAN, _plan_action("stop")),
    ("POST", _PLAN + "/pause", _plan_action("pause")),
    ("POST", _PLAN + "/resume", _plan_action("resume")),
    ("POST", _PLAN + "/revert", revert_plan),
    ("POST", _PLAN + "/reviews", review_plan),
)


def add_routes(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
