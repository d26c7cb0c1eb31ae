"""What the OFREP tests share: an environment with every credential kind, a catalogue of flags
covering each case the providers must see, and an HTTP client that validates every response
against the OFREP spec (ofrep_schema.py) before a test looks at it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from ofrep_schema import ofrep_schema
from relay_support import flag, item_envelope

from protocol.envelope import Envelope
from protocol.environment import CredentialHash, EnvironmentRecord, hash_secret
from protocol.evaluation import CompiledEnvironment, EvaluationResult, parse_context

ENV = "ofrep"
SDK_KEY = "sdk-0f0f0f0f-1111-2222-3333-444444444444"
MOBILE_KEY = "mob-0f0f0f0f-1111-2222-3333-444444444444"
CLIENT_ID = "0f0f0f0f0f0f0f0f0f0f0f0f"
OTHER_ENV = "other"
OTHER_SDK_KEY = "sdk-99999999-1111-2222-3333-444444444444"

FLAG_PATH = "/ofrep/v1/evaluate/flags/{key}"
BULK_PATH = "/ofrep/v1/evaluate/flags"

BROWSER = {"usingEnvironmentId": True, "usingMobileKey": True}
MOBILE_ONLY = {"usingEnvironmentId": False, "usingMobileKey": True}
HALF_AND_HALF = [{"variation": 0, "weight": 50_000}, {"variation": 1, "weight": 50_000}]


def env_record_envelope(
    env: str = ENV,
    *,
    sdk_keys: tuple[str, ...] = (SDK_KEY,),
    mobile_keys: tuple[str, ...] = (MOBILE_KEY,),
    client_side_id: str = CLIENT_ID,
    version: int = 1,
) -> Envelope:
    record = EnvironmentRecord(
        key=env,
        name=f"Environment {env}",
        version=version,
        sdk_keys=tuple(CredentialHash(hash_secret(k)) for k in sdk_keys),
        mobile_keys=tuple(CredentialHash(hash_secret(k)) for k in mobile_keys),
        client_side_id=client_side_id,
    )
    return Envelope(
        kind="env",
        env=env,
        key=env,
        version=version,
        published_ms=0,
        actor="test",
        item=record.to_json(),
    )


def catalogue() -> dict[str, dict[str, Any]]:
    """Every case: value types, targets, rules, rollouts, experiments, off, prerequisites,
    audiences and a malformed flag. Keys are the flag keys."""
    flags = [
        flag("bool-flag", 1, clientSideAvailability=BROWSER),
        flag(
            "string-flag",
            1,
            variations=["blue", "green", "red"],
            variationNames=["control", "treatment-a", ""],
            targets=[{"values": ["vip-user"], "variation": 2}],
            clientSideAvailability=BROWSER,
        ),
        flag(
            "int-flag",
            1,
            variations=[1, 5, 10],
            rules=[
                {
                    "id": "r-example",
                    "variation": 1,
                    "clauses": [{"attribute": "email", "op": "endsWith", "values": ["@ex.com"]}],
                }
            ],
        ),
        flag("float-flag", 1, variations=[0.25, 0.75]),
        flag(
            "object-flag",
            1,
            variations=[{"theme": "dark", "size": 3}, {"theme": "light", "tags": ["a"]}],
            fallthrough={"variation": 1},
        ),
        flag(
            "rollout-flag",
            1,
            fallthrough={"rollout": {"variations": HALF_AND_HALF}},
            clientSideAvailability=BROWSER,
        ),
        flag(
            "experiment-flag",
            1,
            variations=["a", "b"],
            rules=[
                {
                    "id": "r-exp",
                    "rollout": {
                        "kind": "experiment",
                        "variations": [{"variation": 1, "weight": 100_000}],
                    },
                    "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
                }
            ],
        ),
        flag(
            "org-flag",
            1,
            variations=["default", "acme-only"],
            contextTargets=[{"contextKind": "org", "values": ["acme"], "variation": 1}],
        ),
        flag("off-flag", 1, on=False, clientSideAvailability=BROWSER),
        flag("off-no-variation", 1, on=False, offVariation=None),
        flag("prereq-flag", 1, prerequisites=[{"key": "off-flag", "variation": 0}]),
        flag("mobile-flag", 1, variations=["m1", "m2"], clientSideAvailability=MOBILE_ONLY),
        flag("malformed-flag", 1, variations="not a list"),
    ]
    return {str(f["key"]): f for f in flags}


def catalogue_envelopes(env: str = ENV) -> list[Envelope]:
    return [item_envelope(env, "flag", f) for f in catalogue().values()]


def expected(key: str, context: Mapping[str, Any]) -> EvaluationResult:
    """What the LaunchDarkly engine gives for ``key`` and a LaunchDarkly ``context``."""
    compiled = CompiledEnvironment.from_items(catalogue())
    return compiled.evaluate(key, parse_context(dict(context)))


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    json: Any


class OfrepClient:
    """OFREP requests over real HTTP; every response is checked against the spec."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.schema = ofrep_schema()

    async def flag(
        self,
        key: str,
        context: Any = None,
        *,
        credential: str | None = SDK_KEY,
        header: str = "Authorization",
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        path = FLAG_PATH.replace("{key}", key)
        return await self._post(FLAG_PATH, path, context, credential, header, raw, headers)

    async def bulk(
        self,
        context: Any = None,
        *,
        credential: str | None = SDK_KEY,
        header: str = "Authorization",
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        query: str = "",
    ) -> Answer:
        return await self._post(
            BULK_PATH, BULK_PATH + query, context, credential, header, raw, headers
        )

    async def _post(
        self,
        spec_path: str,
        path: str,
        context: Any,
        credential: str | None,
        header: str,
        raw: bytes | None,
        extra: Mapping[str, str] | None,
    ) -> Answer:
        headers = {"Content-Type": "application/json", **(extra or {})}
        if credential is not None:
            headers[header] = f"Bearer {credential}" if header == "Authorization" else credential
        body = raw if raw is not None else json.dumps({"context": context}).encode()
        async with self.session.post(self.base + path, data=body, headers=headers) as response:
            payload = await response.read()
            parsed = self.schema.check_response(
                "POST", spec_path, response.status, response.headers, payload
            )
            return Answer(response.status, response.headers, payload, parsed)


class ValidatingProxy:
    """A reverse proxy in front of a relay that checks every OFREP answer against the spec
    (``OfrepSchema.check_response``) on its way to a real provider, so the providers' own
    traffic is validated too. Failures are collected in ``failures``; ``checked`` counts."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.checked = 0
        self.failures: list[str] = []
        self.url = ""
        self._runner: Any = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ValidatingProxy:
        from aiohttp import web
        from relay_support import free_port

        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
        assert self._session is not None
        await self._session.close()

    async def _forward(self, request: Any) -> Any:
        from aiohttp import web

        assert self._session is not None
        body = await request.read()
        skip = {"host", "content-length", "transfer-encoding", "connection"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        async with self._session.request(
            request.method, self.target + request.path_qs, data=body, headers=headers
        ) as response:
            payload = await response.read()
            path = request.path
            spec_path = BULK_PATH if path == BULK_PATH else FLAG_PATH
            try:
                self.schema.check_response(
                    request.method, spec_path, response.status, response.headers, payload
                )
                self.checked += 1
            except Exception as exc:  # reported by the test, with the response
                self.failures.append(f"{request.method} {path} {response.status}: {exc!r}")
            kept = {
                k: v
                for k, v in response.headers.items()
                if k.lower() not in {"content-length", "transfer-encoding", "connection"}
            }
            return web.Response(status=response.status, body=payload, headers=kept)

    @property
    def schema(self) -> Any:
        return ofrep_schema()
