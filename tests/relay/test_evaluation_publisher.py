"""LaunchDarkly's SDK test harness data, written through the publisher's API and evaluated by
the relay that read it back from the log: ``flagstream dev`` (publisher + relay in one
process over the in-memory log and store, the same code above those interfaces) served on
loopback and driven over real HTTP.

1. Every flag and segment LaunchDarkly evaluates without an error must be writable: the
   publisher may refuse (422, with the field named) only an item that every harness
   evaluation of it answers with an error.
2. Every harness evaluation whose data was accepted gives, in the relay, the expected value,
   variation and reason.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flagstream import dev
from protocol.evaluation import ContextError, error_result, parse_context
from relay.app import STATE_KEY

sys.path.append(str(Path(__file__).parents[1] / "protocol" / "evaluation"))
from harness import Case, server_side_cases

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ERROR_KINDS_EXPECTED_WHEN_REFUSED = {"MALFORMED_FLAG", "FLAG_NOT_FOUND"}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


async def test_harness_data_through_the_publisher_api_and_the_relay() -> None:
    cases = server_side_cases()
    # One environment per suite (items of different suites share keys).
    suites: dict[tuple[str, str, str], list[Case]] = {}
    for case in cases:
        flags_id = _canonical([case.flags, case.segments])
        suites.setdefault((case.file, case.suite, flags_id), []).append(case)
    async with dev.running(port=0, seed_demo=False, host="127.0.0.1") as server:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        api = f"{server.url}/api/v1/environments"
        refused: dict[tuple[str, str, str], str] = {}  # (env, kind, key) -> problem detail
        environments: dict[tuple[str, str, str], str] = {}
        async with aiohttp.ClientSession(headers=headers) as session:
            for n, (suite_id, suite_cases) in enumerate(suites.items()):
                env = f"h-{n}"
                environments[suite_id] = env
                async with session.post(api, json={"key": env, "name": env}) as created:
                    assert created.status == 201, await created.text()
                first = suite_cases[0]
                for kind, items in (("segments", first.segments), ("flags", first.flags)):
                    for key, item in items.items():
                        body = {k: v for k, v in item.items() if k != "version"}
                        async with session.put(f"{api}/{env}/{kind}/{key}", json=body) as put:
                            if put.status in (200, 201, 202):
                                continue
                            assert put.status == 422, await put.text()
                            assert put.content_type == "application/problem+json"
                            refused[(env, kind, key)] = (await put.json())["detail"]
        state = server.relay_app[STATE_KEY]
        await _wait_applied(state, environments, suites, refused)

        checked = dependants = 0
        for suite_id, suite_cases in suites.items():
            env = environments[suite_id]
            compiled = state.evaluation.environment(env)
            refused_here = {(kind, key) for (e, kind, key) in refused if e == env}
            for case in suite_cases:
                if ("flags", case.flag_key) in refused_here:
                    # Only a flag whose evaluations are all errors may be refused.
                    reason = case.expect["reason"]
                    assert reason.get("kind") == "ERROR", (case.id, refused, reason)
                    assert reason.get("errorKind") in ERROR_KINDS_EXPECTED_WHEN_REFUSED
                    continue
                if _uses(case, case.flag_key) & refused_here:
                    dependants += 1  # its prerequisite or segment was refused: not comparable
                    continue
                if case.value_type:
                    continue  # typed getters: test_conformance checks them on the engine
                assert compiled is not None, case.id
                try:
                    context = parse_context(case.context)
                except ContextError:
                    result = error_result(case.flag_key, "USER_NOT_SPECIFIED")
                else:
                    result = compiled.evaluate(case.flag_key, context)
                if result.variation is not None:
                    assert _canonical(result.value) == _canonical(case.expect["value"]), case.id
                assert result.variation == case.expect.get("variationIndex"), case.id
                assert result.reason.to_json() == case.expect["reason"], case.id
                checked += 1
    accepted = sum(len(c[0].flags) + len(c[0].segments) for c in suites.values()) - len(refused)
    print(
        f"harness through the publisher: {accepted} items accepted, {len(refused)} refused, "
        f"{checked} evaluations checked in the relay"
    )
    # Refusals are only the documented can-only-be-an-error data (protocol/model.py).
    allowed = ("variation index", "must not be empty", "attribute: must be a string")
    assert all(any(a in detail for a in allowed) for detail in refused.values()), refused
    assert dependants == 0
    assert checked >= 640


def _uses(case: Case, flag_key: str) -> set[tuple[str, str]]:
    """(kind, key) of every item ``flag_key`` reads, transitively (prerequisites, segments)."""
    seen: set[tuple[str, str]] = set()
    pending = [("flags", flag_key)]
    while pending:
        kind, key = pending.pop()
        if (kind, key) in seen:
            continue
        seen.add((kind, key))
        item = (case.flags if kind == "flags" else case.segments).get(key) or {}
        pending.extend(("flags", p["key"]) for p in item.get("prerequisites") or [])
        for rule in item.get("rules") or []:
            for clause in rule.get("clauses") or []:
                if clause.get("op") == "segmentMatch":
                    pending.extend(("segments", v) for v in clause.get("values") or [])
    return seen


async def _wait_applied(
    state: Any,
    environments: dict[tuple[str, str, str], str],
    suites: dict[tuple[str, str, str], list[Case]],
    refused: dict[tuple[str, str, str], str],
) -> None:
    """Until the relay compiled every accepted item of every environment."""
    for _ in range(3000):
        missing = 0
        for suite_id, env in environments.items():
            compiled = state.evaluation.environment(env)
            first = suites[suite_id][0]
            for kind, items in (("segments", first.segments), ("flags", first.flags)):
                held = (
                    {}
                    if compiled is None
                    else (compiled.segments if kind == "segments" else compiled.flags)
                )
                missing += sum(
                    1 for key in items if key not in held and (env, kind, key) not in refused
                )
        if not missing:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{missing} items never reached the relay")
