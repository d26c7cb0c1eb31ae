"""The relay's HTTP application: routes, SDK-key auth and the resumption decision.

Endpoints (DESIGN.md §6, operator docs in docs/relay.md):
``GET /all`` and ``GET /flags`` (SSE streams, handed to the hub), ``GET /sdk/latest-all``
(polling, ETag), ``GET /status``, ``/livez``, ``/readyz``, ``/metrics``.

Resumption rules (DESIGN.md §4), decided here for every stream request, in this order:
1. Not bootstrapped yet -> 503 + Retry-After. Unknown or expired SDK key -> 401 (SDKs then
   stop retrying). Hub full or draining -> 503 + Retry-After.
2. ``Last-Event-ID`` parses, and its epoch is this relay's epoch:
   - this relay consumed the environment's partition at least up to X: the stream starts
     with the environment's items whose offset is > X as patch/delete events (often
     nothing) and no ``put``;
   - otherwise the request is held until the relay has consumed X (at most
     ``catchup_wait`` seconds), then as above; still behind -> 503 + Retry-After. Older
     state than the client has is never sent. Exception: if Kafka (reached recently, so
     the relay is not stale) has no offset X at all, the position cannot exist in this log
     (offsets rewound by an unclean failover, or a forged id) and the client gets a full
     ``put`` instead of being refused forever.
3. Anything else (no id, malformed id, other epoch) -> a full ``put``.
The initial bytes are computed and handed to ``Hub.serve_stream`` with no ``await`` in
between, so no change can fall between the snapshot and the registration.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from importlib import metadata
from typing import Any, Literal

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from protocol.position import parse_position
from relay.accesslog import ACCESS_LOG, RedactingAccessLogger
from relay.config import RelaySettings
from relay.credentials import sdk_key_from_header
from relay.metrics import CONTENT_TYPE, RelayMetrics
from relay.ofrep import register as register_ofrep
from relay.source import Follower, RecordSource
from relay.state import Environment, State, catchup_events

log = logging.getLogger("flagstream.relay.app")

STATE_KEY = web.AppKey("relay_state", State)
FOLLOWER_KEY = web.AppKey("relay_follower", Follower)
METRICS_KEY = web.AppKey("relay_metrics", RelayMetrics)
SETTINGS_KEY = web.AppKey("relay_settings", RelaySettings)
HUB_KEY = web.AppKey("relay_hub", Any)

try:
    VERSION = metadata.version("flagstream")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    VERSION = "0+unknown"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An RFC 9457 problem+json response (never carries a secret)."""
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    headers = {"Cache-Control": "no-store", **(headers or {})}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.Response(
        status=status,
        body=body.encode(),
        content_type="application/problem+json",
        headers=headers,
    )


# --- errors outside the handlers --------------------------------------------------------

_ROUTING_DETAILS = {
    404: "no such endpoint on this relay (streams: /all, /flags; polling: /sdk/latest-all)",
    405: "method not allowed here",
}


