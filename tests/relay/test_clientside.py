"""Client-side and mobile polling over real HTTP: values, audiences, reasons, ETag, CORS,
secure mode, credentials, events and goals (relay/clientside.py rules 1-4)."""

from __future__ import annotations

import json

import aiohttp
import pytest
from client_support import (
    CLIENT_ID,
    ENV,
    MOBILE_KEY,
    SDK_KEY,
    SECRET,
    b64,
    client_relay,
    env_envelope,
    rollout,
    seed,
    targeted,
)
from relay_support import Backend, MemoryBackend, flag, metric

from flagstream.memlog import MemoryLog
from protocol.clientside import secure_mode_hash
from protocol.evaluation import CompiledEnvironment, parse_context

ALICE = {"kind": "user", "key": "alice"}
BOB = {"kind": "user", "key": "bob", "email": "bob@example.org"}
CAROL = {"key": "carol"}  # old user JSON


def memory() -> MemoryBackend:
    return MemoryBackend(MemoryLog(3))


async def standard(backend: Backend, **env: object) -> None:
    await seed(
        backend,
        env_envelope(**env),  # type: ignore[arg-type]
        flags=[
            targeted("banner", 1),
            rollout("split", 1),
            flag("server-only", 1),
            flag("mobile-only", 1, clientSideAvailability={"usingMobileKey": True}),
            flag("js-only", 1, clientSideAvailability={"usingEnvironmentId": True}),
        ],
    )


async def test_js_polling_evaluates_per_context(backend: Backend) -> None:
    await standard(backend)
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        results = {}
        for name, ctx in (("alice", ALICE), ("bob", BOB), ("carol", CAROL)):
            async with s.get(f"{relay.url}/sdk/evalx/{CLIENT_ID}/contexts/{b64(ctx)}") as r:
                assert r.status == 200, await r.text()
                assert r.headers["Content-Type"].startswith("application/json")
                results[name] = await r.json()
        # Audience: JS sees the flags usingEnvironmentId, never server-only or mobile-only.
        assert set(results["alice"]) == {"banner", "split", "js-only"}
        assert results["alice"]["banner"]["value"] is False  # target
        assert results["bob"]["banner"]["value"] is False  # rule
        assert results["carol"]["banner"]["value"] is True  # fallthrough
        banner = results["alice"]["banner"]
        assert banner["variation"] == 1 and banner["flagVersion"] == 1
        assert "reason" not in banner
        # The rollout gives each context its bucket (the engine is LaunchDarkly-exact,
        # tests/protocol/evaluation): the relay answers what the engine computes.
        engine = CompiledEnvironment.from_items([rollout("split", 1)])
        for name, ctx in (("alice", ALICE), ("bob", BOB), ("carol", CAROL)):
            expected = engine.evaluate("split", parse_context(ctx))
            assert results[name]["split"]["value"] == expected.value
            assert results[name]["split"]["variation"] == expected.variation


async def test_report_mobile_and_server_key_routes(backend: Backend) -> None:
    await standard(backend)
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        body = json.dumps(BOB)
        headers = {"Content-Type": "application/json"}
        async with s.request(
            "REPORT", f"{relay.url}/sdk/evalx/{CLIENT_ID}/context", data=body, headers=headers
        ) as r:
            assert r.status == 200
            js = await r.json()
        async with s.request(
            "REPORT",
            f"{relay.url}/msdk/evalx/context",
            data=body,
            headers={**headers, "Authorization": MOBILE_KEY},
        ) as r:
            assert r.status == 200
            mobile = await r.json()
        async with s.get(
            f"{relay.url}/msdk/evalx/contexts/{b64(BOB)}",
            headers={"Authorization": f"api_key {MOBILE_KEY}"},
        ) as r:
            assert r.status == 200
            assert await r.json() == mobile
        async with s.get(
            f"{relay.url}/sdk/evalx/contexts/{b64(BOB)}", headers={"Authorization": SDK_KEY}
        ) as r:
            assert r.status == 200
            server = await r.json()
    assert set(js) == {"banner", "split", "js-only"}
    assert set(mobile) == {"banner", "split", "mobile-only"}
    assert set(server) == {"banner", "split", "mobile-only", "js-only", "server-only"}
    assert js["banner"]["value"] is mobile["banner"]["value"] is server["banner"]["value"] is False


async def test_reasons_etag_and_versions() -> None:
    backend = memory()
    await standard(backend)
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        url = f"{relay.url}/sdk/evalx/{CLIENT_ID}/contexts/{b64(BOB)}"
        async with s.get(url + "?withReasons=true") as r:
            with_reasons = await r.json()
            etag_reasons = r.headers["ETag"]
        assert with_reasons["banner"]["reason"] == {
            "kind": "RULE_MATCH",
            "ruleIndex": 0,
            "ruleId": "r1",
        }
        async with s.get(url) as r:
            etag = r.headers["ETag"]
            plain = await r.json()
        assert etag != etag_reasons
        async with s.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        # version is the position of what the flag reads (offset + 1), flagVersion its own.
        assert plain["banner"]["version"] >= 1 and plain["banner"]["flagVersion"] == 1
        async with backend.producer() as p:
            from relay_support import item_envelope

            await p.send(item_envelope(ENV, "flag", targeted("banner", 2, on=False)))
        from relay_support import wait_until

        async def changed() -> bool:
            async with s.get(url, headers={"If-None-Match": etag}) as r:
                return r.status == 200

        await wait_until(changed)
        async with s.get(url) as r:
            after = await r.json()
        assert after["banner"]["value"] is False and after["banner"]["flagVersion"] == 2
        assert after["banner"]["version"] > plain["banner"]["version"]
        # A flag nothing changed keeps its version: no spurious change for the SDK.
        assert after["split"]["version"] == plain["split"]["version"]


