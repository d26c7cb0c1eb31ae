"""The publisher's aiohttp application: routes, auth, error mapping, write acknowledgement.

``build_app(settings, store, log)`` wires a ``Store`` and a ``RecordLog`` (Redis + Kafka in
production, in-memory for ``flagstream dev`` and tests) to the HTTP API of DESIGN.md §5.

A write is answered once its record is acknowledged by the log: ``201`` (created) or ``200``,
with the stored item (new version) as the body. If the acknowledgement does not come within
``ack_timeout`` the write is still committed in the store's outbox and will be delivered when
the log is back: the answer is ``202`` with ``{"delivery": "pending", "item": <stored item>}``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from protocol import jsoncodec
from publisher.auth import Principal, Scope, parse_bearer, principal_for, token_sha256
from publisher.config import PublisherSettings
from publisher.forwarder import Forwarder
from publisher.log import RecordLog
from publisher.metrics import PublisherMetrics
from publisher.openapi import openapi_spec
from publisher.problems import ApiError, problem_response
from publisher.service import IfMatch, Publisher, WriteResult, env_view, parse_if_match
from publisher.store import ItemKind, Store, StoreUnavailable
from publisher.tokencache import PrincipalCache

__all__ = ["FORWARDER", "METRICS", "PUBLISHER", "build_app"]

_log = logging.getLogger("flagstream.publisher")

FORWARDER = web.AppKey("forwarder", Forwarder)
METRICS = web.AppKey("metrics", PublisherMetrics)
PUBLISHER = web.AppKey("publisher", Publisher)
_SETTINGS = web.AppKey("settings", PublisherSettings)
_ADMIN_SHA = web.AppKey("admin_sha256", str)
_PRINCIPALS = web.AppKey("principals", PrincipalCache)
# The two write counters every answered write increments, looked up once.
_ACKNOWLEDGED = web.AppKey("writes_acknowledged", Counter)
_PENDING = web.AppKey("writes_pending", Counter)
_PRINCIPAL = web.RequestKey("principal", Principal)

_KINDS: dict[str, ItemKind] = {"flags": "flag", "segments": "segment"}
_WRITE_METHODS = frozenset({"PUT", "PATCH", "DELETE", "POST"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- middlewares ----------------------------------------------------------------------------
@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes problem+json; write outcomes are counted by result."""
    metrics = request.app[METRICS]
    is_write = request.method in _WRITE_METHODS and request.path.startswith("/api/v1/environments")
    try:
        return await handler(request)
    except ApiError as exc:
        if is_write:
            result = {412: "conflict", 503: "unavailable"}.get(exc.status, "rejected")
            metrics.writes.labels(result).inc()
        return problem_response(
            exc.status, exc.detail, type_=exc.type, headers=exc.headers, extra=exc.extra
        )
    except StoreUnavailable as exc:
        metrics.store_errors.inc()
        if is_write:
            metrics.writes.labels("unavailable").inc()
        return problem_response(
            503,
            f"the system of record is unavailable: {exc}. Nothing was changed by this "
            "request unless a later read shows it; retry shortly.",
            type_="store-unavailable",
            headers={"Retry-After": "1"},
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if is_write:
            metrics.writes.labels("rejected").inc()
        detail = {
            404: f"no route {request.path!r}; see /openapi.json",
            405: f"method {request.method} is not allowed on {request.path!r}",
            413: f"request body too large (limit {request.app[_SETTINGS].max_body_bytes} bytes)",
        }.get(exc.status, exc.reason)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem_response(exc.status, detail, headers=headers)
    except Exception:
        _log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(500, "internal error; the publisher logged the details")


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the bearer token of every /api/ request into a Principal (401 if none)."""
    # trigger URLs carry their own credential (governance, publisher.governance.triggers)
    if not request.path.startswith("/api/") or request.path.startswith("/api/v1/triggers/"):
        return await handler(request)
    secret = parse_bearer(request.headers.get("Authorization"))
    challenge = {"WWW-Authenticate": 'Bearer realm="flagstream"'}
    if secret is None:
        raise ApiError(
            401,
            "missing or malformed Authorization header; send 'Authorization: Bearer <token>'",
            headers=challenge,
        )
    digest = token_sha256(secret)
    principal = principal_for(digest, request.app[_ADMIN_SHA] or None)
    if principal is None:
        principal = request.app[_PRINCIPALS].get(digest)
    if principal is None:
        token = await request.app[PUBLISHER].store.find_token(digest)
        if token is not None and _same(token.secret_sha256, digest):
            principal = Principal(
                token.name,
                token.id,
                frozenset(token.scopes),
                None if token.environments is None else frozenset(token.environments),
            )
            request.app[_PRINCIPALS].put(digest, principal)
    if principal is None:
        raise ApiError(401, "invalid or revoked token", headers=challenge)
    request[_PRINCIPAL] = principal
    return await handler(request)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# -- request helpers ------------------------------------------------------------------------
def _principal(request: web.Request, scope: Scope, env: str | None = None) -> Principal:
    p = request[_PRINCIPAL]
    if not p.may(scope, env):
        where = f" on environment {env!r}" if env is not None else ""
        raise ApiError(403, f"token {p.name!r} lacks the {scope!r} scope{where}")
    return p


async def _json_body(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()  # raises 413 above client_max_size
    if not raw.strip():
        if optional:
            return None
        raise ApiError(400, "the request body is empty; send a JSON document")
    try:
        return jsoncodec.loads(raw)
    except UnicodeDecodeError as exc:
        raise ApiError(400, "the request body is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise ApiError(400, "malformed JSON: nested too deeply") from exc
    except ValueError as exc:  # an integer beyond Python's digit limit (4300 by default)
        raise ApiError(400, "malformed JSON: a number has too many digits") from exc


def _kind(request: web.Request) -> ItemKind:
    return _KINDS[request.match_info["kinds"]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=jsoncodec.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def _json_bytes(body: bytes, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


async def _answer_write(request: web.Request, result: WriteResult) -> web.Response:
    """200/201 once Kafka acknowledged the write's record, else 202 (delivery pending)."""
    app = request.app
    forwarder = app[FORWARDER]
    forwarder.kick()
    delivered = await forwarder.wait_delivered(result.entry_id, app[_SETTINGS].ack_timeout)
    headers = {}
    if isinstance(result.body.get("version"), int) and "sdkKey" not in result.body:
        headers["ETag"] = f'"{result.body["version"]}"'
    # The stored item's JSON is reused as it is (encoded once, when it was built).
    item = result.encoded
    if delivered:
        app[_ACKNOWLEDGED].inc()
        status = 201 if result.created else 200
        if item is not None:
            return _json_bytes(item, status, headers)
        return _json(result.body, status, headers)
    app[_PENDING].inc()
    if item is not None:
        return _json_bytes(b'{"delivery":"pending","item":' + item + b"}", 202, headers)
    return _json({"delivery": "pending", "item": result.body}, 202, headers)


# -- handlers -------------------------------------------------------------------------------
async def livez(request: web.Request) -> web.Response:
    return _json({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    forwarder = app[FORWARDER]
    try:
        await app[PUBLISHER].store.ping()
        depth = await app[PUBLISHER].store.outbox_depth()
    except StoreUnavailable as exc:
        return _json({"status": "not ready", "redis": str(exc)}, 503)
    if not forwarder.is_leader:
        # Only the leader talks to Kafka; claiming "unreachable" here would be a false alarm.
        kafka = "not the forwarder leader; kafka state unknown to this instance"
    else:
        kafka = "ok" if forwarder.kafka_ok else "unreachable"
    return _json(
        {
            "status": "ready",
            "redis": "ok",
            "kafka": kafka,
            "forwarderLeader": forwarder.is_leader,
            "outboxDepth": depth,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS].registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def openapi(request: web.Request) -> web.Response:
    return _json(openapi_spec())


async def create_environment(request: web.Request) -> web.Response:
    actor = _principal(request, "admin")
    body = await _json_body(request)
    result = await request.app[PUBLISHER].create_environment(
        body, actor=actor, comment_header=request.headers.get("X-Change-Comment")
    )
    return await _answer_write(request, result)


async def list_environments(request: web.Request) -> web.Response:
    p = request[_PRINCIPAL]
    records = [
        r for r in await request.app[PUBLISHER].store.list_environments() if p.may("read", r.key)
    ]
    policies = await governance_policy_fields(request.app, [r.key for r in records])
    return _json({"items": [{**env_view(r), **policies[r.key]} for r in records]})


async def get_environment(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    _principal(request, "read", env)
    record = await request.app[PUBLISHER].require_environment(env)
    policy = await governance_policy_fields(request.app, [env])  # governance: policy fields
    return _json({**env_view(record), **policy[env]})


async def patch_environment(request: web.Request) -> web.Response:
    """The environment's client-side settings and governance policy fields in one merge
    patch: ``publisher.governance.http.patch_environment`` (it knows both parts)."""
    from publisher.governance.http import patch_environment as handler

    return await handler(request)


async def rotate_sdk_key(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    actor = _principal(request, "admin", env)
    body = await _json_body(request, optional=True)
    result = await request.app[PUBLISHER].rotate_sdk_key(
        env, body, actor=actor, comment_header=request.headers.get("X-Change-Comment")
    )
    return await _answer_write(request, result)


def _if_match(request: web.Request) -> IfMatch:
    return parse_if_match(request.headers.get("If-Match"))


_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no", ""})


def _bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false")
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ApiError(400, f"query parameter {name} must be true or false, not {raw[:40]!r}")


async def list_items(request: web.Request) -> web.Response:
    env = request.match_info["env"]
    _principal(request, "read", env)
    include = _bool_query(request, "includeDeleted")
    items = await request.app[PUBLISHER].list_items(env, _kind(request), include_deleted=include)
    return _json({"items": items})


async def get_item(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    _principal(request, "read", env)
    item = await request.app[PUBLISHER].get_item(env, _kind(request), key)
    return _json(item, headers={"ETag": f'"{item["version"]}"'})


async def _write_with_body(
    request: web.Request, write: Callable[..., Awaitable[WriteResult]]
) -> web.Response:
    """PUT and PATCH: ``write`` is ``Publisher.put_item`` or ``Publisher.patch_item``."""
    env, key = request.match_info["env"], request.match_info["key"]
    actor = _principal(request, "write", env)
    if_match = _if_match(request)
    body = await _json_body(request)
    result = await write(
        env,
        _kind(request),
        key,
        body,
        if_match=if_match,
        actor=actor,
        comment_header=request.headers.get("X-Change-Comment"),
    )
    return await _answer_write(request, result)


async def put_item(request: web.Request) -> web.Response:
    return await _write_with_body(request, request.app[PUBLISHER].put_item)


async def patch_item(request: web.Request) -> web.Response:
    return await _write_with_body(request, request.app[PUBLISHER].patch_item)


async def delete_item(request: web.Request) -> web.Response:
    env, key = request.match_info["env"], request.match_info["key"]
    actor = _principal(request, "write", env)
    result = await request.app[PUBLISHER].delete_item(
        env,
        _kind(request),
        key,
        if_match=_if_match(request),
        actor=actor,
        comment_header=request.headers.get("X-Change-Comment"),
    )
    return await _answer_write(request, result)


async def bulk(request: web.Request) -> web.Response:
    """``POST .../bulk``: 200 once Kafka acknowledged every record, 202 if still pending."""
    env = request.match_info["env"]
    actor = _principal(request, "write", env)
    dry_run = _bool_query(request, "dryRun")
    app = request.app
    limit = app[_SETTINGS].max_bulk_body_bytes
    try:
        body = await _json_body(request.clone(client_max_size=limit))
    except web.HTTPRequestEntityTooLarge as exc:
        raise ApiError(
            413,
            f"bulk request body too large (limit {limit} bytes, "
            "FLAGSTREAM_PUBLISHER_MAX_BULK_BODY_BYTES); split it into several requests",
        ) from exc
    result = await app[PUBLISHER].bulk(
        env,
        body,
        actor=actor,
        comment_header=request.headers.get("X-Change-Comment"),
        dry_run=dry_run,
    )
    if result.last_entry_id is None:
        return _json(result.body)
    forwarder = app[FORWARDER]
    forwarder.kick()
    if await forwarder.wait_delivered(result.last_entry_id, app[_SETTINGS].ack_timeout):
        app[_ACKNOWLEDGED].inc()
        return _json(result.body)
    app[_PENDING].inc()
    return _json({**result.body, "delivery": "pending"}, 202)


async def audit(request: web.Request) -> web.Response:
    if AUDIT_FILTERS & request.query.keys():  # governance: ?requestId= / ?actor= filters
        return await filtered_audit(request)
    env = request.match_info["env"]
    _principal(request, "read", env)
    raw = request.query.get("limit", "50")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        raise ApiError(400, "limit must be a positive integer")
    entries = await request.app[PUBLISHER].audit(env, int(raw))
    return _json({"items": entries})


async def create_token(request: web.Request) -> web.Response:
    actor = _principal(request, "admin")
    body = await _json_body(request)
    created = await request.app[PUBLISHER].create_token(body, actor=actor)
    _log.info(
        "token %s (id %s, scopes %s) created by %s",
        created["name"],
        created["id"],
        ",".join(created["scopes"]),
        actor.name,
    )
    return _json(created, 201)


async def list_tokens(request: web.Request) -> web.Response:
    _principal(request, "admin")
    return _json({"items": await request.app[PUBLISHER].list_tokens()})


async def delete_token(request: web.Request) -> web.Response:
    actor = _principal(request, "admin")
    await request.app[PUBLISHER].delete_token(request.match_info["id"])
    request.app[_PRINCIPALS].revoke(request.match_info["id"])
    _log.info("token id %s revoked by %s", request.match_info["id"], actor.name)
    return web.Response(status=204)


Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

ROUTES: tuple[tuple[Method, str, Handler], ...] = (
    ("GET", "/livez", livez),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics),
    ("GET", "/openapi.json", openapi),
    ("POST", "/api/v1/environments", create_environment),
    ("GET", "/api/v1/environments", list_environments),
    ("GET", "/api/v1/environments/{env}", get_environment),
    ("PATCH", "/api/v1/environments/{env}", patch_environment),
    ("POST", "/api/v1/environments/{env}/sdk-keys/rotate", rotate_sdk_key),
    ("GET", "/api/v1/environments/{env}/{kinds:flags|segments}", list_items),
    ("GET", "/api/v1/environments/{env}/{kinds:flags|segments}/{key}", get_item),
    ("PUT", "/api/v1/environments/{env}/{kinds:flags|segments}/{key}", put_item),
    ("PATCH", "/api/v1/environments/{env}/{kinds:flags|segments}/{key}", patch_item),
    ("DELETE", "/api/v1/environments/{env}/{kinds:flags|segments}/{key}", delete_item),
    ("GET", "/api/v1/environments/{env}/audit", audit),
    ("POST", "/api/v1/environments/{env}/bulk", bulk),
    ("POST", "/api/v1/tokens", create_token),
    ("GET", "/api/v1/tokens", list_tokens),
    ("DELETE", "/api/v1/tokens/{id}", delete_token),
)


def build_app(settings: PublisherSettings, store: Store, log: RecordLog) -> web.Application:
    """The publisher app over ``store`` and ``log``; starts/stops its forwarder with the app.

    The caller owns ``store`` (closes it after the app's cleanup); the forwarder starts and
    stops ``log``.
    """
    app = web.Application(middlewares=[_errors, _auth], client_max_size=settings.max_body_bytes)
    metrics_ = PublisherMetrics()
    app[_SETTINGS] = settings
    app[METRICS] = metrics_
    app[_ACKNOWLEDGED] = metrics_.writes.labels("acknowledged")
    app[_PENDING] = metrics_.writes.labels("pending")
    app[PUBLISHER] = Publisher(
        store,
        max_record_bytes=settings.max_record_bytes,
        group_commit_max=settings.group_commit_max,
    )
    app[_PRINCIPALS] = PrincipalCache(settings.token_cache_ttl)
    app[FORWARDER] = Forwarder(
        store,
        log,
        metrics_,
        lease_ttl=settings.lease_ttl,
        batch_size=settings.forward_batch,
        stall_after=min(5.0, settings.kafka_request_timeout),
        commits_settled=app[PUBLISHER].committer.settled,
    )
    admin = settings.admin_token
    app[_ADMIN_SHA] = token_sha256(admin.get_secret_value()) if admin is not None else ""
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)

    async def on_startup(app: web.Application) -> None:
        app[FORWARDER].start()

    async def on_cleanup(app: web.Application) -> None:
        await app[FORWARDER].stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    # governance (publisher.governance): routes, the direct-write guard, the scheduler
    install_governance(app, settings, app[PUBLISHER], app[FORWARDER], metrics_)
    return app


# -- governance hooks (publisher.governance imports this module, so import it late) --------
async def governance_policy_fields(app: web.Application, envs: list[str]) -> Any:
    from publisher.governance.http import policy_fields

    return await policy_fields(app, envs)


async def filtered_audit(request: web.Request) -> web.Response:
    from publisher.governance.http import filtered_audit as handler

    return await handler(request)


def install_governance(app: web.Application, *args: Any) -> None:
    from publisher.governance.install import install_governance as install

    install(app, *args)


AUDIT_FILTERS = frozenset({"requestId", "actor"})
