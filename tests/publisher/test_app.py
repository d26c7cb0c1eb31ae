"""The admin API end to end over a real Kafka topic, on both Store implementations.

Every test runs twice (``store`` is parametrized: Redis and in-memory): the embedded mode
serves the same API over the in-memory store, so both must behave identically.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from publisher_support import ADMIN, Api, read_topic, wait_outbox_empty

from protocol.environment import EnvironmentRecord, hash_secret
from publisher.app import FORWARDER

pytestmark = pytest.mark.integration

ENV = "/api/v1/environments"


def flag(key: str = "f1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "on": True,
        "variations": [True, False],
        "fallthrough": {"variation": 0},
        "offVariation": 1,
    }
    body.update(extra)
    return body


async def create_env(api: Api, key: str = "prod") -> dict[str, Any]:
    status, body, _ = await api.call("POST", ENV, {"key": key, "name": key.title()})
    assert status == 201, body
    return dict(body)


async def snapshot(api: Api, env: str = "prod") -> tuple[Any, ...]:
    """Everything a rejected request must leave unchanged."""
    flags = await api.store.list_items(env, "flag")
    segments = await api.store.list_items(env, "segment")
    audit = await api.store.read_audit(env, 1000)
    await api.app[FORWARDER].removals_done()  # answered writes leave the outbox right after
    depth = await api.store.outbox_depth()
    record = await api.store.get_environment(env)
    return flags, segments, audit, depth, record


def assert_problem(status: int, body: Any, expected: int, fragment: str = "") -> None:
    assert status == expected, body
    assert set(body) >= {"type", "title", "status", "detail"}, body
    assert body["status"] == expected
    assert fragment.lower() in body["detail"].lower(), body["detail"]


# -- environments -------------------------------------------------------------------------
async def test_create_environment_returns_credentials_once_and_stores_hashes(api: Api) -> None:
    created = await create_env(api)
    assert created["sdkKey"].startswith("sdk-") and created["mobileKey"].startswith("mob-")
    assert created["version"] == 1

    status, shown, _ = await api.call("GET", f"{ENV}/prod")
    assert status == 200
    text = json.dumps(shown)
    assert created["sdkKey"] not in text and created["mobileKey"] not in text
    assert shown["clientSideId"] == created["clientSideId"]

    record = await api.store.get_environment("prod")
    assert record is not None
    now = 0
    assert record.accepts_sdk_key(hash_secret(created["sdkKey"]), now)
    assert created["sdkKey"] not in record.to_json().decode()

    status, listing, _ = await api.call("GET", ENV)
    assert status == 200 and [e["key"] for e in listing["items"]] == ["prod"]

    status, body, _ = await api.call("POST", ENV, {"key": "prod", "name": "again"})
    assert_problem(status, body, 409, "already exists")


async def test_rotate_sdk_key_keeps_old_key_until_expiry(api: Api) -> None:
    created = await create_env(api)
    old = hash_secret(created["sdkKey"])
    status, body, _ = await api.call(
        "POST", f"{ENV}/prod/sdk-keys/rotate", {"expireOldInSeconds": 3600}
    )
    assert status == 200, body
    new = hash_secret(body["sdkKey"])
    record = await api.store.get_environment("prod")
    assert record is not None and record.version == 2
    now = body["oldKeysExpireMs"] - 3600_000
    assert record.accepts_sdk_key(old, now) and record.accepts_sdk_key(new, now)
    assert not record.accepts_sdk_key(old, body["oldKeysExpireMs"])
    assert record.accepts_sdk_key(new, body["oldKeysExpireMs"] + 10**9)

    # expire immediately: only the newest key remains
    status, body2, _ = await api.call("POST", f"{ENV}/prod/sdk-keys/rotate", {})
    assert status == 200
    record = await api.store.get_environment("prod")
    assert record is not None
    assert [c.sha256 for c in record.sdk_keys] == [hash_secret(body2["sdkKey"])]

    status, body, _ = await api.call(
        "POST", f"{ENV}/prod/sdk-keys/rotate", {"expireOldInSeconds": -1}
    )
    assert_problem(status, body, 422, "expireOldInSeconds")


# -- items ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kinds", ["flags", "segments"])
async def test_item_lifecycle_versions_and_tombstones(api: Api, kinds: str) -> None:
    await create_env(api)
    item = flag() if kinds == "flags" else {"key": "f1", "included": ["a"]}
    url = f"{ENV}/prod/{kinds}/f1"

    status, body, headers = await api.call("PUT", url, item)
    assert status == 201, body
    assert body["version"] == 1 and headers["ETag"] == '"1"'

    status, body, _ = await api.call("PUT", url, {**item, "version": 99})  # version ignored
    assert status == 200 and body["version"] == 2

    patch = {"on": False} if kinds == "flags" else {"excluded": ["b"]}
    status, body, _ = await api.call("PATCH", url, patch)
    assert status == 200 and body["version"] == 3
    assert all(body[k] == v for k, v in patch.items())

    status, body, headers = await api.call("GET", url)
    assert status == 200 and body["version"] == 3 and headers["ETag"] == '"3"'

    status, body, _ = await api.call("DELETE", url)
    assert status == 200 and body == {"key": "f1", "version": 4, "deleted": True}
    status, body, _ = await api.call("GET", url)
    assert_problem(status, body, 404, "deleted at version 4")
    status, body, _ = await api.call("GET", f"{ENV}/prod/{kinds}")
    assert body["items"] == []
    status, body, _ = await api.call("GET", f"{ENV}/prod/{kinds}?includeDeleted=true")
    assert [i["version"] for i in body["items"]] == [4]
    status, body, _ = await api.call("DELETE", url)
    assert_problem(status, body, 404)
    status, body, _ = await api.call("PATCH", url, patch)
    assert_problem(status, body, 404)

    # a later PUT continues the version sequence of the deleted key
    status, body, _ = await api.call("PUT", url, item)
    assert status == 201 and body["version"] == 5


async def test_if_match(api: Api) -> None:
    await create_env(api)
    url = f"{ENV}/prod/flags/f1"
    status, body, _ = await api.call("PUT", url, flag(), headers={"If-Match": "0"})
    assert status == 201  # 0 = must not exist yet
    status, body, _ = await api.call("PUT", url, flag(), headers={"If-Match": '"1"'})
    assert status == 200 and body["version"] == 2
    before = await snapshot(api)
    status, body, _ = await api.call("PUT", url, flag(on=False), headers={"If-Match": "1"})
    assert_problem(status, body, 412, "current version is 2")
    status, body, _ = await api.call("PATCH", url, {"on": False}, headers={"If-Match": "7"})
    assert_problem(status, body, 412)
    status, body, _ = await api.call("DELETE", url, headers={"If-Match": "1"})
    assert_problem(status, body, 412)
    status, body, _ = await api.call("PUT", url, flag(), headers={"If-Match": "abc"})
    assert_problem(status, body, 400, "If-Match")
    assert await snapshot(api) == before
    status, body, _ = await api.call("PATCH", url, {"on": False}, headers={"If-Match": "*"})
    assert status == 200 and body["version"] == 3


async def test_concurrent_writers_with_if_match_exactly_one_wins(api: Api) -> None:
    await create_env(api)
    url = f"{ENV}/prod/flags/f1"
    status, _, _ = await api.call("PUT", url, flag())
    assert status == 201
    results = await asyncio.gather(
        *(
            api.call("PATCH", url, {"on": i % 2 == 0, "salt": f"w{i}"}, headers={"If-Match": "1"})
            for i in range(8)
        )
    )
    statuses = sorted(r[0] for r in results)
    assert statuses == [200] + [412] * 7, statuses
    winner = next(r[1] for r in results if r[0] == 200)
    status, body, _ = await api.call("GET", url)
    assert body["version"] == 2 and body["salt"] == winner["salt"]
    audit = await api.store.read_audit("prod", 100)
    assert len([a for a in audit if json.loads(a)["action"] == "patch"]) == 1


async def test_concurrent_writers_without_if_match_all_apply(api: Api) -> None:
    await create_env(api)
    url = f"{ENV}/prod/flags/f1"
    await api.call("PUT", url, flag())
    results = await asyncio.gather(*(api.call("PATCH", url, {"salt": f"w{i}"}) for i in range(6)))
    assert sorted(r[0] for r in results) == [200] * 6
    assert sorted(r[1]["version"] for r in results) == [2, 3, 4, 5, 6, 7]


# -- bad input: the right 4xx, problem+json, state unchanged --------------------------------
BIG = 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("method", "path", "raw", "expected", "fragment"),
    [
        ("PUT", "flags/f1", b'{"key": "f1", "on": tru', 400, "malformed JSON"),
        ("PUT", "flags/f1", b'{"key": "f1", "salt": ' + b"9" * 5000 + b"}", 400, "too many digits"),
        ("PATCH", "flags/f1", b'{"x": ' + b"1" * 5000 + b"}", 400, "malformed JSON"),
        ("PUT", "flags/f1", b"\xff\xfe", 400, ""),
        ("PUT", "flags/f1", b"[1, 2]", 400, "JSON object"),
        ("PUT", "flags/f1", b"", 400, "empty"),
        ("PUT", "flags/f1", json.dumps(flag(on="yes")).encode(), 422, "on"),
        ("PUT", "flags/f1", json.dumps(flag(variations=[])).encode(), 422, "variations"),
        (
            "PUT",
            "flags/f1",
            json.dumps(flag(fallthrough={"variation": 5})).encode(),
            422,
            "fallthrough",
        ),
        ("PUT", "flags/f1", json.dumps(flag(key="other")).encode(), 422, "differs"),
        ("PUT", "flags/f1", json.dumps(flag(deleted=True)).encode(), 422, "DELETE"),
        ("PUT", "segments/s1", json.dumps({"key": "s1", "included": "a"}).encode(), 422, ""),
        ("PUT", "flags/" + "k" * 257, json.dumps(flag("k" * 257)).encode(), 400, "key"),
        ("PUT", "flags/bad%20key", json.dumps(flag("bad key")).encode(), 400, "key"),
        ("PUT", "flags/f1", b'{"a": "' + b"x" * BIG + b'"}', 413, "too large"),
        ("PATCH", "flags/f1", b"[]", 400, "merge patch"),
        ("PATCH", "flags/f1", b'{"variations": "no"}', 422, "variations"),
        ("PATCH", "flags/f1", b'{"key": "other"}', 422, "key"),
        ("PUT", "flags/f1", json.dumps({**flag(), "comment": 5}).encode(), 422, "comment"),
    ],
)
async def test_bad_input_is_rejected_and_changes_nothing(
    api: Api, method: str, path: str, raw: bytes, expected: int, fragment: str
) -> None:
    await create_env(api)
    status, _, _ = await api.call("PUT", f"{ENV}/prod/flags/f1", flag())
    assert status == 201
    before = await snapshot(api)
    status, body, headers = await api.call(method, f"{ENV}/prod/{path}", raw=raw)
    assert headers["Content-Type"].startswith("application/problem+json")
    assert_problem(status, body, expected, fragment)
    assert await snapshot(api) == before


@pytest.mark.parametrize("value", ["maybe", "2", "truee"])
async def test_include_deleted_must_be_a_boolean(api: Api, value: str) -> None:
    await create_env(api)
    status, body, _ = await api.call("GET", f"{ENV}/prod/flags?includeDeleted={value}")
    assert_problem(status, body, 400, "includeDeleted must be true or false")
    for ok in ("true", "false", "1", "0", "yes", "no", ""):
        status, _, _ = await api.call("GET", f"{ENV}/prod/flags?includeDeleted={ok}")
        assert status == 200, ok


async def test_unknown_environment_and_route(api: Api) -> None:
    status, body, _ = await api.call("PUT", f"{ENV}/nope/flags/f1", flag())
    assert_problem(status, body, 404, "does not exist")
    status, body, _ = await api.call("GET", f"{ENV}/nope/flags")
    assert_problem(status, body, 404, "does not exist")
    status, body, _ = await api.call("GET", f"{ENV}/nope/audit")
    assert_problem(status, body, 404)
    status, body, _ = await api.call("GET", "/api/v1/nothing")
    assert_problem(status, body, 404, "no route")
    status, body, _ = await api.call("POST", f"{ENV}/x/flags/f1", flag())
    assert_problem(status, body, 405)
    status, body, _ = await api.call("POST", ENV, {"key": "bad key!"})
    assert_problem(status, body, 422, "key")
    assert await api.store.list_environments() == []


# -- audit ---------------------------------------------------------------------------------
async def test_audit_newest_first_with_actor_comment_before_after(api: Api) -> None:
    await create_env(api)
    url = f"{ENV}/prod/flags/f1"
    await api.call("PUT", url, flag(), headers={"X-Change-Comment": "launch"})
    await api.call("PATCH", url, {"on": False, "comment": "kill switch"})
    await api.call("DELETE", url)
    status, body, _ = await api.call("GET", f"{ENV}/prod/audit?limit=3")
    assert status == 200
    entries = body["items"]
    assert [e["action"] for e in entries] == ["delete", "patch", "put"]
    assert [e["comment"] for e in entries] == [None, "kill switch", "launch"]
    assert all(e["actor"] == "admin" for e in entries)
    assert entries[1]["before"]["on"] is True and entries[1]["after"]["on"] is False
    assert "comment" not in entries[1]["after"]
    assert entries[2]["before"] is None and entries[0]["after"]["deleted"] is True
    assert entries[0]["timeMs"] >= entries[1]["timeMs"] >= entries[2]["timeMs"]
    status, body, _ = await api.call("GET", f"{ENV}/prod/audit?limit=0")
    assert_problem(status, body, 400, "limit")
    status, body, _ = await api.call("GET", f"{ENV}/prod/audit?limit=x")
    assert_problem(status, body, 400, "limit")


# -- tokens and scopes ---------------------------------------------------------------------
async def test_tokens_scopes_401_403_and_audit_actor(api: Api) -> None:
    await create_env(api, "prod")
    await create_env(api, "stage")
    url = f"{ENV}/prod/flags/f1"

    status, body, headers = await api.call("GET", url, token=None)
    assert_problem(status, body, 401, "Authorization")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = await api.call("GET", url, token="wrong-token")
    assert_problem(status, body, 401, "invalid")
    assert "wrong-token" not in json.dumps(body)

    status, reader, _ = await api.call(
        "POST", "/api/v1/tokens", {"name": "ci-reader", "scopes": ["read"], "environments": "*"}
    )
    assert status == 201 and reader["token"].startswith("fst_")
    status, writer, _ = await api.call(
        "POST",
        "/api/v1/tokens",
        {"name": "deployer", "scopes": ["write"], "environments": ["prod"]},
    )
    assert status == 201

    status, body, _ = await api.call("PUT", url, flag(), token=reader["token"])
    assert_problem(status, body, 403, "write")
    status, body, _ = await api.call("PUT", url, flag(), token=writer["token"])
    assert status == 201
    status, body, _ = await api.call("GET", url, token=writer["token"])  # write implies read
    assert status == 200
    status, body, _ = await api.call("GET", url, token=reader["token"])
    assert status == 200
    status, body, _ = await api.call("PUT", f"{ENV}/stage/flags/f1", flag(), token=writer["token"])
    assert_problem(status, body, 403, "stage")
    status, body, _ = await api.call("POST", ENV, {"key": "x"}, token=writer["token"])
    assert_problem(status, body, 403, "admin")
    status, body, _ = await api.call("GET", "/api/v1/tokens", token=reader["token"])
    assert_problem(status, body, 403)
    status, body, _ = await api.call("GET", ENV, token=writer["token"])
    assert [e["key"] for e in body["items"]] == ["prod"]

    audit = json.loads((await api.store.read_audit("prod", 1))[0])
    assert audit["actor"] == "deployer"

    status, listing, _ = await api.call("GET", "/api/v1/tokens")
    assert status == 200
    assert {t["name"] for t in listing["items"]} == {"ci-reader", "deployer"}
    text = json.dumps(listing)
    assert reader["token"] not in text and writer["token"] not in text
    assert hash_secret(reader["token"]) not in text

    status, _, _ = await api.call("DELETE", f"/api/v1/tokens/{writer['id']}")
    assert status == 204
    status, body, _ = await api.call("GET", url, token=writer["token"])
    assert_problem(status, body, 401)
    status, body, _ = await api.call("DELETE", f"/api/v1/tokens/{writer['id']}")
    assert_problem(status, body, 404)

    for bad in (
        {"name": "", "scopes": ["read"]},
        {"name": "x", "scopes": ["superuser"]},
        {"name": "x", "scopes": ["read"], "environments": "prod"},
        {"name": "x", "scopes": ["admin"], "environments": ["prod"]},
    ):
        status, body, _ = await api.call("POST", "/api/v1/tokens", bad)
        assert_problem(status, body, 422)


# -- Kafka: what the relays will read -------------------------------------------------------
async def test_topic_holds_every_change_in_order_with_full_items(
    api: Api, kafka_bootstrap: str
) -> None:
    created = await create_env(api)
    url = f"{ENV}/prod/flags/f1"
    await api.call("PUT", url, flag())
    await api.call("PATCH", url, {"on": False})
    await api.call("PUT", f"{ENV}/prod/segments/s1", {"key": "s1", "included": ["u1"]})
    await api.call("DELETE", url)
    status, body, _ = await api.call("PUT", url, flag())
    assert status == 201 and body["version"] == 4
    await wait_outbox_empty(api.app, api.store)

    records = await read_topic(kafka_bootstrap, api.topic, "prod", expect=6)
    got = [(r.kind, r.key, r.version, r.deleted) for r in records]
    assert got == [
        ("env", "prod", 1, False),
        ("flag", "f1", 1, False),
        ("flag", "f1", 2, False),
        ("segment", "s1", 1, False),
        ("flag", "f1", 3, True),
        ("flag", "f1", 4, False),
    ]
    assert all(r.actor == "admin" for r in records)
    items = [json.loads(r.item) for r in records]
    env_record = EnvironmentRecord.from_json(records[0].item)
    assert env_record.accepts_sdk_key(hash_secret(created["sdkKey"]), 0)
    assert created["sdkKey"] not in records[0].item.decode()
    assert items[2]["on"] is False and items[2]["version"] == 2 and items[2]["key"] == "f1"
    assert items[2]["variations"] == [True, False]
    assert items[4] == {"key": "f1", "version": 3, "deleted": True}
    assert items[5]["version"] == 4 and items[5]["on"] is True


# -- health, metrics, openapi -------------------------------------------------------------
async def test_health_and_metrics(api: Api) -> None:
    status, body, _ = await api.call("GET", "/livez", token=None)
    assert status == 200
    status, body, _ = await api.call("GET", "/readyz", token=None)
    assert status == 200 and body["redis"] == "ok"
    await create_env(api)
    await api.call("PUT", f"{ENV}/prod/flags/f1", flag(on="bad"))
    async with api.client.get("/metrics") as resp:
        text = await resp.text()
    assert 'flagstream_publisher_writes_total{result="acknowledged"} 1.0' in text
    assert 'flagstream_publisher_writes_total{result="rejected"} 1.0' in text
    assert "flagstream_publisher_outbox_depth" in text
    assert "flagstream_publisher_forward_latency_seconds_bucket" in text
    assert "flagstream_publisher_kafka_errors_total" in text
    assert "sdk-" not in text and ADMIN not in text
