"""Compiled evaluation in a real relay: records written to the log (a real Kafka topic, or
the in-memory log of ``flagstream dev``), read by a relay served over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from relay_support import (
    Backend,
    env_envelope,
    flag,
    item_envelope,
    run_relay,
    segment,
    sse,
    wait_ready,
    wait_until,
)

from protocol.evaluation import CompiledEnvironment, parse_context
from relay.state import Change

SDK_KEY = "sdk-aaaaaaaa-2222-3333-4444-555555555555"
ALICE = parse_context({"kind": "user", "key": "alice", "email": "alice@example.com"})
BOB = parse_context({"kind": "user", "key": "bob", "email": "bob@example.com"})


def uses(segment_key: str, key: str, version: int, **extra: Any) -> dict[str, Any]:
    clause = {"attribute": "", "op": "segmentMatch", "values": [segment_key]}
    return flag(key, version, rules=[{"id": "r", "variation": 1, "clauses": [clause]}], **extra)


def environment(relay: Any, env: str = "prod") -> CompiledEnvironment:
    compiled = relay.state.evaluation.environment(env)
    assert compiled is not None
    return compiled


async def test_relay_compiles_what_it_reads_and_reports_affected_flags(
    backend: Backend, session: aiohttp.ClientSession
) -> None:
    async with backend.producer() as producer:
        await producer.send_many(
            [
                env_envelope("prod", [SDK_KEY]),
                item_envelope("prod", "segment", segment("beta", 1, included=["alice"])),
                item_envelope("prod", "flag", uses("beta", "banner", 1)),
                item_envelope(
                    "prod",
                    "flag",
                    flag("checkout", 1, prerequisites=[{"key": "banner", "variation": 0}]),
                ),
            ]
        )
        async with run_relay(backend.settings(), backend.source()) as relay:
            await wait_ready(relay)
            env = environment(relay)
            assert env.evaluate("banner", ALICE).value is False  # in beta: variation 1
            assert env.evaluate("banner", BOB).value is True
            assert env.evaluate("checkout", ALICE).reason.to_json() == {
                "kind": "PREREQUISITE_FAILED", "prerequisiteKey": "banner",
            }  # fmt: skip
            changes: list[Change] = []
            relay.state.listeners.append(changes.append)
            await producer.send(
                item_envelope("prod", "segment", segment("beta", 2, included=["bob"]))
            )
            await wait_until(lambda: len(changes) == 1)
            assert changes[0].affected_flags == {"banner", "checkout"}
            assert env.evaluate("banner", ALICE).value is True
            assert env.evaluate("checkout", ALICE).value is True
            assert env.evaluate("banner", BOB).value is False
            body = json.loads(env.all_flags_json(BOB, with_reasons=True))
            assert body["banner"]["reason"] == {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "r"}

        # A relay started afterwards compiles the same state from the log.
        async with run_relay(backend.settings(), backend.source()) as second:
            await wait_ready(second)
            assert environment(second).evaluate("banner", ALICE).value is True
            assert environment(second).evaluate("banner", BOB).value is False


async def test_malformed_flag_is_served_raw_and_evaluates_to_malformed(
    backend: Backend, session: aiohttp.ClientSession
) -> None:
    malformed = flag("bad", 1, variations="not a list")
    async with backend.producer() as producer:
        await producer.send_many(
            [env_envelope("prod", [SDK_KEY]), item_envelope("prod", "flag", flag("ok", 1))]
        )
        async with run_relay(backend.settings(), backend.source()) as relay:
            await wait_ready(relay)
            async with sse(session, f"{relay.url}/all", SDK_KEY) as stream:
                await stream.wait_events(1)  # the put
                await producer.send(item_envelope("prod", "flag", malformed))
                await stream.wait_events(2)
                patch = json.loads(stream.events[1].data)
                assert patch == {"path": "/flags/bad", "data": malformed}
            async with session.get(
                f"{relay.url}/sdk/latest-all", headers={"Authorization": SDK_KEY}
            ) as response:
                assert response.status == 200
                assert (await response.json())["flags"]["bad"] == malformed
            env = environment(relay)
            assert env.evaluate("bad", ALICE).reason.to_json() == {
                "kind": "ERROR", "errorKind": "MALFORMED_FLAG",
            }  # fmt: skip
            assert env.evaluate("ok", ALICE).value is True
            assert relay.state.evaluation.malformed == 1
            async with session.get(f"{relay.url}/readyz") as ready:
                assert ready.status == 200


async def test_prerequisite_cycle_formed_across_writes(backend: Backend) -> None:
    async with backend.producer() as producer:
        await producer.send_many(
            [
                env_envelope("prod", [SDK_KEY]),
                item_envelope(
                    "prod", "flag", flag("a", 1, prerequisites=[{"key": "b", "variation": 0}])
                ),
                item_envelope("prod", "flag", flag("b", 1)),
            ]
        )
        async with run_relay(backend.settings(), backend.source()) as relay:
            await wait_ready(relay)
            env = environment(relay)
            assert env.evaluate("a", ALICE).value is True
            changes: list[Change] = []
            relay.state.listeners.append(changes.append)
            await producer.send(
                item_envelope(
                    "prod", "flag", flag("b", 2, prerequisites=[{"key": "a", "variation": 0}])
                )
            )
            await wait_until(lambda: len(changes) == 1)
            assert changes[0].affected_flags == {"a", "b"}
            for key in ("a", "b"):
                assert env.evaluate(key, ALICE).reason.to_json() == {
                    "kind": "ERROR", "errorKind": "MALFORMED_FLAG",
                }  # fmt: skip
            await producer.send(item_envelope("prod", "flag", flag("b", 3)))
            await wait_until(lambda: len(changes) == 2)
            assert env.evaluate("a", ALICE).value is True


@pytest.mark.parametrize("deleted_kind", ["flag", "segment"])
async def test_deletions_reach_the_compiled_view(backend: Backend, deleted_kind: str) -> None:
    async with backend.producer() as producer:
        await producer.send_many(
            [
                env_envelope("prod", [SDK_KEY]),
                item_envelope("prod", "segment", segment("beta", 1, included=["alice"])),
                item_envelope("prod", "flag", uses("beta", "banner", 1)),
            ]
        )
        async with run_relay(backend.settings(), backend.source()) as relay:
            await wait_ready(relay)
            changes: list[Change] = []
            relay.state.listeners.append(changes.append)
            tombstone = {
                "key": "beta" if deleted_kind == "segment" else "banner",
                "version": 2,
                "deleted": True,
            }
            await producer.send(item_envelope("prod", deleted_kind, tombstone))
            await wait_until(lambda: len(changes) == 1)
            assert changes[0].affected_flags == {"banner"}
            result = environment(relay).evaluate("banner", ALICE)
            if deleted_kind == "segment":
                assert result.reason.to_json() == {"kind": "FALLTHROUGH"}
            else:
                assert result.reason.to_json() == {"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"}
