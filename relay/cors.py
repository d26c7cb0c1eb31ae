"""Cross-origin resource sharing (CORS) for the relay's browser-facing routes.

Rules (Fetch standard, "CORS protocol"):

1. A route family under one path prefix has one ``CorsPolicy``. ``install`` answers every
   preflight (``OPTIONS`` with ``Access-Control-Request-Method``) under the prefix with 204
   and the policy's allowed methods, headers and max-age, and adds
   ``Access-Control-Allow-Origin`` and ``Access-Control-Expose-Headers`` to every other
   response under the prefix (errors and event streams included), so a browser can read
   answers, error codes, ``ETag`` and ``Retry-After``.
2. Origins: ``*`` (the default) allows any origin without credentials (cookies are never
   needed: credentials travel in headers the policy allows). A list of origins allows exactly
   those: the request's ``Origin`` is echoed when listed, with ``Vary: Origin``; an origin not
   listed gets no CORS header at all, so the browser refuses the answer.
3. Preflights carry no credentials, so the policy cannot depend on the environment; a
   per-environment origin list (DESIGN.md §11 for the client-side routes) can wrap
   ``CorsPolicy.allow_origin`` with the environment's list once the request is authenticated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import hdrs, web

__all__ = ["CorsPolicy", "install"]


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Who may call a route family from a browser, and with what."""

    origins: frozenset[str] | None = None  # None: any origin ("*")
    methods: tuple[str, ...] = ("GET", "POST")
    request_headers: tuple[str, ...] = ("Content-Type",)
    expose_headers: tuple[str, ...] = ()
    max_age: int = 600

    @classmethod
    def from_origins(cls, origins: Iterable[str], **kwargs: object) -> CorsPolicy:
        """``origins`` as configured: ``*`` anywhere in it means any origin."""
        listed = frozenset(o.strip().rstrip("/") for o in origins if o.strip())
        return cls(None if "*" in listed else listed, **kwargs)  # type: ignore[arg-type]

    def allow_origin(self, origin: str | None) -> dict[str, str]:
        """The origin headers for a request from ``origin`` (empty: not allowed)."""
        if self.origins is None:
            return {hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: "*"}
        if origin is not None and origin in self.origins:
            return {hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin, hdrs.VARY: "Origin"}
        return {}

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers for an actual (non-preflight) response."""
        headers = self.allow_origin(origin)
        if headers and self.expose_headers:
            headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(self.expose_headers)
        return headers

    def preflight(self, request: web.Request) -> web.Response:
        """The 204 answer to a preflight request."""
        headers = self.allow_origin(request.headers.get(hdrs.ORIGIN))
        if headers:
            headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ", ".join(self.methods)
            headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ", ".join(self.request_headers)
            headers[hdrs.ACCESS_CONTROL_MAX_AGE] = str(self.max_age)
        return web.Response(status=204, headers=headers)


def install(app: web.Application, prefix: str, policy: CorsPolicy) -> None:
    """Apply ``policy`` to every route of ``app`` under ``prefix`` (rule 1).

    Call before the routes under ``prefix`` are added: the preflight route is a catch-all
    ``OPTIONS`` for the prefix.
    """

    async def preflight(request: web.Request) -> web.Response:
        return policy.preflight(request)

    any_origin = policy.response_headers(None) if policy.origins is None else None

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith(prefix) and request.method != hdrs.METH_OPTIONS:
            if any_origin is not None:  # the same headers for every request: built once
                response.headers.update(any_origin)
            else:
                origin = request.headers.get(hdrs.ORIGIN)
                response.headers.update(policy.response_headers(origin))

    app.router.add_route(hdrs.METH_OPTIONS, prefix.rstrip("/") + "/{tail:.*}", preflight)
    app.on_response_prepare.append(add_headers)
