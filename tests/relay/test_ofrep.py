"""The OFREP routes of a real relay over real HTTP, reading a real log (Kafka, and the in-memory
log of ``flagstream dev``). Every response is validated against the OFREP spec (ofrep_schema.py)
by ``OfrepClient`` before a test looks at it."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from ofrep_schema import OfrepSchema, load_spec, ofrep_schema
from ofrep_support import (
    BULK_PATH,
    CLIENT_ID,
    ENV,
    MOBILE_KEY,
    OTHER_ENV,
    OTHER_SDK_KEY,
    SDK_KEY,
    OfrepClient,
    catalogue,
    catalogue_envelopes,
    env_record_envelope,
    expected,
)
from relay_support import (
    Backend,
    GatedSource,
    RunningRelay,
    SSEClient,
    flag,
    item_envelope,
    run_relay,
    wait_ready,
    wait_until,
)

from protocol.position import parse_position
from relay import ofrep_answers

ALICE = {"targetingKey": "alice", "email": "alice@ex.com", "plan": "pro"}


@pytest.fixture
async def relay(backend: Backend) -> AsyncIterator[RunningRelay]:
    async with backend.producer() as producer:
        await producer.send_many(
            [
                env_record_envelope(),
                env_record_envelope(OTHER_ENV, sdk_keys=(OTHER_SDK_KEY,), mobile_keys=(),
                                    client_side_id="aaaaaaaaaaaaaaaaaaaaaaaa"),
                *catalogue_envelopes(),
            ]
        )  # fmt: skip
    async with run_relay(backend.settings(), backend.source()) as running:
        await wait_ready(running)
        yield running


@pytest.fixture
async def client(relay: RunningRelay, session: aiohttp.ClientSession) -> OfrepClient:
    return OfrepClient(session, relay.url)


# --- the spec's own corrections --------------------------------------------------------------


def test_unmodified_spec_rejects_its_own_example_and_the_corrected_one_accepts_it() -> None:
    """Why ofrep_schema.ERRATA exists: the spec's oneOf cannot be met by a valued answer."""
    spec = load_spec()
    operation = spec["paths"][BULK_PATH + "/{key}"]["post"]
    example = operation["responses"]["200"]["content"]["application/json"]["example"]
    assert not OfrepSchema(spec).component("serverEvaluationSuccess").is_valid(example)
    assert ofrep_schema().component("serverEvaluationSuccess").is_valid(example)
    bulk_example = spec["paths"][BULK_PATH]["post"]["responses"]["200"]["content"][
        "application/json"
    ]["example"]
    # Its FLAG_NOT_FOUND item is not an evaluationFailure (whose enum lacks FLAG_NOT_FOUND):
    # the relay never puts a missing flag in a bulk answer, it lists the flags that exist.
    bulk_example = {**bulk_example, "flags": bulk_example["flags"][:2]}
    assert ofrep_schema().component("bulkEvaluationSuccess").is_valid(bulk_example)


# --- one flag ---------------------------------------------------------------------------------


