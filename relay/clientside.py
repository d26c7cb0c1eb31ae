"""Client-side (browser) and mobile SDK endpoints: evaluated polling, evaluated streams, CORS.

Routes (DESIGN.md §11, LaunchDarkly's paths; operator docs in docs/client-side.md):

- client-side id in the path (JS): polling ``GET /sdk/evalx/{id}/contexts/{ctx}`` and
  ``REPORT /sdk/evalx/{id}/context``; streams ``GET /eval/{id}/{ctx}``, ``REPORT /eval/{id}``,
  ``GET /ping/{id}``;
- mobile key in ``Authorization``: polling ``GET /msdk/evalx/contexts/{ctx}`` and
  ``REPORT /msdk/evalx/context``; streams ``GET /meval/{ctx}``, ``REPORT /meval``,
  ``GET /mping``;
- SDK key in ``Authorization``: polling ``GET /sdk/evalx/contexts/{ctx}`` and
  ``REPORT /sdk/evalx/context`` (every flag, as a server-side SDK sees them).

``{ctx}`` is base64url context JSON; ``users/{ctx}`` and ``user`` are accepted for
``contexts/{ctx}`` and ``context``, as the Relay Proxy does. Events: ``POST
/events/bulk/{id}``, ``/events/diagnostic/{id}``, ``/mobile``, ``/mobile/events``,
``/mobile/events/bulk``, ``/mobile/events/diagnostic`` answer 202 and are counted, not
forwarded. ``GET /sdk/goals/{id}`` answers ``[]``.

Rules, in the order a request meets them:

1. Not bootstrapped → 503 + Retry-After. Credentials: an unknown client-side id → 404 (ids are
   public; no retry can help); an unknown or expired mobile or SDK key → 401. An
   environment's JS routes answer CORS for its ``allowedOrigins`` (``protocol.clientside``),
   preflight ``OPTIONS`` included, errors included (so a page can read them). Before
   bootstrap ends a preflight is answered 204 for any origin, without ``Max-Age``, so the
   request itself meets its 503 rather than failing as a CORS error.
2. The context: GET takes base64url JSON from the path, REPORT a JSON body with
   ``Content-Type: application/json`` (else 415). Over ``max_context_bytes`` → 413; not
   base64url, not JSON, not an object, no key... → 400 naming the problem.
3. Secure mode (JS routes of an environment with ``secureMode``): ``?h=`` must be the
   context's hash: missing → 400, wrong → 403.
4. Polling answers the evaluated flags the audience may see (``relay.clientview``), with
   reasons if ``?withReasons=true``, and an ETag of (position, context, reasons):
   ``If-None-Match`` → 304.
5. Streams: hub full or draining → 503. ``/ping/{id}``, ``/mping`` and every client stream of
   an environment in ``ping`` mode are ping streams: a ``ping`` on connect and after every
   change (LaunchDarkly's Relay Proxy behaviour). Otherwise an evaluated stream: with a
   ``Last-Event-ID`` of this epoch, the relay holds the request until it has consumed that
   position (as for ``/all``, ``relay.app`` rule 2) and sends only the catch-up
   (``relay.clientview`` rule 4); else a ``put`` of the evaluated flags. The initial bytes are
   computed and handed to the hub with no ``await`` in between, so no change is lost.
6. When an environment's client-side settings change (client-side id, secure mode and its
   secret, allowed origins, stream mode), its open client streams are closed (reason
   ``settings``): their SDKs reconnect at once and are admitted, or refused, under the new
   settings. Key rotations close nothing (as for ``/all``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiohttp import web

from protocol import clientside
from protocol.environment import EnvironmentRecord
from protocol.evaluation import Context, ContextError, parse_context_base64, parse_context_json
from protocol.evaluation.environment import SdkKind
from protocol.position import Position, parse_position
from relay.app import RelayHandlers, _etag_matches, problem
from relay.clientview import ClientViews
from relay.credentials import sdk_key_from_header
from relay.evalstream import GroupSpec
from relay.state import Environment

__all__ = ["ClientSideHandlers", "register_client_routes"]

log = logging.getLogger("flagstream.relay.clientside")

Sdk = Literal["js", "mobile", "server"]
_AUDIENCE: Final[dict[Sdk, SdkKind]] = {"js": "client", "mobile": "mobile", "server": "server"}
_JSON_TYPES: Final = frozenset({"application/json"})
_JS_METHODS: Final = "GET,REPORT,POST,OPTIONS"
_TRUE: Final = frozenset({"true", "1"})
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+={0,2}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Refused(Exception):
    """A request answered with an error response (already built, CORS headers included)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass(slots=True)
