"""The mobile routes with the requests LaunchDarkly's mobile SDKs send, over real HTTP.

Paths, methods and headers are those of the React Native SDK (``@launchdarkly/react-native-
client-sdk``: ``mobileFdv1Endpoints`` in js-client-sdk-common, analytics ``/mobile``,
diagnostics ``/mobile/events/diagnostic``; the mobile key bare in ``authorization``) and the
older ``api_key`` form of the Android/iOS SDKs, with single and multi-kind contexts in
padded and unpadded base64url."""

from __future__ import annotations

import base64
import json
import uuid

import aiohttp
from client_support import MOBILE_KEY, client_relay, env_envelope, rollout, seed, targeted
from relay_support import Backend, SSEClient, event_data, item_envelope, metric

from protocol.evaluation import CompiledEnvironment, parse_context

RN_HEADERS = {
    "authorization": MOBILE_KEY,
    "user-agent": "ReactNativeClient/10.9.0",
    "x-launchdarkly-tags": "application-id/com.example.app application-version/1.2.3",
}
MULTI = {"kind": "multi", "user": {"key": "carol", "name": "Carol"}, "device": {"key": "d-1"}}
FLAGS = [targeted("banner", 1), rollout("split", 1)]


def padded(context: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(context).encode()).decode()


async def test_react_native_sdk_requests(backend: Backend) -> None:
    await seed(backend, env_envelope(), flags=FLAGS)
    engine = CompiledEnvironment.from_items(FLAGS)
    want = {f["key"]: engine.evaluate(f["key"], parse_context(MULTI)).value for f in FLAGS}
    async with client_relay(backend) as relay, aiohttp.ClientSession() as s:
        base = relay.url
        # Polling: GET with the context in the path (padded and not), REPORT with the body.
        for ctx in (padded(MULTI), padded(MULTI).rstrip("=")):
            async with s.get(
                f"{base}/msdk/evalx/contexts/{ctx}?withReasons=true", headers=RN_HEADERS
            ) as r:
                assert r.status == 200, await r.text()
                body = await r.json()
                assert {k: v["value"] for k, v in body.items()} == want
                assert all("reason" in v for v in body.values())
        async with s.request(
            "REPORT",
            f"{base}/msdk/evalx/context",
            data=json.dumps(MULTI),
            headers={**RN_HEADERS, "content-type": "application/json"},
        ) as r:
            assert r.status == 200
            assert {k: v["value"] for k, v in (await r.json()).items()} == want
        # Older mobile SDKs: "api_key <key>" and the users/ paths.
        async with s.get(
            f"{base}/msdk/evalx/users/{padded({'key': 'carol'})}",
            headers={"Authorization": f"api_key {MOBILE_KEY}"},
        ) as r:
            assert r.status == 200
        # Streaming: GET /meval/{ctx}, REPORT /meval.
        response = await s.get(
            f"{base}/meval/{padded(MULTI)}",
            headers=RN_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        assert response.status == 200
        stream = SSEClient(response)
        stream.start()
        report = await s.request(
            "REPORT",
            f"{base}/meval",
            data=json.dumps(MULTI),
            headers={**RN_HEADERS, "content-type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=None),
        )
        assert report.status == 200
        report_stream = SSEClient(report)
        report_stream.start()
        try:
            for client in (stream, report_stream):
                (put,) = await client.wait_events(1)
                assert {k: v["value"] for k, v in event_data(put).items()} == want
            async with backend.producer() as p:
                await p.send(item_envelope("web", "flag", targeted("banner", 2, on=False)))
            for client in (stream, report_stream):
                (_, patch) = await client.wait_events(2)
                assert event_data(patch)["key"] == "banner"
                assert event_data(patch)["value"] is False
        finally:
            await stream.close()
            await report_stream.close()
        # Events: analytics to /mobile (and aliases), diagnostics, with the event headers.
        event_headers = {
            **RN_HEADERS,
            "content-type": "application/json",
            "x-launchdarkly-event-schema": "4",
            "x-launchdarkly-payload-id": str(uuid.uuid4()),
        }
        payload = json.dumps([{"kind": "identify", "context": MULTI, "creationDate": 1}])
        for path in ("/mobile", "/mobile/events", "/mobile/events/bulk"):
            async with s.post(base + path, data=payload, headers=event_headers) as r:
                assert r.status == 202
        async with s.post(
            base + "/mobile/events/diagnostic",
            data=json.dumps({"kind": "diagnostic-init", "id": {"diagnosticId": "x"}}),
            headers=event_headers,
        ) as r:
            assert r.status == 202
        m = relay.metrics
        assert metric(m, "flagstream_relay_sdk_events_total", {"sdk": "mobile"}) == 3
        assert (
            metric(
                m,
                "flagstream_relay_client_requests_total",
                {"sdk": "mobile", "request": "poll", "code": "200"},
            )
            == 4
        )
