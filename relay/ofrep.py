"""The OpenFeature Remote Evaluation Protocol (OFREP) routes of a relay.

Endpoints (the OFREP OpenAPI spec 0.3.0; operator docs in docs/openfeature.md):
``POST /ofrep/v1/evaluate/flags/{key}`` (one flag), ``POST /ofrep/v1/evaluate/flags`` (bulk,
``ETag`` / ``If-None-Match`` → 304) and ``GET /ofrep/v1/notices?token=…`` (ADR-0008 change
notifications, an SSE stream served by the hub like every other stream: encoded once per
round, heartbeats, eviction, drain). Browsers may call all three (``relay.cors``).

Rules, in the order a request meets them (the JSON itself is ``protocol.ofrep``'s):

1. Not bootstrapped → 503 + ``Retry-After``, body ``{"errorDetails": …}``.
2. Credentials (``relay.ofrep_auth``): none, unknown or expired → 401; known but of a kind
   ``ofrep_credentials`` does not accept → 403. Both without a body, as the spec says.
3. Rate limit (``ofrep_rate_limit``, off by default): a token bucket per credential and
   worker (``relay.ratelimit``); over it → 429 with ``Retry-After: <seconds>`` and no body.
   Seconds, not a date: the spec allows both (the single-flag route's schema names only a
   date-time string, its description either), and both real JavaScript providers parse the
   header with ``parseInt`` first, which reads a date-time as its year, and the Python
   provider accepts seconds or an HTTP-date only.
4. Body: larger than ``ofrep_max_body_bytes`` → 413 (a failure body with ``GENERAL``; the
   spec has no 413, so the body is the 400 one); then ``protocol.ofrep.parse_request``
   (``PARSE_ERROR`` / ``INVALID_CONTEXT`` / ``TARGETING_KEY_MISSING`` → 400).
5. One flag: a flag the credential cannot see, deleted or unknown → 404 ``FLAG_NOT_FOUND``;
   an evaluation error → 400 ``GENERAL``; else 200.
6. Bulk: ``?flagConfigEtag=<position>`` (what a provider sends after a notice) from a relay
   further ahead holds the request until this relay reached it (at most ``catchup_wait``),
   so a notice never leads to an older answer. The ``ETag`` is computed before evaluating
   (``protocol.ofrep.bulk_etag``): a matching ``If-None-Match`` → 304 without evaluating.
   The answer lists ``eventStreams``: the notice-stream URL with the environment's token.
7. Notices: the token must be the environment's current one (``ofrep_auth.notice_token``),
   else 401. Every stream starts with one notice at the current position, so a provider
   re-validates (a 304 when it is current) whatever happened between its bulk answer and
   the connection, and after every reconnect; then one notice per round of changes of the
   environment (``relay.hub`` rule 2), each with ``id: <position>``. A ``Last-Event-ID``
   ahead of this relay holds the connection like an SDK stream's (DESIGN.md §4).
"""

from __future__ import annotations

import hmac
import math
import time
from typing import Any, Final

from aiohttp import hdrs, web

from protocol.ofrep import (
    ErrorCode,
    OfrepError,
    bulk_body,
    bulk_etag,
    encode_failure,
    etag_matches,
    event_streams_json,
    notice_event,
    parse_request,
    token_environment,
)
from protocol.position import parse_position
from relay import cors
from relay.config import RelaySettings
from relay.metrics import OfrepMetrics, RelayMetrics
from relay.ofrep_answers import OfrepAnswers
from relay.ofrep_auth import CredentialResolver, Grant, credential_from_headers
from relay.ratelimit import TokenBuckets
from relay.state import Environment, State

__all__ = ["FLAG_PATH", "NOTICES_PATH", "PREFIX", "OfrepRoutes", "register"]

PREFIX: Final = "/ofrep/"
BULK_PATH: Final = "/ofrep/v1/evaluate/flags"
FLAG_PATH: Final = "/ofrep/v1/evaluate/flags/{key}"
NOTICES_PATH: Final = "/ofrep/v1/notices"

_NO_STORE: Final[dict[str, str]] = {"Cache-Control": "no-store"}
_JSON_NO_STORE: Final[dict[str, str]] = {"Content-Type": "application/json", **_NO_STORE}
_BULK_CACHE: Final = "private, no-cache"
CORS_POLICY_HEADERS: Final = ("Content-Type", "Authorization", "X-API-Key", "If-None-Match")
CORS_EXPOSED_HEADERS: Final = ("ETag", "Retry-After")