async def test_value_types_reasons_variants_and_metadata(client: OfrepClient) -> None:
    cases: list[tuple[str, dict[str, Any], Any, str, str, int]] = [
        ("bool-flag", ALICE, True, "STATIC", "0", 0),
        ("string-flag", ALICE, "blue", "STATIC", "control", 0),  # variationNames[0]
        ("string-flag", {"targetingKey": "vip-user"}, "red", "TARGETING_MATCH", "2", 2),
        ("int-flag", ALICE, 5, "TARGETING_MATCH", "1", 1),  # rule: email endsWith @ex.com
        ("int-flag", {"targetingKey": "bob", "email": "b@other"}, 1, "STATIC", "0", 0),
        ("float-flag", ALICE, 0.25, "STATIC", "0", 0),
        ("object-flag", ALICE, {"theme": "light", "tags": ["a"]}, "STATIC", "1", 1),
        ("experiment-flag", ALICE, "b", "SPLIT", "1", 1),
        ("off-flag", ALICE, False, "DISABLED", "1", 1),
        ("prereq-flag", ALICE, False, "DISABLED", "1", 1),
        ("org-flag", {"kind": "org", "key": "acme"}, "acme-only", "TARGETING_MATCH", "1", 1),
    ]
    for key, context, value, reason, variant, index in cases:
        answer = await client.flag(key, context)
        assert answer.status == 200, (key, answer.json)
        assert answer.json["key"] == key
        assert answer.json["value"] == value and type(answer.json["value"]) is type(value)
        assert (answer.json["reason"], answer.json["variant"]) == (reason, variant), key
        metadata = answer.json["metadata"]
        assert metadata["flagVersion"] == 1 and metadata["variationIndex"] == index
    experiment = (await client.flag("experiment-flag", ALICE)).json["metadata"]
    assert experiment == {
        "reasonKind": "RULE_MATCH", "flagVersion": 1, "variationIndex": 1, "ruleIndex": 0,
        "ruleId": "r-exp", "inExperiment": True,
    }  # fmt: skip
    prereq = (await client.flag("prereq-flag", ALICE)).json["metadata"]
    assert prereq["reasonKind"] == "PREREQUISITE_FAILED"
    assert prereq["prerequisiteKey"] == "off-flag"


async def test_rollout_is_split_and_agrees_with_the_engine(client: OfrepClient) -> None:
    seen = set()
    for i in range(40):
        answer = await client.flag("rollout-flag", {"targetingKey": f"user-{i}"})
        result = expected("rollout-flag", {"kind": "user", "key": f"user-{i}"})
        assert answer.json["reason"] == "SPLIT"
        assert answer.json["value"] == result.value
        assert answer.json["variant"] == str(result.variation)
        seen.add(answer.json["value"])
    assert seen == {True, False}  # both halves reached with 40 keys


async def test_off_flag_without_off_variation_defers_to_the_code_default(
    client: OfrepClient,
) -> None:
    answer = await client.flag("off-no-variation", ALICE)
    assert answer.status == 200
    assert "value" not in answer.json
    assert answer.json["reason"] == "DISABLED" and answer.json["variant"] == "default"


async def test_context_mapping(client: OfrepClient) -> None:
    # key instead of targetingKey; kind; multi-kind contexts with one object per kind.
    assert (await client.flag("string-flag", {"key": "vip-user"})).json["value"] == "red"
    multi = {"kind": "multi", "user": {"targetingKey": "u1"}, "org": {"targetingKey": "acme"}}
    assert (await client.flag("org-flag", multi)).json["value"] == "acme-only"
    private = {"targetingKey": "bob", "email": "b@ex.com", "privateAttributes": ["email"]}
    assert (await client.flag("int-flag", private)).json["value"] == 5


async def test_errors_of_one_flag(client: OfrepClient) -> None:
    cases: list[tuple[Any, bytes | None, int, str]] = [
        (ALICE, None, 200, ""),
        (None, None, 400, "TARGETING_KEY_MISSING"),  # {"context": null}
        ({"email": "x@ex.com"}, None, 400, "TARGETING_KEY_MISSING"),
        ({"targetingKey": ""}, None, 400, "TARGETING_KEY_MISSING"),
        ({"targetingKey": 7}, None, 400, "INVALID_CONTEXT"),
        ({"targetingKey": "a", "kind": "bad kind!"}, None, 400, "INVALID_CONTEXT"),
        ({"targetingKey": "a", "anonymous": "yes"}, None, 400, "INVALID_CONTEXT"),
        ({"kind": "multi", "user": "u1"}, None, 400, "INVALID_CONTEXT"),
        ("not an object", None, 400, "INVALID_CONTEXT"),
        ([1, 2], None, 400, "INVALID_CONTEXT"),
        (None, b"{not json", 400, "PARSE_ERROR"),
        (None, b"", 400, "PARSE_ERROR"),
        (None, b"[1,2]", 400, "PARSE_ERROR"),
        (None, b'"context"', 400, "PARSE_ERROR"),
        (None, b"{}", 400, "TARGETING_KEY_MISSING"),  # what a provider sends without context
    ]
    for context, raw, status, code in cases:
        answer = await client.flag("bool-flag", context, raw=raw)
        assert answer.status == status, (context, raw, answer.json)
        if code:
            assert answer.json["errorCode"] == code and answer.json["key"] == "bool-flag"
            assert answer.json["errorDetails"]
    missing = await client.flag("no-such-flag", ALICE)
    assert missing.status == 404
    assert missing.json["errorCode"] == "FLAG_NOT_FOUND"
    malformed = await client.flag("malformed-flag", ALICE)
    assert malformed.status == 400
    assert malformed.json["errorCode"] == "GENERAL"
    assert "MALFORMED_FLAG" in malformed.json["errorDetails"]


