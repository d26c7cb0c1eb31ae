"""``POST /api/v1/environments/{env}/bulk``: atomic, validated first, every error listed,
one audit entry per item with a shared request id; on Redis + Kafka and in memory."""

from __future__ import annotations

import json
from typing import Any

import pytest
from publisher_support import Api, read_topic, wait_outbox_empty
from test_app import ENV, assert_problem, create_env, flag, snapshot

BULK = f"{ENV}/prod/bulk"


def put(key: str, kind: str = "flag", **extra: Any) -> dict[str, Any]:
    value = flag(key, **extra) if kind == "flag" else {"key": key, "included": ["u1"], **extra}
    return {"op": "put", "kind": kind, "key": key, "value": value}


async def test_bulk_applies_everything_with_one_request_id(api: Api) -> None:
    await create_env(api)
    await api.call("PUT", f"{ENV}/prod/flags/old", flag("old"))
    await api.call("PUT", f"{ENV}/prod/flags/gone", flag("gone"))
    ops = [
        put("s1", "segment"),
        put(
            "f1",
            rules=[
                {"clauses": [{"attribute": "key", "op": "in", "values": ["a"]}], "variation": 1}
            ],
        ),
        {"op": "patch", "kind": "flag", "key": "old", "value": {"on": False}, "ifMatch": 1},
        {"op": "delete", "kind": "flags", "key": "gone", "ifMatch": "*"},
    ]
    status, body, _ = await api.call("POST", BULK, {"operations": ops, "comment": "release 7"})
    assert status == 200, body
    assert body["written"] == 4 and body["unchanged"] == 0 and body["dryRun"] is False
    assert [(r["key"], r["version"], r.get("created")) for r in body["results"]] == [
        ("s1", 1, True),
        ("f1", 1, True),
        ("old", 2, False),
        ("gone", 2, False),
    ]
    _, old, _ = await api.call("GET", f"{ENV}/prod/flags/old")
    assert old["on"] is False and old["version"] == 2
    status, _, _ = await api.call("GET", f"{ENV}/prod/flags/gone")
    assert status == 404
    _, audit, _ = await api.call("GET", f"{ENV}/prod/audit?limit=4")
    entries = audit["items"]
    assert {e["requestId"] for e in entries} == {body["requestId"]}
    assert [e["action"] for e in reversed(entries)] == ["put", "put", "patch", "delete"]
    assert all(e["comment"] == "release 7" for e in entries)
    assert entries[1]["before"]["on"] is True and entries[1]["after"]["on"] is False
    await wait_outbox_empty(api.app, api.store)


async def test_bulk_records_reach_the_log_in_order(api: Api, kafka_bootstrap: str) -> None:
    await create_env(api)
    ops = [put(f"f{i}") for i in range(30)]
    status, body, _ = await api.call("POST", BULK, {"operations": ops})
    assert status == 200, body
    envelopes = await read_topic(kafka_bootstrap, api.topic, "prod", expect=31)
    items = [(e.key, e.version) for e in envelopes if e.kind == "flag"]
    assert items == [(f"f{i}", 1) for i in range(30)]


async def test_every_error_is_listed_and_nothing_is_written(api: Api) -> None:
    await create_env(api)
    await api.call("PUT", f"{ENV}/prod/flags/f1", flag("f1"))
    before = await snapshot(api)
    ops = [
        put("ok1"),
        put("bad", variations=[]),
        {"op": "patch", "kind": "flag", "key": "missing", "value": {"on": True}},
        {"op": "upsert", "kind": "flag", "key": "x"},
        {"op": "put", "kind": "flag", "key": "f1", "value": flag("f1"), "ifMatch": 7},
        put("ok1"),
        {"op": "delete", "kind": "flag", "key": "f1", "ifMatch": "nope"},
        {"op": "put", "kind": "widget", "key": "w", "value": {}},
    ]
    status, body, _ = await api.call("POST", BULK, {"operations": ops})
    assert_problem(status, body, 422, "nothing was written")
    got = {e["index"]: (e["status"], e["detail"]) for e in body["errors"]}
    assert sorted(got) == [1, 2, 3, 4, 5, 6, 7]
    assert got[1][0] == 422 and "variations" in got[1][1]
    assert got[2][0] == 404
    assert got[3][0] == 422 and "op" in got[3][1]
    assert got[4][0] == 412
    assert got[5][0] == 422 and "operations[0]" in got[5][1]
    assert got[6][0] == 400
    assert got[7][0] == 422 and "kind" in got[7][1]
    stale = next(e for e in body["errors"] if e["index"] == 4)
    assert stale["currentVersion"] == 1 and stale["key"] == "f1"
    assert await snapshot(api) == before