class OfrepRoutes:
    """The OFREP handlers of one relay (rules in the module docstring)."""

    def __init__(self, settings: RelaySettings, state: State, hub: Any, metrics: RelayMetrics):
        self.settings = settings
        self.state = state
        self.hub = hub
        self.metrics = OfrepMetrics(metrics.registry)
        self.answers = OfrepAnswers(state)
        self.credentials = CredentialResolver(state)
        self.accepted = frozenset(settings.ofrep_credentials.split(","))
        self.limiter = (
            TokenBuckets(settings.ofrep_rate_limit, settings.ofrep_rate_burst)
            if settings.ofrep_rate_limit is not None
            else None
        )
        self._retry_after = {"Retry-After": str(settings.retry_after)}
        self._streams: dict[tuple[str, str], tuple[str, bytes]] = {}  # (env, origin) -> json
        self._counters: dict[tuple[str, int], Any] = {}
        self._timers = {r: self.metrics.request_seconds.labels(route=r) for r in ("flag", "bulk")}
        state.reset_listeners.append(self.answers.clear)

    # --- handlers -------------------------------------------------------------------------

    async def evaluate_flag(self, request: web.Request) -> web.Response:
        began = time.perf_counter()
        key = request.match_info["key"]
        response = await self._evaluate_flag(request, key)
        self._done("flag", response.status, began)
        return response

    async def evaluate_bulk(self, request: web.Request) -> web.Response:
        began = time.perf_counter()
        response = await self._evaluate_bulk(request)
        self._done("bulk", response.status, began)
        return response

    async def notices(self, request: web.Request) -> web.StreamResponse:
        response = await self._notices(request)
        self._count("notices", response.status)
        return response

    # --- one flag, bulk -------------------------------------------------------------------

    async def _evaluate_flag(self, request: web.Request, key: str) -> web.Response:
        grant = self._admit(request)
        if isinstance(grant, web.Response):
            return grant
        body = await self._read_body(request, key)
        if isinstance(body, web.Response):
            return body
        try:
            context = parse_request(body)
        except OfrepError as exc:
            return _failure(400, exc.code, exc.details, key=key)
        await self.state.evaluation.compiled(grant.env)  # right after a bootstrap: in slices
        answer = self.answers.single(grant.env, key, context, grant.audience)
        if answer is None:
            return _failure(404, "FLAG_NOT_FOUND", f"flag {key!r} was not found", key=key)
        self.metrics.evaluations_total.inc()
        status, payload = answer
        return web.Response(status=status, body=payload, headers=_JSON_NO_STORE)

    async def _evaluate_bulk(self, request: web.Request) -> web.Response:
        grant = self._admit(request)
        if isinstance(grant, web.Response):
            return grant
        body = await self._read_body(request, None)
        if isinstance(body, web.Response):
            return body
        try:
            context = parse_request(body)
        except OfrepError as exc:
            return _failure(400, exc.code, exc.details)
        await self.state.evaluation.compiled(grant.env)  # right after a bootstrap: in slices
        environment = await self._caught_up(request, grant.env)
        if environment is None:  # deleted, or the state was rebuilt, while waiting
            return web.Response(status=401)
        streams = self._event_streams(request, grant.env)
        position = str(self.state.position(environment))
        etag = bulk_etag(position, grant.audience, body, streams)
        headers = {hdrs.ETAG: etag, hdrs.CACHE_CONTROL: _BULK_CACHE}
        if etag_matches(request.headers.get(hdrs.IF_NONE_MATCH), etag):
            return web.Response(status=304, headers=headers)
        flags = self.answers.bulk(grant.env, context, grant.audience)
        self.metrics.evaluations_total.inc(len(flags))
        payload = bulk_body(flags, streams)
        headers[hdrs.CONTENT_TYPE] = "application/json"
        return web.Response(body=payload, headers=headers)

    def _admit(self, request: web.Request) -> Grant | web.Response:
        """Rules 1 to 3: the request's grant, or the answer refusing it."""
        if not self.state.ready:
            return _unready(self._retry_after)
        credential = credential_from_headers(request.headers)
        grant = self.credentials.resolve(credential) if credential else None
        if grant is None:
            return web.Response(status=401)
        if grant.kind not in self.accepted:
            return web.Response(status=403)
        if self.limiter is not None:
            wait = self.limiter.take(grant.bucket, time.monotonic())
            if wait > 0:
                self.metrics.rate_limited_total.inc()
                return web.Response(
                    status=429, headers={hdrs.RETRY_AFTER: str(max(1, math.ceil(wait)))}
                )
        return grant

    async def _read_body(self, request: web.Request, key: str | None) -> bytes | web.Response:
        """Rule 4: the body, or 413 when it is larger than allowed."""
        limit = self.settings.ofrep_max_body_bytes
        length = request.content_length
        if length is None or length <= limit:
            content = request.content
            try:
                if content.is_eof():  # all of it arrived (a small body, usually): no awaits
                    body = content.read_nowait()
                else:
                    body = await request.read()
            except web.HTTPRequestEntityTooLarge:  # chunked, over aiohttp's own limit
                body = None
            if body is not None and len(body) <= limit:
                return body
        response = _failure(
            413, "GENERAL", f"the request body is larger than {limit} bytes", key=key
        )
        response.force_close()  # the rest of the body is not read
        return response

    async def _caught_up(self, request: web.Request, env: str) -> Environment | None:
        """Rule 6: ``env`` once this relay reached the position a notice named."""
        state = self.state
        environment = state.environments.get(env)
        hint = parse_position(request.query.get("flagConfigEtag"))
        if environment is None or hint is None or hint.epoch != state.epoch:
            return environment
        if state.consumed(environment.partition) < hint.offset:
            # Answered after the wait even if still behind: a later notice follows.
            await state.wait_consumed(
                environment.partition, hint.offset, self.settings.catchup_wait
            )
            environment = state.environments.get(env)
        if environment is None or environment.deleted:
            return None
        return environment

    def _event_streams(self, request: web.Request, env: str) -> bytes:
        origin = self.settings.public_url or f"{request.scheme}://{request.host}"
        token = self.credentials.notice_token(env) or ""
        cached = self._streams.get((env, origin))
        if cached is not None and cached[0] == token:
            return cached[1]
        url = f"{origin}{NOTICES_PATH}?token={token}"
        streams = event_streams_json(url, self.settings.ofrep_inactivity_delay)
        if len(self._streams) > 10_000:  # bounded whatever Host headers clients send
            self._streams.clear()
        self._streams[(env, origin)] = (token, streams)
        return streams

    # --- notices --------------------------------------------------------------------------

    async def _notices(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        if not state.ready:
            return _unready(self._retry_after)
        token = request.query.get("token")
        env = token_environment(token)
        expected = self.credentials.notice_token(env) if env is not None else None
        environment = state.environments.get(env) if env is not None else None
        if (
            token is None
            or expected is None
            or environment is None
            or environment.deleted
            or not hmac.compare_digest(token.encode(), expected.encode())
        ):
            return web.Response(status=401)
        if not self.hub.can_accept():
            return _unready(self._retry_after, "this relay accepts no more streams right now")
        last = parse_position(request.headers.get("Last-Event-ID"))
        behind = (
            last is not None
            and last.epoch == state.epoch
            and state.consumed(environment.partition) < last.offset
        )
        if behind and last is not None:
            caught_up = await state.wait_consumed(
                environment.partition, last.offset, self.settings.catchup_wait
            )
            current = state.environments.get(environment.key)
            if not caught_up or current is None or current.deleted:
                return _unready(self._retry_after, "this relay is behind the stream")
            environment = current
        initial = notice_event(str(state.position(environment)))
        # No await between the position above and the hub registering the stream.
        response: web.StreamResponse = await self.hub.serve_stream(
            request,
            env=environment.key,
            stream="ofrep",
            initial=initial,
            start_offset=environment.offset,
        )
        return response

    # --- metrics --------------------------------------------------------------------------

    def _done(self, route: str, status: int, began: float) -> None:
        self._timers[route].observe(time.perf_counter() - began)
        self._count(route, status)

    def _count(self, route: str, status: int) -> None:
        counter = self._counters.get((route, status))
        if counter is None:
            counter = self._counters[(route, status)] = self.metrics.requests_total.labels(
                route=route, code=str(status)
            )
        counter.inc()


def _failure(status: int, code: ErrorCode, details: str, *, key: str | None = None) -> web.Response:
    return web.Response(
        status=status, body=encode_failure(code, details, key=key), headers=_JSON_NO_STORE
    )


def _unready(retry_after: dict[str, str], details: str | None = None) -> web.Response:
    details = details or "the relay is still reading the flag state; retry shortly"
    return web.json_response(
        {"errorDetails": details}, status=503, headers={**retry_after, **_NO_STORE}
    )


def register(
    app: web.Application,
    settings: RelaySettings,
    state: State,
    hub: Any,
    metrics: RelayMetrics,
) -> OfrepRoutes:
    """Add the OFREP routes, their CORS policy and metrics to a relay application."""
    routes = OfrepRoutes(settings, state, hub, metrics)
    policy = cors.CorsPolicy.from_origins(
        settings.ofrep_cors_origins.split(","),
        methods=("GET", "POST"),
        request_headers=CORS_POLICY_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
    )
    cors.install(app, PREFIX, policy)
    app.router.add_post(BULK_PATH, routes.evaluate_bulk)
    app.router.add_post(FLAG_PATH, routes.evaluate_flag)
    app.router.add_get(NOTICES_PATH, routes.notices, allow_head=False)
    return routes