@web.middleware
async def problem_errors(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """aiohttp's own HTTP errors (404 no route, 405 wrong method, ...) as problem+json."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = _ROUTING_DETAILS.get(exc.status, exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            detail = f"{detail}; allowed: {exc.headers['Allow']}"
        kept = {k: exc.headers[k] for k in ("Allow", "Retry-After") if k in exc.headers}
        return problem(exc.status, exc.reason, detail, headers=kept)


# aiohttp answers requests its parser rejects (request line or header over the limit, bad
# syntax) itself, before any middleware: with a text/plain 400 whose body quotes the
# offending line (which may hold a secret, e.g. an Authorization header), and it logs the
# parser's exception with a traceback at ERROR. Connections of a relay app (recognised by
# the logger ``build_app`` passes to aiohttp) get a problem+json answer naming no value, and
# one DEBUG line instead. Everything else keeps aiohttp's behaviour.
HTTP_LOG = logging.getLogger("flagstream.relay.http")
_aiohttp_handle_error = RequestHandler.handle_error


def _relay_handle_error(
    self: RequestHandler,
    request: BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    if self.logger is not HTTP_LOG or not isinstance(exc, HttpProcessingError):
        return _aiohttp_handle_error(self, request, status, exc, message)
    reason = type(exc).__name__
    HTTP_LOG.debug("rejected a malformed HTTP request from %s (%s)", request.remote, reason)
    if request.writer.output_size > 0:
        raise ConnectionError("response already started; cannot send the error")
    if isinstance(exc, LineTooLong):
        detail = "the request line or a header is longer than this relay accepts"
    else:
        detail = "malformed HTTP request"
    code = status if 400 <= status < 500 else 400
    try:
        title = HTTPStatus(code).phrase
    except ValueError:
        title = "Bad Request"
    response = problem(code, title, detail)
    response.force_close()
    return response


RequestHandler.handle_error = _relay_handle_error  # type: ignore[method-assign]


class RelayHandlers:
    """Request handlers bound to one relay's state, hub and settings."""

    def __init__(
        self,
        settings: RelaySettings,
        state: State,
        follower: Follower,
        hub: Any,
        metrics: RelayMetrics,
    ) -> None:
        self.settings = settings
        self.state = state
        self.follower = follower
        self.hub = hub
        self.metrics = metrics

    # --- common gates -------------------------------------------------------------------

    def _not_ready(self) -> web.Response:
        self.metrics.connections_rejected_total.labels(reason="not_ready").inc()
        return problem(
            503,
            "Not Ready",
            "the relay is still reading the flag state; retry shortly",
            retry_after=self.settings.retry_after,
        )

    def _full(self) -> web.Response:
        self.metrics.connections_rejected_total.labels(reason="full").inc()
        return problem(
            503,
            "Service Unavailable",
            "this relay accepts no more streams right now; retry shortly",
            retry_after=self.settings.retry_after,
        )

    def _admit(self, request: web.Request) -> Environment | web.Response:
        """The request's environment once the state is ready and its SDK key is known."""
        if not self.state.ready:
            return self._not_ready()
        key = sdk_key_from_header(request.headers.get("Authorization"))
        env = self.state.credentials.resolve(key)
        environment = self.state.environments.get(env) if env is not None else None
        if environment is None or environment.deleted:
            self.metrics.connections_rejected_total.labels(reason="unauthorized").inc()
            return problem(401, "Unauthorized", "unknown or expired SDK key")
        return environment

    # --- streams ------------------------------------------------------------------------

    async def stream_all(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "all")

    async def stream_flags(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "flags")

    async def _stream(
        self, request: web.Request, stream: Literal["all", "flags"]
    ) -> web.StreamResponse:
        state = self.state
        environment = self._admit(request)
        if isinstance(environment, web.Response):
            return environment
        if not self.hub.can_accept():
            return self._full()
        last = parse_position(request.headers.get("Last-Event-ID"))
        resume = last is not None and last.epoch == state.epoch
        if resume and last is not None and state.consumed(environment.partition) < last.offset:
            # The client saw a relay further ahead: wait for this one to catch up.
            self.metrics.catchup_holds_total.inc()
            caught_up = await state.wait_consumed(
                environment.partition, last.offset, self.settings.catchup_wait
            )
            current = state.environments.get(environment.key)
            if current is None or state.epoch != last.epoch:  # state rebuilt meanwhile
                return self._not_ready()
            environment = current
            if not caught_up:
                if self._beyond_the_log(environment.partition, last.offset):
                    # Kafka itself has no such offset (e.g. offsets were rewound after an
                    # unclean failover): waiting cannot help, the client needs a full put.
                    log.info("Last-Event-ID beyond the log's end; sending a full put")
                    resume = False
                else:
                    self.metrics.connections_rejected_total.labels(reason="behind").inc()
                    return problem(
                        503,
                        "Service Unavailable",
                        "this relay has not yet reached the client's stream position",
                        retry_after=self.settings.retry_after,
                    )
            if not self.hub.can_accept():  # the hub may have filled up or started draining
                return self._full()
        if resume and last is not None:
            initial = catchup_events(environment.changes_after(last.offset), stream, last.epoch)
            self.metrics.resumptions_total.inc()
        else:
            initial = environment.put_event(stream, str(state.position(environment)))
            self.metrics.full_puts_total.inc()
        # No await between computing `initial` and the hub registering the connection.
        response: web.StreamResponse = await self.hub.serve_stream(
            request,
            env=environment.key,
            stream=stream,
            initial=initial,
            start_offset=environment.offset,
        )
        return response

    def _beyond_the_log(self, partition: int, offset: int) -> bool:
        """True if Kafka, recently reached, has no record at ``offset`` in ``partition``."""
        if self.follower.stale:
            return False  # our view of the log's end may be old: keep refusing, not rewinding
        high = self.state.high_watermarks.get(partition)
        return high is not None and offset >= high

    # --- polling ------------------------------------------------------------------------

    async def latest_all(self, request: web.Request) -> web.Response:
        environment = self._admit(request)
        if isinstance(environment, web.Response):
            return environment
        etag = f'"{self.state.position(environment)}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate"}
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            self.metrics.polling_requests_total.labels(code="304").inc()
            return web.Response(status=304, headers=headers)
        self.metrics.polling_requests_total.labels(code="200").inc()
        return web.Response(
            body=environment.polling_body(), content_type="application/json", headers=headers
        )

    # --- operations ---------------------------------------------------------------------

    async def livez(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        if getattr(self.hub, "draining", False):
            # Load balancers stop routing here while the streams are being drained.
            return self._unready({"status": "draining"})
        if self.state.ready:
            return web.json_response({"status": "ready"})
        return self._unready({"status": "bootstrapping", "lagRecords": self.state.lag()})

    def _unready(self, body: dict[str, Any]) -> web.Response:
        return web.json_response(
            body, status=503, headers={"Retry-After": str(self.settings.retry_after)}
        )

    async def status(self, request: web.Request) -> web.Response:
        state = self.state
        stale = self.follower.stale
        if not state.ready:
            overall = "bootstrapping"
        elif stale:
            overall = "stale"
        else:
            overall = "healthy"
        partitions = {
            str(p): {
                "consumedOffset": state.consumed(p),
                "highWatermark": state.high_watermarks.get(p),
            }
            for p in sorted(state.next_offsets)
        }
        positions = {
            env.key: str(state.position(env)) for env in state.iter_environments() if state.epoch
        }
        hub_stats: dict[str, Any] = {}
        try:
            hub_stats = dict(self.hub.stats())
        except Exception:  # status must answer even if the hub misbehaves
            log.exception("hub.stats() failed")
        body = {
            "status": overall,
            "version": VERSION,
            "ready": state.ready,
            "stale": stale,
            "topic": self.settings.topic,
            "epoch": state.epoch,
            "environments": len(state.environments),
            "connections": self.hub.connection_count(),
            "lagRecords": state.lag(),
            "kafka": {
                "connected": self.follower.connected and not stale,
                "lastError": self.follower.last_error,
            },
            "partitions": partitions,
            "positions": positions,
            "hub": hub_stats,
            "time": int(time.time() * 1000),
        }
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        self.metrics.consumer_lag_records.set(self.state.lag())
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [c.strip() for c in header.split(",")]
    return "*" in candidates or etag in candidates or f"W/{etag}" in candidates


def build_app(
    settings: RelaySettings,
    source: RecordSource,
    *,
    metrics: RelayMetrics | None = None,
    hub: Any = None,
) -> web.Application:
    """A relay application reading ``source``. The follower runs while the app runs.

    ``hub`` defaults to ``relay.hub.Hub(settings, metrics)``; every applied change is
    published to it.
    """
    metrics = metrics if metrics is not None else RelayMetrics()
    if hub is None:
        from relay.hub import Hub

        hub = Hub(settings, metrics)
    state = State(metrics)
    state.listeners.append(hub.publish)
    state.reset_listeners.append(hub.close_all)
    follower = Follower(
        source,
        state,
        metrics,
        stale_after=settings.stale_after,
        backoff_max=settings.reconnect_backoff_max,
    )
    handlers = RelayHandlers(settings, state, follower, hub, metrics)

    app = web.Application(
        middlewares=[problem_errors],
        handler_args={
            "max_line_size": settings.max_request_line,
            "max_field_size": settings.max_header_size,
            "logger": HTTP_LOG,  # marks the relay's connections, see _relay_handle_error
            # Whoever runs the app: secrets never reach an access log (relay.accesslog).
            "access_log_class": RedactingAccessLogger,
            "access_log": ACCESS_LOG if settings.access_log else None,
        },
    )
    app[SETTINGS_KEY] = settings
    app[METRICS_KEY] = metrics
    app[STATE_KEY] = state
    app[FOLLOWER_KEY] = follower
    app[HUB_KEY] = hub
    # Streams answer GET only: a HEAD must not register a stream with the hub.
    app.router.add_get("/all", handlers.stream_all, allow_head=False)
    app.router.add_get("/flags", handlers.stream_flags, allow_head=False)
    app.router.add_get("/sdk/latest-all", handlers.latest_all)
    app.router.add_get("/status", handlers.status)
    app.router.add_get("/livez", handlers.livez)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics_endpoint)
    from relay.clientside import register_client_routes  # client-side/mobile API family

    register_client_routes(app, handlers)
    register_ofrep(app, settings, state, hub, metrics)  # OpenFeature (OFREP), relay.ofrep

    async def start_follower(app: web.Application) -> None:
        follower.start()

    async def stop_follower(app: web.Application) -> None:
        await follower.stop()

    app.on_startup.append(start_follower)
    app.on_cleanup.append(stop_follower)
    return app
