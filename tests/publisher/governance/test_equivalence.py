"""An applied change request stores, publishes and audits exactly what the direct write would.

Two identical flags get the same merge patch, one by ``PATCH`` and one by a change request;
the stored items, the Kafka envelopes and the audit entries must agree in every field (the
key aside), the change request's audit entry only adding its governance fields.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from gov_support import BASE, CR, ENV, Gov, flag_body
from publisher_support import read_topic

GOVERNANCE_FIELDS = {"requestId", "author", "approvedBy", "appliedBy", "lateMs"}
PER_ENTRY = {"id", "timeMs", "key"}


def _same(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "key"}


async def test_applied_change_equals_the_direct_write(
    gov: Gov, request: pytest.FixtureRequest
) -> None:
    for key in ("direct", "proposed"):
        await gov.ok("PUT", f"{BASE}/flags/{key}", flag_body(key, salt="s"))
    patch = {"on": False, "rules": [{"id": "r", "clauses": [], "variation": 1}]}
    await gov.ok(
        "PATCH", f"{BASE}/flags/direct", patch, as_="bob", headers={"X-Change-Comment": "why"}
    )
    cr = await gov.create_cr(
        {"resource": "flags/proposed", "change": {"mergePatch": patch}, "comment": "why"}
    )
    await gov.ok("POST", f"{CR}/{cr['id']}/apply", as_="bob")

    stored = {k: json.loads(v) for k, v in (await gov.api.store.list_items(ENV, "flag")).items()}
    assert _same(stored["direct"]) == _same(stored["proposed"])
    assert list(stored["direct"]) == list(stored["proposed"])  # same field order: same bytes

    entries = {e["key"]: e for e in reversed(await gov.audit()) if e["kind"] == "flag"}
    direct, applied = entries["direct"], entries["proposed"]
    assert set(applied) == set(direct) | GOVERNANCE_FIELDS
    for field in set(direct) - PER_ENTRY:
        left, right = direct[field], applied[field]
        if isinstance(left, dict):
            left, right = _same(left), _same(right)
        assert left == right, field
    assert applied["requestId"] == cr["id"]

    on_kafka = request.node.callspec.params["gov"] == "redis+kafka"
    bootstrap = request.getfixturevalue("kafka_bootstrap") if on_kafka else ""
    envelopes = await read_topic(bootstrap, gov.api.topic, ENV, expect=6)
    last = {e.key: e for e in envelopes if e.kind == "flag"}
    a, b = last["direct"], last["proposed"]
    assert (a.version, a.actor, a.deleted, a.env) == (b.version, b.actor, b.deleted, b.env)
    assert _same(json.loads(a.item)) == _same(json.loads(b.item))