async def test_cors_preflight_and_origins() -> None:
    backend = memory()
    await standard(backend, origins=["https://app.example.com"])
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        url = f"{relay.url}/sdk/evalx/{CLIENT_ID}/contexts/{b64(ALICE)}"
        preflight = {
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-launchdarkly-user-agent,x-launchdarkly-wrapper",
        }
        async with s.options(url, headers=preflight) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            allowed = r.headers["Access-Control-Allow-Headers"].lower()
            for h in (
                "x-launchdarkly-user-agent",
                "x-launchdarkly-wrapper",
                "x-launchdarkly-event-schema",
                "x-launchdarkly-payload-id",
                "x-launchdarkly-tags",
                "content-type",
                "cache-control",
            ):
                assert h in allowed
            assert "REPORT" in r.headers["Access-Control-Allow-Methods"]
        async with s.options(url, headers={**preflight, "Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        async with s.get(url, headers={"Origin": "https://app.example.com"}) as r:
            assert r.status == 200
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert r.headers["Vary"] == "Origin"
        async with s.get(url, headers={"Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        # Errors carry CORS headers too, so a page can read why.
        bad = f"{relay.url}/sdk/evalx/{CLIENT_ID}/contexts/%25%25"
        async with s.get(bad, headers={"Origin": "https://app.example.com"}) as r:
            assert r.status == 400
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


async def test_secure_mode_requires_the_hash() -> None:
    backend = memory()
    await standard(backend, secure_mode=True)
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        url = f"{relay.url}/sdk/evalx/{CLIENT_ID}/contexts/{b64(BOB)}"
        async with s.get(url) as r:
            assert r.status == 400
            assert "secure mode" in (await r.json())["detail"]
        async with s.get(url + "?h=" + secure_mode_hash(SECRET, "carol")) as r:
            assert r.status == 403
        async with s.get(url + "?h=" + secure_mode_hash(SECRET, "bob")) as r:
            assert r.status == 200
        multi = {"kind": "multi", "user": {"key": "u:1"}, "org": {"key": "o1"}}
        h = secure_mode_hash(SECRET, "org:o1:user:u%3A1")
        async with s.get(f"{relay.url}/sdk/evalx/{CLIENT_ID}/contexts/{b64(multi)}?h={h}") as r:
            assert r.status == 200
        # Mobile keys are secrets: secure mode is for client-side ids only.
        async with s.get(
            f"{relay.url}/msdk/evalx/contexts/{b64(BOB)}", headers={"Authorization": MOBILE_KEY}
        ) as r:
            assert r.status == 200


@pytest.mark.parametrize(
    ("path", "method", "headers", "data", "status", "detail"),
    [
        ("/sdk/evalx/{id}/contexts/!!!", "GET", {}, None, 400, "base64"),
        ("/sdk/evalx/{id}/contexts/" + b64([1, 2]), "GET", {}, None, 400, "object"),  # type: ignore[arg-type]
        ("/sdk/evalx/{id}/contexts/" + b64({"kind": "user"}), "GET", {}, None, 400, "key"),
        ("/sdk/evalx/{id}/contexts/bm90IGpzb24", "GET", {}, None, 400, "JSON"),
        (
            "/sdk/evalx/000000000000000000000000/contexts/" + b64(ALICE),
            "GET",
            {},
            None,
            404,
            "client-side id",
        ),
        (
            "/sdk/evalx/{id}/context",
            "REPORT",
            {"Content-Type": "text/plain"},
            b'{"key":"a"}',
            415,
            "application/json",
        ),
        (
            "/sdk/evalx/{id}/context",
            "REPORT",
            {"Content-Type": "application/json"},
            b'{"key":',
            400,
            "JSON",
        ),
        (
            "/sdk/evalx/{id}/context",
            "REPORT",
            {"Content-Type": "application/json"},
            b'{"key":"a","x":"' + b"y" * 20_000 + b'"}',
            413,
            "larger",
        ),
        (
            "/sdk/evalx/{id}/contexts/" + b64({"key": "a", "x": "y" * 5000}),
            "GET",
            {},
            None,
            413,
            "larger",
        ),
        (
            "/msdk/evalx/contexts/" + b64(ALICE),
            "GET",
            {"Authorization": "mob-nope"},
            None,
            401,
            "mobile key",
        ),
        ("/msdk/evalx/contexts/" + b64(ALICE), "GET", {}, None, 401, "mobile key"),
        (
            "/sdk/evalx/contexts/" + b64(ALICE),
            "GET",
            {"Authorization": MOBILE_KEY},
            None,
            401,
            "SDK key",
        ),
        ("/sdk/evalx/{id}/contexts/" + b64(ALICE), "POST", {}, b"{}", 405, "allowed"),
        ("/eval/{id}/" + b64(ALICE), "POST", {}, b"{}", 405, "allowed"),
        ("/eval/{id}/!!!", "GET", {}, None, 400, "base64"),
        ("/meval/" + b64(ALICE), "GET", {"Authorization": "mob-nope"}, None, 401, "mobile key"),
        ("/ping/000000000000000000000000", "GET", {}, None, 404, "client-side id"),
        (
            "/events/bulk/{id}",
            "POST",
            {"Content-Type": "application/json"},
            b"{not json",
            400,
            "JSON",
        ),
        (
            "/events/bulk/{id}",
            "POST",
            {"Content-Type": "application/json"},
            b'{"kind":"x"}',
            400,
            "array",
        ),
        ("/mobile", "POST", {"Authorization": "mob-nope"}, b"[]", 401, "mobile key"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    path: str,
    method: str,
    headers: dict[str, str],
    data: bytes | None,
    status: int,
    detail: str,
) -> None:
    backend = memory()
    await standard(backend)
    async with client_relay(backend, max_context_bytes=4096) as relay, aiohttp.ClientSession() as s:
        url = relay.url + path.replace("{id}", CLIENT_ID)
        async with s.request(method, url, headers=headers, data=data) as r:
            assert r.status == status, await r.text()
            assert r.headers["Content-Type"].startswith("application/problem+json")
            problem = await r.json()
            assert detail.lower() in problem["detail"].lower()
            assert "Traceback" not in problem["detail"]


async def test_events_and_goals_answer_202_and_are_counted() -> None:
    backend = memory()
    await standard(backend)
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        events = json.dumps([{"kind": "identify"}, {"kind": "custom", "key": "k"}])
        js_headers = {"Content-Type": "application/json", "Origin": "https://a.example"}
        async with s.post(
            f"{relay.url}/events/bulk/{CLIENT_ID}", data=events, headers=js_headers
        ) as r:
            assert r.status == 202
            assert r.headers["Access-Control-Allow-Origin"] == "https://a.example"
        async with s.post(
            f"{relay.url}/events/diagnostic/{CLIENT_ID}",
            data='{"kind":"diagnostic"}',
            headers=js_headers,
        ) as r:
            assert r.status == 202
        for path in ("/mobile", "/mobile/events", "/mobile/events/bulk"):
            async with s.post(
                relay.url + path, data=events, headers={"Authorization": MOBILE_KEY}
            ) as r:
                assert r.status == 202
        async with s.post(
            relay.url + "/mobile/events/diagnostic",
            data="{}",
            headers={"Authorization": MOBILE_KEY},
        ) as r:
            assert r.status == 202
        async with s.get(f"{relay.url}/sdk/goals/{CLIENT_ID}") as r:
            assert r.status == 200 and await r.json() == []
        m = relay.metrics
        name = "flagstream_relay_sdk_event_payloads_total"
        assert metric(m, name, {"sdk": "js", "kind": "analytics"}) == 1
        assert metric(m, name, {"sdk": "js", "kind": "diagnostic"}) == 1
        assert metric(m, name, {"sdk": "mobile", "kind": "analytics"}) == 3
        assert metric(m, name, {"sdk": "mobile", "kind": "diagnostic"}) == 1
        assert metric(m, "flagstream_relay_sdk_events_total", {"sdk": "mobile"}) == 6


async def test_not_ready_relay_answers_503_with_retry_after() -> None:
    from relay_support import run_relay

    backend = memory()
    await standard(backend)
    # A relay that cannot reach its log is never ready.
    from relay_support import relay_settings

    settings = relay_settings("127.0.0.1:9", "nowhere", retry_after=3)
    async with run_relay(settings) as relay, aiohttp.ClientSession() as s:
        async with s.get(f"{relay.url}/sdk/evalx/{CLIENT_ID}/contexts/{b64(ALICE)}") as r:
            assert r.status == 503 and r.headers["Retry-After"] == "3"
        async with s.get(
            f"{relay.url}/meval/{b64(ALICE)}", headers={"Authorization": MOBILE_KEY}
        ) as r:
            assert r.status == 503
        # A browser's preflight passes (a failed one is a CORS error the SDK cannot read and
        # retry), is not cacheable, and the request itself gets a 503 the page can read.
        origin = "https://app.example"
        async with s.options(
            f"{relay.url}/events/bulk/{CLIENT_ID}",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        ) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == origin
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "Access-Control-Max-Age" not in r.headers
        async with s.post(
            f"{relay.url}/events/bulk/{CLIENT_ID}", data="[]", headers={"Origin": origin}
        ) as r:
            assert r.status == 503 and r.headers["Access-Control-Allow-Origin"] == origin