async def test_huge_body_is_413_with_the_failure_body(client: OfrepClient) -> None:
    huge = json.dumps({"context": {"targetingKey": "a", "blob": "x" * 70_000}}).encode()
    answer = await client.flag("bool-flag", raw=huge)
    assert answer.status == 413 and answer.json["errorCode"] == "GENERAL"
    bulk = await client.bulk(raw=huge)
    assert bulk.status == 413 and "key" not in bulk.json

    # Chunked (no Content-Length): refused once read past the limit.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 10_000
        yield b'{"context": {"targetingKey": "a"}}'

    async with client.session.post(
        f"{client.base}/ofrep/v1/evaluate/flags/bool-flag",
        data=chunks(),
        headers={"Authorization": f"Bearer {SDK_KEY}"},
    ) as response:
        body = await response.read()
        parsed = client.schema.check_response(
            "POST", "/ofrep/v1/evaluate/flags/{key}", response.status, response.headers, body
        )
        assert response.status == 413 and parsed["errorCode"] == "GENERAL"


async def test_credentials(client: OfrepClient) -> None:
    for header in ("Authorization", "X-API-Key"):
        assert (await client.flag("bool-flag", ALICE, header=header)).status == 200
    assert (await client.flag("bool-flag", ALICE, credential=None)).status == 401
    assert (await client.flag("bool-flag", ALICE, credential="sdk-unknown")).status == 401
    assert (await client.bulk(ALICE, credential="sdk-unknown")).status == 401
    # Each credential kind sees its audience: the client-side id only browser flags, the
    # mobile key only mobile flags; a flag it cannot see is not found.
    assert (await client.flag("bool-flag", ALICE, credential=CLIENT_ID)).status == 200
    assert (await client.flag("int-flag", ALICE, credential=CLIENT_ID)).status == 404
    assert (await client.flag("mobile-flag", ALICE, credential=MOBILE_KEY)).status == 200
    assert (await client.flag("int-flag", ALICE, credential=MOBILE_KEY)).status == 404
    audiences = {
        SDK_KEY: set(catalogue()),
        MOBILE_KEY: {"bool-flag", "string-flag", "rollout-flag", "off-flag", "mobile-flag"},
        CLIENT_ID: {"bool-flag", "string-flag", "rollout-flag", "off-flag"},
    }
    for credential, keys in audiences.items():
        answer = await client.bulk(ALICE, credential=credential)
        assert {f["key"] for f in answer.json["flags"]} == keys
    # Another environment's key sees that environment (no flags yet), not this one.
    assert (await client.bulk(ALICE, credential=OTHER_SDK_KEY)).json["flags"] == []


async def test_credential_kinds_not_accepted_get_403(
    backend: Backend, session: aiohttp.ClientSession
) -> None:
    async with backend.producer() as producer:
        await producer.send_many([env_record_envelope(), *catalogue_envelopes()])
    async with run_relay(backend.settings(ofrep_credentials="sdk"), backend.source()) as relay:
        await wait_ready(relay)
        client = OfrepClient(session, relay.url)
        assert (await client.flag("bool-flag", ALICE)).status == 200
        assert (await client.flag("bool-flag", ALICE, credential=CLIENT_ID)).status == 403
        assert (await client.bulk(ALICE, credential=MOBILE_KEY)).status == 403
        assert (await client.bulk(ALICE, credential="unknown")).status == 401