class _Target:
    """Whom a request is for: the environment, its record, the SDK family, CORS headers."""

    sdk: Sdk
    environment: Environment
    record: EnvironmentRecord
    cors: dict[str, str]


class ClientSideHandlers:
    """The handlers of the client-side and mobile routes of one relay (module rules)."""

    def __init__(self, base: RelayHandlers) -> None:
        self.base = base
        self.state = base.state
        self.metrics = base.metrics
        self.hub = base.hub
        self.settings = base.settings
        self.views = ClientViews(base.state)
        self._max_context = base.settings.max_context_bytes
        self._request_counters: dict[tuple[str, str, int], Any] = {}
        # Gauge children per (sdk, mode): looked up once, not per stream.
        self._gauges = {
            (sdk, mode): self.metrics.client_streams.labels(sdk=sdk, mode=mode)
            for sdk in ("js", "mobile")
            for mode in ("evaluated", "ping")
        }

    # --- rule 1: readiness, credentials, CORS ---------------------------------------------

    def _cors(self, request: web.Request, record: EnvironmentRecord | None) -> dict[str, str]:
        origins = record.allowed_origins if record is not None else ("*",)
        return clientside.cors_headers(
            request.headers.get("Origin"), origins, _JS_METHODS, preflight=False
        )

    def _target(self, request: web.Request, sdk: Sdk) -> _Target:
        state = self.state
        record: EnvironmentRecord | None = None
        env_key: str | None = None
        if sdk == "js":
            record = state.credentials.resolve_client_side_id(request.match_info["envId"])
            cors = self._cors(request, record)
            if not state.ready:
                raise _Refused(self._with(self.base._not_ready(), cors))
            if record is None:
                self.metrics.connections_rejected_total.labels(reason="unauthorized").inc()
                raise _Refused(problem(404, "Not Found", "unknown client-side id", headers=cors))
            env_key = record.key
        else:
            cors = {}
            if not state.ready:
                raise _Refused(self.base._not_ready())
            key = sdk_key_from_header(request.headers.get("Authorization"))
            if sdk == "mobile":
                env_key = state.credentials.resolve_mobile(key)
            else:
                env_key = state.credentials.resolve(key)
            record = state.credentials.record(env_key) if env_key is not None else None
            if record is None:
                self.metrics.connections_rejected_total.labels(reason="unauthorized").inc()
                what = "mobile key" if sdk == "mobile" else "SDK key"
                raise _Refused(problem(401, "Unauthorized", f"unknown or expired {what}"))
        environment = state.environments.get(record.key)
        if environment is None or environment.deleted:
            status, title = (404, "Not Found") if sdk == "js" else (401, "Unauthorized")
            raise _Refused(problem(status, title, "this environment was deleted", headers=cors))
        return _Target(sdk, environment, record, cors)

    @staticmethod
    def _with(response: web.Response, headers: dict[str, str]) -> web.Response:
        response.headers.update(headers)
        return response

    # --- rule 2: the context -------------------------------------------------------------

    async def _context(self, request: web.Request, target: _Target) -> Context:
        cors = target.cors
        limit = self._max_context
        if request.method == "REPORT":
            mime = request.content_type.lower()
            if mime not in _JSON_TYPES:
                raise _Refused(
                    problem(
                        415,
                        "Unsupported Media Type",
                        "a REPORT body is the context as JSON: send Content-Type: application/json",
                        headers=cors,
                    )
                )
            if request.content_length is not None and request.content_length > limit:
                raise _Refused(self._too_large(cors))
            body = await request.read()
            if len(body) > limit:
                raise _Refused(self._too_large(cors))
            parse: Callable[[], Context] = lambda: parse_context_json(body)  # noqa: E731
        else:
            encoded = request.match_info["ctx"]
            if len(encoded) > limit * 4 // 3 + 4:
                raise _Refused(self._too_large(cors))
            if not _BASE64URL.fullmatch(encoded):
                # Python's decoder would skip stray characters; say what is wrong instead.
                raise _Refused(
                    problem(
                        400,
                        "Bad Request",
                        "invalid context: the path segment is not base64url "
                        "(A-Z a-z 0-9 - _, optional = padding)",
                        headers=cors,
                    )
                )
            parse = lambda: parse_context_base64(encoded)  # noqa: E731
        try:
            return parse()
        except ContextError as exc:
            raise _Refused(
                problem(400, "Bad Request", f"invalid context: {exc}", headers=cors)
            ) from None

    def _too_large(self, cors: dict[str, str]) -> web.Response:
        return problem(
            413,
            "Payload Too Large",
            f"the context is larger than this relay accepts ({self._max_context} bytes of "
            "JSON; FLAGSTREAM_RELAY_MAX_CONTEXT_BYTES)",
            headers=cors,
        )

    # --- rule 3: secure mode --------------------------------------------------------------

    def _check_secure_mode(self, request: web.Request, target: _Target, context: Context) -> None:
        record = target.record
        if target.sdk != "js" or not record.secure_mode or record.secure_mode_secret is None:
            return
        given = request.query.get("h")
        if not given:
            raise _Refused(
                problem(
                    400,
                    "Bad Request",
                    "this environment is in secure mode: pass the context's hash as ?h= "
                    "(hex HMAC-SHA256 of its fully-qualified key under the environment's "
                    "secure-mode secret)",
                    headers=target.cors,
                )
            )
        if not clientside.valid_secure_mode_hash(
            record.secure_mode_secret, context.fully_qualified_key, given
        ):
            raise _Refused(
                problem(
                    403,
                    "Forbidden",
                    "the secure-mode hash (?h=) does not match this context",
                    headers=target.cors,
                )
            )

    # --- rule 4: polling -----------------------------------------------------------------

    def poll(self, sdk: Sdk) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                target = self._target(request, sdk)
                context = await self._context(request, target)
                self._check_secure_mode(request, target, context)
            except _Refused as refused:
                self._count(sdk, "poll", refused.response.status)
                return refused.response
            with_reasons = request.query.get("withReasons", "").lower() in _TRUE
            state = self.state
            # Right after a bootstrap: this environment compiled first, in slices.
            await state.evaluation.compiled(target.environment.key)
            environment = state.environments.get(target.environment.key, target.environment)
            position = state.position(environment)
            etag = f'"{position}:{context.fingerprint[:20]}{":r" if with_reasons else ""}"'
            headers = {
                **target.cors,
                "ETag": etag,
                "Cache-Control": "private, max-age=0, must-revalidate",
            }
            if _etag_matches(request.headers.get("If-None-Match"), etag):
                self._count(sdk, "poll", 304)
                return web.Response(status=304, headers=headers)
            view = self.views.view(environment.key)
            body = (
                view.all_flags(context, _AUDIENCE[sdk], with_reasons) if view is not None else b"{}"
            )
            self._count(sdk, "poll", 200)
            return web.Response(body=body, content_type="application/json", headers=headers)

        return handler

    # --- rule 5: streams -----------------------------------------------------------------

    def stream(self, sdk: Sdk, *, ping_only: bool = False) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                target = self._target(request, sdk)
                context: Context | None = None
                if not ping_only:
                    context = await self._context(request, target)
                    self._check_secure_mode(request, target, context)
                if not self.hub.can_accept():
                    raise _Refused(self._with(self.base._full(), target.cors))
                if context is None or target.record.client_stream_mode == "ping":
                    response = await self._ping_stream(request, target)
                else:
                    response = await self._evaluated_stream(request, target, context)
            except _Refused as refused:
                self._count(sdk, "stream", refused.response.status)
                return refused.response
            return response

        return handler

    async def _ping_stream(self, request: web.Request, target: _Target) -> web.StreamResponse:
        environment = target.environment
        self._count(target.sdk, "stream", 200)  # counted when it starts: streams last
        response: web.StreamResponse = await self.hub.serve_stream(
            request,
            env=environment.key,
            stream="ping",
            initial=clientside.PING_EVENT,
            start_offset=environment.offset,
            headers=target.cors,
            gauge=self._gauges[(target.sdk, "ping")],
        )
        return response

    async def _evaluated_stream(
        self, request: web.Request, target: _Target, context: Context
    ) -> web.StreamResponse:
        state = self.state
        environment = target.environment
        # Right after a bootstrap: this environment compiled first, in slices.
        await state.evaluation.compiled(environment.key)
        last = parse_position(request.headers.get("Last-Event-ID"))
        resume = last is not None and last.epoch == state.epoch
        if resume and last is not None and state.consumed(environment.partition) < last.offset:
            self.metrics.catchup_holds_total.inc()
            caught_up = await state.wait_consumed(
                environment.partition, last.offset, self.settings.catchup_wait
            )
            current = state.environments.get(environment.key)
            if current is None or current.deleted or state.epoch != last.epoch:
                raise _Refused(self._with(self.base._not_ready(), target.cors))
            environment = current
            if not caught_up:
                if self.base._beyond_the_log(environment.partition, last.offset):
                    resume = False
                else:
                    self.metrics.connections_rejected_total.labels(reason="behind").inc()
                    raise _Refused(
                        problem(
                            503,
                            "Service Unavailable",
                            "this relay has not yet reached the client's stream position",
                            retry_after=self.settings.retry_after,
                            headers=target.cors,
                        )
                    )
            if not self.hub.can_accept():
                raise _Refused(self._with(self.base._full(), target.cors))
        with_reasons = request.query.get("withReasons", "").lower() in _TRUE
        audience = _AUDIENCE[target.sdk]
        view = self.views.view(environment.key)
        assert state.epoch is not None
        if resume and last is not None:
            initial = (
                view.catchup(context, audience, with_reasons, environment, last.offset, last.epoch)
                if view is not None
                else b""
            )
            self.metrics.resumptions_total.inc()
        else:
            flags = view.all_flags(context, audience, with_reasons) if view is not None else b"{}"
            initial = clientside.put_event(flags, str(Position(state.epoch, environment.offset)))
            self.metrics.full_puts_total.inc()
        self._count(target.sdk, "stream", 200)
        # No await between computing `initial` and the hub registering the stream.
        response: web.StreamResponse = await self.hub.serve_stream(
            request,
            env=environment.key,
            stream="eval",
            initial=initial,
            start_offset=environment.offset,
            headers=target.cors,
            group=GroupSpec(context, audience, with_reasons),
            gauge=self._gauges[(target.sdk, "evaluated")],
        )
        return response

    # --- events, goals, preflight --------------------------------------------------------

    def events(self, sdk: Sdk, kind: Literal["analytics", "diagnostic"]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                target = self._target(request, sdk)
            except _Refused as refused:
                return refused.response
            raw = await request.read()  # aiohttp's client_max_size bounds it (413 above)
            try:
                payload: Any = json.loads(raw) if raw.strip() else None
            except (ValueError, RecursionError):
                return problem(
                    400, "Bad Request", "the event payload is not valid JSON", headers=target.cors
                )
            if kind == "analytics" and not isinstance(payload, list):
                return problem(
                    400,
                    "Bad Request",
                    "an analytics event payload is a JSON array of events",
                    headers=target.cors,
                )
            self.metrics.sdk_event_payloads_total.labels(sdk=sdk, kind=kind).inc()
            if isinstance(payload, list):
                self.metrics.sdk_events_total.labels(sdk=sdk).inc(len(payload))
            return web.Response(status=202, headers=target.cors)

        return handler

    async def goals(self, request: web.Request) -> web.StreamResponse:
        try:
            target = self._target(request, "js")
        except _Refused as refused:
            return refused.response
        return web.Response(body=b"[]", content_type="application/json", headers=target.cors)

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        if not self.state.ready:
            # The origins are not known until bootstrap ends. A refused preflight is a CORS
            # error the SDK cannot read; this 204 lets the request reach its readable 503 +
            # Retry-After (rule 1), and without Max-Age the browser caches nothing from it.
            headers = clientside.cors_headers(
                request.headers.get("Origin"), ("*",), _JS_METHODS, preflight=True
            )
            headers.pop("Access-Control-Max-Age", None)
            return web.Response(status=204, headers=headers)
        record = self.state.credentials.resolve_client_side_id(request.match_info["envId"])
        origins = record.allowed_origins if record is not None else ("*",)
        headers = clientside.cors_headers(
            request.headers.get("Origin"), origins, _JS_METHODS, preflight=True
        )
        if record is None:
            return problem(404, "Not Found", "unknown client-side id", headers=headers)
        return web.Response(status=204, headers=headers)

    def _count(self, sdk: Sdk, request: str, code: int) -> None:
        child = self._request_counters.get((sdk, request, code))
        if child is None:
            child = self.metrics.client_requests_total.labels(
                sdk=sdk, request=request, code=str(code)
            )
            self._request_counters[(sdk, request, code)] = child
        child.inc()


def _client_settings(record: EnvironmentRecord) -> tuple[object, ...]:
    return (
        record.client_side_id,
        record.secure_mode,
        record.secure_mode_secret,
        record.allowed_origins,
        record.client_stream_mode,
    )


def register_client_routes(app: web.Application, base: RelayHandlers) -> ClientSideHandlers:
    """Add every client-side and mobile route to ``app`` (one call from ``relay.app``)."""
    h = ClientSideHandlers(base)
    state = base.state

    def env_source(env_key: str) -> tuple[Any, int, str]:
        environment = state.environments.get(env_key)
        return (
            state.evaluation.environment(env_key),
            environment.offset if environment is not None else -1,
            state.epoch or "",
        )

    h.hub.env_source = env_source

    def settings_changed(record: EnvironmentRecord, previous: EnvironmentRecord | None) -> None:
        # Rule 6: open client streams were admitted under the old settings.
        if (
            previous is not None
            and state.ready
            and _client_settings(record) != _client_settings(previous)
        ):
            closed = h.hub.close_client_streams(record.key)
            if closed:
                log.info("client settings changed: %d client streams reconnect", closed)

    def attach() -> None:
        # The state builds a new credential index when the topic's epoch changes.
        state.credentials.listeners.append(settings_changed)

    attach()
    state.reset_listeners.append(h.views.clear)
    state.reset_listeners.append(attach)
    r = app.router
    js_paths: list[str] = []

    def js(method: str, path: str, handler: Handler) -> None:
        r.add_route(method, path, handler)
        if path not in js_paths:
            js_paths.append(path)

    # SDK-key evalx first: literal segments win over the client-side-id patterns.
    for word in ("contexts", "users"):
        r.add_route("GET", f"/sdk/evalx/{word}/{{ctx}}", h.poll("server"))
        r.add_route("GET", f"/msdk/evalx/{word}/{{ctx}}", h.poll("mobile"))
        js("GET", f"/sdk/evalx/{{envId}}/{word}/{{ctx}}", h.poll("js"))
    for word in ("context", "user"):
        r.add_route("REPORT", f"/sdk/evalx/{word}", h.poll("server"))
        r.add_route("REPORT", f"/msdk/evalx/{word}", h.poll("mobile"))
        js("REPORT", f"/sdk/evalx/{{envId}}/{word}", h.poll("js"))
    js("GET", "/eval/{envId}/{ctx}", h.stream("js"))
    js("REPORT", "/eval/{envId}", h.stream("js"))
    js("GET", "/ping/{envId}", h.stream("js", ping_only=True))
    r.add_route("GET", "/meval/{ctx}", h.stream("mobile"))
    r.add_route("REPORT", "/meval", h.stream("mobile"))
    r.add_route("GET", "/mping", h.stream("mobile", ping_only=True))
    js("POST", "/events/bulk/{envId}", h.events("js", "analytics"))
    js("POST", "/events/diagnostic/{envId}", h.events("js", "diagnostic"))
    for path in ("/mobile", "/mobile/events", "/mobile/events/bulk"):
        r.add_route("POST", path, h.events("mobile", "analytics"))
    r.add_route("POST", "/mobile/events/diagnostic", h.events("mobile", "diagnostic"))
    js("GET", "/sdk/goals/{envId}", h.goals)
    for path in js_paths:
        r.add_route("OPTIONS", path, h.preflight)
    return h