async def test_only_stale_if_match_is_412_and_missing_items_404(api: Api) -> None:
    await create_env(api)
    await api.call("PUT", f"{ENV}/prod/flags/f1", flag("f1"))
    before = await snapshot(api)
    status, body, _ = await api.call(
        "POST", BULK, {"operations": [put("f2"), {**put("f1"), "ifMatch": 0}]}
    )
    assert_problem(status, body, 412)
    assert body["errors"][0]["currentVersion"] == 1
    status, body, _ = await api.call(
        "POST", BULK, {"operations": [{"op": "delete", "kind": "segment", "key": "nope"}]}
    )
    assert_problem(status, body, 404)
    assert await snapshot(api) == before


async def test_skip_unchanged_and_dry_run_write_nothing(api: Api) -> None:
    await create_env(api)
    ops = [put("f1"), put("s1", "segment")]
    status, body, _ = await api.call("POST", BULK, {"operations": ops, "skipUnchanged": True})
    assert status == 200 and body["written"] == 2
    before = await snapshot(api)
    status, body, _ = await api.call("POST", BULK, {"operations": ops, "skipUnchanged": True})
    assert status == 200 and body["written"] == 0 and body["unchanged"] == 2
    assert [r["version"] for r in body["results"]] == [1, 1]
    status, body, _ = await api.call(
        "POST", BULK + "?dryRun=true", {"operations": [put("f1", on=False), put("f9")]}
    )
    assert status == 200 and body["dryRun"] is True and body["written"] == 0
    assert [(r["version"], r["created"]) for r in body["results"]] == [(2, False), (1, True)]
    assert await snapshot(api) == before


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"operations": []}, "1..1000"),
        ({"operations": [put(f"f{i}") for i in range(1001)]}, "1..1000"),
        ({"operations": [put("f1")], "extra": 1}, "unknown field"),
        ({"operations": [put("f1")], "skipUnchanged": "yes"}, "skipUnchanged"),
        ({"operations": [put("f1")], "comment": 5}, "comment"),
        ([put("f1")], "JSON object"),
    ],
)
async def test_malformed_bulk_requests(api: Api, body: Any, fragment: str) -> None:
    await create_env(api)
    before = await snapshot(api)
    status, answer, _ = await api.call("POST", BULK, body)
    assert status in (400, 422) and fragment in answer["detail"], answer
    assert await snapshot(api) == before


async def test_bulk_needs_write_scope_on_the_environment(api: Api) -> None:
    await create_env(api)
    await create_env(api, "dev")
    _, token, _ = await api.call(
        "POST", "/api/v1/tokens", {"name": "ci", "scopes": ["write"], "environments": ["dev"]}
    )
    status, body, _ = await api.call(
        "POST", BULK, {"operations": [put("f1")]}, token=token["token"]
    )
    assert_problem(status, body, 403, "write")
    status, body, _ = await api.call("POST", f"{ENV}/nope/bulk", {"operations": [put("f1")]})
    assert_problem(status, body, 404, "nope")
    status, body, _ = await api.call(
        "POST", f"{ENV}/dev/bulk", {"operations": [put("f1")]}, token=token["token"]
    )
    assert status == 200 and json.dumps(body)