# --- bulk -------------------------------------------------------------------------------------


async def test_bulk_answers_every_flag_like_the_single_route(client: OfrepClient) -> None:
    answer = await client.bulk(ALICE)
    assert answer.status == 200
    flags = {f["key"]: f for f in answer.json["flags"]}
    assert set(flags) == set(catalogue())
    for key, item in flags.items():
        single = await client.flag(key, ALICE)
        assert single.json == item, key
    assert flags["malformed-flag"]["errorCode"] == "GENERAL"
    (stream,) = answer.json["eventStreams"]
    assert stream["type"] == "sse" and stream["inactivityDelaySec"] == 120
    assert stream["url"].startswith(f"{client.base}/ofrep/v1/notices?token=")
    assert SDK_KEY not in stream["url"]
    assert answer.headers["Cache-Control"] == "private, no-cache"


async def test_answers_stay_right_when_the_encoded_results_are_dropped(
    client: OfrepClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep one encoded result per flag version: every other request re-encodes (and drops),
    # through the bulk loop and the single route alike.
    monkeypatch.setattr(ofrep_answers, "MAX_RESULTS_PER_FLAG", 1)
    contexts = [
        {"targetingKey": f"user-{i}", "email": f"u{i}@ex.com", "plan": ("pro", "free")[i % 2]}
        for i in range(6)
    ]
    for context in [*contexts, *contexts]:
        answer = await client.bulk(context)
        assert answer.status == 200
        for item in answer.json["flags"]:
            single = await client.flag(item["key"], context)
            assert single.json == item, (item["key"], context)


async def test_bulk_errors(client: OfrepClient) -> None:
    for raw, code in [
        (b"nope", "PARSE_ERROR"),
        (b'{"context": 3}', "INVALID_CONTEXT"),
        (b'{"context": {}}', "TARGETING_KEY_MISSING"),
    ]:
        answer = await client.bulk(raw=raw)
        assert answer.status == 400 and answer.json["errorCode"] == code
        assert "key" not in answer.json


async def test_bulk_etag(client: OfrepClient, backend: Backend) -> None:
    first = await client.bulk(ALICE)
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')
    again = await client.bulk(ALICE, headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag
    strong = await client.bulk(ALICE, headers={"If-None-Match": etag.removeprefix("W/")})
    assert strong.status == 304
    # Another context, audience or credential view: another ETag.
    other = await client.bulk({**ALICE, "plan": "free"}, headers={"If-None-Match": etag})
    assert other.status == 200 and other.headers["ETag"] != etag
    client_view = await client.bulk(ALICE, credential=CLIENT_ID, headers={"If-None-Match": etag})
    assert client_view.status == 200
    # A change of the environment changes the ETag.
    async with backend.producer() as producer:
        await producer.send(item_envelope(ENV, "flag", flag("bool-flag", 2, on=False)))

    async def changed() -> bool:
        answer = await client.bulk(ALICE, headers={"If-None-Match": etag})
        return answer.status == 200

    await wait_until(changed)


# --- notices ----------------------------------------------------------------------------------


async def notice_stream(
    session: aiohttp.ClientSession, url: str, last_event_id: str | None = None
) -> SSEClient:
    """Open the notice stream at ``url`` with nothing but the URL (like a browser)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    response = await session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None))
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    stream = SSEClient(response)
    stream.start()
    return stream


def notices(stream: SSEClient) -> list[dict[str, Any]]:
    """The stream's events, each validated against the spec's sseEvent and sseEventData."""
    schema = ofrep_schema()
    out = []
    for event in stream.events:
        data = schema.check_sse_event(event.data, event.id, event.event)
        assert event.event == "message"
        out.append({**data, "id": event.id})
    return out


async def test_notice_stream_sends_one_notice_per_change_round(
    client: OfrepClient, backend: Backend, relay: RunningRelay
) -> None:
    bulk = await client.bulk(ALICE)
    url = bulk.json["eventStreams"][0]["url"]
    position = str(relay.state.position(relay.state.environments[ENV]))
    stream = await notice_stream(client.session, url)
    try:
        await stream.wait_events(1)
        (first,) = notices(stream)
        assert first == {"type": "refetchEvaluation", "etag": position, "id": position}
        # The provider re-validates on connect: its ETag still matches.
        revalidated = await client.bulk(
            ALICE,
            headers={"If-None-Match": bulk.headers["ETag"]},
            query=f"?flagConfigEtag={first['etag']}",
        )
        assert revalidated.status == 304
        async with backend.producer() as producer:
            _, offset = await producer.send(
                item_envelope(ENV, "flag", flag("bool-flag", 2, on=False))
            )
        await stream.wait_events(2)
        second = notices(stream)[1]
        epoch = first["id"].split(":")[0]
        assert second["id"] == f"{epoch}:{offset}"
        assert second["etag"] == second["id"]
        refetched = await client.bulk(
            ALICE, headers={"If-None-Match": bulk.headers["ETag"]},
            query=f"?flagConfigEtag={second['etag']}",
        )  # fmt: skip
        assert refetched.status == 200
        changed = {f["key"]: f for f in refetched.json["flags"]}["bool-flag"]
        assert changed["value"] is False and changed["reason"] == "DISABLED"
        # A burst of changes (one producer batch) ends in one notice per round: never more
        # notices than changes, the last one at the last change's position.
        async with backend.producer() as producer:
            await producer.send_many(
                [item_envelope(ENV, "flag", flag("bool-flag", v, on=v % 2 == 0))
                 for v in range(3, 23)]
            )  # fmt: skip
        environment = relay.state.environments[ENV]
        await wait_until(lambda: environment.items[("flag", "bool-flag")].version == 22)
        last = str(relay.state.position(environment))
        await wait_until(lambda: notices(stream)[-1]["id"] == last)
        burst = notices(stream)[2:]
        assert 1 <= len(burst) <= 20
        assert [n["id"] for n in burst] == sorted({n["id"] for n in burst}, key=_offset)
        # Changes of another environment notify nothing here.
        count = len(stream.events)
        async with backend.producer() as producer:
            await producer.send(item_envelope(OTHER_ENV, "flag", flag("x", 1)))
        await asyncio.sleep(0.3)
        assert len(stream.events) == count
    finally:
        await stream.close()


def _offset(position: str) -> int:
    parsed = parse_position(position)
    assert parsed is not None
    return parsed.offset


async def test_notice_stream_tokens(client: OfrepClient, relay: RunningRelay) -> None:
    url = (await client.bulk(ALICE)).json["eventStreams"][0]["url"]
    other = (await client.bulk(ALICE, credential=OTHER_SDK_KEY)).json["eventStreams"][0]["url"]
    assert url != other
    # The same token for every credential of the environment; it is no credential itself.
    for credential in (MOBILE_KEY, CLIENT_ID):
        assert (await client.bulk(ALICE, credential=credential)).json["eventStreams"][0][
            "url"
        ] == url
    token = url.split("token=", 1)[1]
    other_token = other.split("token=", 1)[1]
    base = f"{client.base}/ofrep/v1/notices"
    for bad in [
        "",
        "?token=",
        "?token=garbage",
        f"?token={token.split('.')[0]}.{other_token.split('.')[1]}",  # other env's MAC
        f"?token={token[:-2]}",
        f"?token={SDK_KEY}",
    ]:
        async with client.session.get(base + bad) as response:
            assert response.status == 401, bad
    # With a token, the stream needs no other credential (a browser EventSource).
    stream = await notice_stream(client.session, url)
    await stream.wait_events(1)
    await stream.close()


async def test_notice_stream_resumes_and_holds_a_client_from_ahead(
    backend: Backend, session: aiohttp.ClientSession
) -> None:
    async with backend.producer() as producer:
        await producer.send_many([env_record_envelope(), *catalogue_envelopes()])
        gated = GatedSource(backend.source())
        async with run_relay(backend.settings(catchup_wait=5.0), gated) as relay:
            await wait_ready(relay)
            client = OfrepClient(session, relay.url)
            url = (await client.bulk(ALICE)).json["eventStreams"][0]["url"]
            state = relay.state
            now = state.position(state.environments[ENV])
            # A reconnect at the current position: one notice at that position.
            stream = await notice_stream(session, url, last_event_id=str(now))
            await stream.wait_events(1)
            assert notices(stream)[0]["id"] == str(now)
            await stream.close()
            # A client that saw a later position elsewhere is held until this relay has it.
            gated.gate.clear()
            await asyncio.sleep(0.3)  # let a fetch already in flight finish
            _, offset = await producer.send(
                item_envelope(ENV, "flag", flag("bool-flag", 2, on=False))
            )
            ahead = f"{now.epoch}:{offset}"
            opened = asyncio.ensure_future(notice_stream(session, url, last_event_id=ahead))
            bulk = asyncio.ensure_future(client.bulk(ALICE, query=f"?flagConfigEtag={ahead}"))
            await asyncio.sleep(0.5)
            assert not opened.done() and not bulk.done()
            gated.gate.set()
            held = await asyncio.wait_for(opened, 10)
            await held.wait_events(1)
            assert notices(held)[0]["id"] == ahead
            await held.close()
            answer = await asyncio.wait_for(bulk, 10)
            flags = {f["key"]: f for f in answer.json["flags"]}
            assert flags["bool-flag"]["value"] is False  # the change the notice was about


async def test_notice_streams_drain_and_count(client: OfrepClient, relay: RunningRelay) -> None:
    url = (await client.bulk(ALICE)).json["eventStreams"][0]["url"]
    stream = await notice_stream(client.session, url)
    await stream.wait_events(1)
    hub = relay.app[_hub_key()]
    assert hub.stats()["streams"]["ofrep"] == 1
    await hub.drain(0)
    await wait_until(stream.response.content.at_eof)
    await stream.close()
    async with client.session.get(f"{client.base}/metrics") as response:
        text = await response.text()
    assert 'flagstream_relay_ofrep_requests_total{code="200",route="notices"} 1.0' in text
    assert 'flagstream_relay_ofrep_requests_total{code="200",route="bulk"} 1.0' in text


def _hub_key() -> Any:
    from relay.app import HUB_KEY

    return HUB_KEY


# --- readiness, rate limit, CORS, access log ---------------------------------------------------


async def test_not_ready_is_503_with_retry_after(
    backend: Backend, session: aiohttp.ClientSession
) -> None:
    gated = GatedSource(backend.source())
    gated.gate.clear()
    async with backend.producer() as producer:
        await producer.send_many([env_record_envelope(), *catalogue_envelopes()])
    async with run_relay(backend.settings(), gated) as relay:
        client = OfrepClient(session, relay.url)
        for answer in (await client.flag("bool-flag", ALICE), await client.bulk(ALICE)):
            assert answer.status == 503 and answer.headers["Retry-After"] == "1"
            assert answer.json["errorDetails"]
        gated.gate.set()
        await wait_ready(relay)
        assert (await client.flag("bool-flag", ALICE)).status == 200


async def test_rate_limit_per_credential(backend: Backend, session: aiohttp.ClientSession) -> None:
    async with backend.producer() as producer:
        await producer.send_many([env_record_envelope(), *catalogue_envelopes()])
    settings = backend.settings(ofrep_rate_limit=0.5, ofrep_rate_burst=3)
    async with run_relay(settings, backend.source()) as relay:
        await wait_ready(relay)
        client = OfrepClient(session, relay.url)
        statuses = [(await client.flag("bool-flag", ALICE)).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        refused = await client.flag("bool-flag", ALICE)
        assert refused.status == 429 and refused.body == b""
        assert refused.headers["Retry-After"] in {"1", "2"}  # 0.5/s: a token every 2 s
        refused_bulk = await client.bulk(ALICE)
        assert refused_bulk.status == 429
        # Another credential has its own bucket; unknown ones are refused before any bucket.
        assert (await client.flag("bool-flag", ALICE, credential=CLIENT_ID)).status == 200
        assert (await client.flag("bool-flag", ALICE, credential="nope")).status == 401
        async with session.get(f"{relay.url}/metrics") as response:
            assert "flagstream_relay_ofrep_rate_limited_total 2.0" in await response.text()


async def test_cors(backend: Backend, session: aiohttp.ClientSession) -> None:
    async with backend.producer() as producer:
        await producer.send_many([env_record_envelope(), *catalogue_envelopes()])
    allowed = "https://app.example.com"
    for origins, origin, expected_origin in [
        ("*", "https://anywhere.example", "*"),
        (f"{allowed},http://localhost:3000", allowed, allowed),
        (allowed, "https://evil.example", None),
    ]:
        async with run_relay(
            backend.settings(ofrep_cors_origins=origins), backend.source()
        ) as relay:
            await wait_ready(relay)
            preflight_headers = {
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,if-none-match",
            }
            async with session.options(
                f"{relay.url}/ofrep/v1/evaluate/flags", headers=preflight_headers
            ) as response:
                assert response.status == 204
                assert response.headers.get("Access-Control-Allow-Origin") == expected_origin
                if expected_origin:
                    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
                    for header in ("authorization", "content-type", "if-none-match", "x-api-key"):
                        assert header in allowed_headers
                    assert "POST" in response.headers["Access-Control-Allow-Methods"]
            client = OfrepClient(session, relay.url)
            for answer in (
                await client.bulk(ALICE, headers={"Origin": origin}),
                await client.flag("nope", ALICE, headers={"Origin": origin}),
                await client.flag("bool-flag", ALICE, credential=None, headers={"Origin": origin}),
            ):
                assert answer.headers.get("Access-Control-Allow-Origin") == expected_origin
                if expected_origin:
                    assert "ETag" in answer.headers["Access-Control-Expose-Headers"]
                    assert "Retry-After" in answer.headers["Access-Control-Expose-Headers"]
            # SDK routes are not affected.
            async with session.get(
                f"{relay.url}/sdk/latest-all", headers={"Authorization": SDK_KEY, "Origin": origin}
            ) as response:
                assert "Access-Control-Allow-Origin" not in response.headers


async def test_access_log_redacts_the_notice_token_and_credentials(
    backend: Backend, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with backend.producer() as producer:
        await producer.send_many([env_record_envelope(), *catalogue_envelopes()])
    caplog.set_level(logging.INFO, logger="flagstream.relay.access")
    async with run_relay(backend.settings(access_log=True), backend.source()) as relay:
        await wait_ready(relay)
        client = OfrepClient(session, relay.url)
        url = (await client.bulk(ALICE)).json["eventStreams"][0]["url"]
        token = url.split("token=", 1)[1]
        stream = await notice_stream(session, url)
        await stream.wait_events(1)
        await stream.close()
        async with session.get(f"{relay.url}/ofrep/v1/notices?a=1&token={token}x") as response:
            assert response.status == 401
        await wait_until(lambda: len(_access_lines(caplog)) >= 3)
    lines = _access_lines(caplog)
    text = "\n".join(lines)
    assert token not in text and SDK_KEY not in text
    assert text.count("token=[redacted]") >= 2
    assert re.search(r'"POST /ofrep/v1/evaluate/flags HTTP/1.1" 200', text)


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flagstream.relay.access"]
