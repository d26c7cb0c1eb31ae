"""The relay state compiles every applied flag and segment (relay.evaluation): fed records
directly, no I/O. The same paths with a real relay over Kafka are in
test_evaluation_relay.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

import pytest
from relay_support import (
    RecordLog,
    env_envelope,
    flag,
    item_envelope,
    metric,
    new_state,
    segment,
)

from protocol.envelope import Envelope
from protocol.evaluation import CompiledEnvironment, parse_context
from relay.state import Change, State

pytestmark = pytest.mark.unit

KEY = "sdk-11111111-2222-3333-4444-555555555555"
ALICE = parse_context({"kind": "user", "key": "alice", "email": "alice@example.com"})


def feed(state: State, log: RecordLog, *envelopes: Envelope) -> int:
    records = [log.record(e) for e in envelopes]
    nxt: dict[int, int] = {}
    for r in records:
        nxt[r.partition] = r.offset + 1
    return state.apply_batch(records, nxt)


def ready_state() -> tuple[State, RecordLog, list[Change]]:
    state, _ = new_state()
    state.set_bootstrap_targets({0: 0, 1: 0, 2: 0})
    changes: list[Change] = []
    state.listeners.append(changes.append)
    log = RecordLog()
    feed(state, log, env_envelope("prod", [KEY]))
    return state, log, changes


def compiled(state: State, env: str = "prod") -> CompiledEnvironment:
    environment = state.evaluation.environment(env)
    assert environment is not None
    return environment


def email_rule(*emails: str, variation: int = 1) -> dict[str, Any]:
    clause = {"attribute": "email", "op": "in", "values": list(emails)}
    return {"id": "r", "clauses": [clause], "variation": variation}


def test_every_applied_item_is_compiled_and_changes_carry_affected_flags() -> None:
    state, log, changes = ready_state()
    in_beta = {"attribute": "", "op": "segmentMatch", "values": ["beta"]}
    feed(
        state,
        log,
        item_envelope("prod", "flag", flag("gate", 1)),
        item_envelope(
            "prod", "flag", flag("checkout", 1, prerequisites=[{"key": "gate", "variation": 0}])
        ),
        item_envelope("prod", "segment", segment("beta", 1, included=["alice"])),
        item_envelope(
            "prod",
            "flag",
            flag("banner", 1, rules=[{"id": "b", "variation": 1, "clauses": [in_beta]}]),
        ),
    )
    env = compiled(state)
    assert env.evaluate("checkout", ALICE).value is True
    assert env.evaluate("banner", ALICE).reason.to_json() == {
        "kind": "RULE_MATCH",
        "ruleIndex": 0,
        "ruleId": "b",
    }
    assert [c.affected_flags for c in changes] == [{"gate"}, {"checkout"}, frozenset(), {"banner"}]
    feed(state, log, item_envelope("prod", "flag", flag("gate", 2, on=False)))
    assert changes[-1].affected_flags == {"gate", "checkout"}
    assert env.evaluate("checkout", ALICE).reason.to_json() == {
        "kind": "PREREQUISITE_FAILED",
        "prerequisiteKey": "gate",
    }
    feed(state, log, item_envelope("prod", "segment", segment("beta", 2)))
    assert changes[-1].affected_flags == {"banner"}
    assert env.evaluate("banner", ALICE).reason.to_json() == {"kind": "FALLTHROUGH"}


def test_older_and_duplicate_records_change_nothing() -> None:
    state, log, changes = ready_state()
    feed(state, log, item_envelope("prod", "flag", flag("f", 2, on=False)))
    before = compiled(state).flags["f"]
    assert feed(state, log, item_envelope("prod", "flag", flag("f", 1))) == 0
    assert feed(state, log, item_envelope("prod", "flag", flag("f", 2))) == 0
    assert compiled(state).flags["f"] is before
    assert compiled(state).evaluate("f", ALICE).reason.to_json() == {"kind": "OFF"}
    assert len(changes) == 1


def test_tombstones_remove_the_compiled_flag() -> None:
    state, log, changes = ready_state()
    feed(
        state,
        log,
        item_envelope("prod", "flag", flag("f", 1)),
        item_envelope("prod", "flag", flag("g", 1, prerequisites=[{"key": "f", "variation": 0}])),
        item_envelope("prod", "flag", {"key": "f", "version": 2, "deleted": True}),
    )
    env = compiled(state)
    assert "f" not in env.flags
    assert changes[-1].deleted and changes[-1].affected_flags == {"f", "g"}
    assert env.evaluate("f", ALICE).reason.to_json() == {
        "kind": "ERROR",
        "errorKind": "FLAG_NOT_FOUND",
    }
    assert env.evaluate("g", ALICE).reason.to_json() == {
        "kind": "PREREQUISITE_FAILED",
        "prerequisiteKey": "f",
    }


def test_malformed_item_is_served_raw_and_evaluates_to_malformed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, log, changes = ready_state()
    bad = flag("bad", 1, rules=[{"id": "r", "variation": 0, "clauses": "not a list"}])
    with caplog.at_level(logging.WARNING, "flagstream.relay.evaluation"):
        feed(
            state,
            log,
            item_envelope("prod", "flag", bad),
            item_envelope("prod", "flag", flag("ok", 1)),
        )
    assert state.evaluation.malformed == 1
    assert "evaluates as malformed: rules[0].clauses: must be a list" in caplog.text
    assert "bad" not in caplog.text  # no flag keys in logs
    # Server-side SDKs still get it, byte for byte, and the rest of the environment works.
    body = json.loads(state.environments["prod"].polling_body())
    assert body["flags"]["bad"] == bad
    env = compiled(state)
    assert env.evaluate("bad", ALICE).reason.to_json() == {
        "kind": "ERROR",
        "errorKind": "MALFORMED_FLAG",
    }
    assert env.evaluate("ok", ALICE).value is True
    assert [c.key for c in changes] == ["bad", "ok"]


def test_prerequisite_cycle_across_writes_never_breaks_the_relay() -> None:
    state, log, _ = ready_state()
    feed(
        state,
        log,
        item_envelope("prod", "flag", flag("a", 1, prerequisites=[{"key": "b", "variation": 0}])),
        item_envelope("prod", "flag", flag("b", 1, prerequisites=[{"key": "a", "variation": 0}])),
        item_envelope("prod", "segment", {**segment("s1", 1), "rules": [{"clauses": [
            {"attribute": "", "op": "segmentMatch", "values": ["s2"]}]}]}),
        item_envelope("prod", "segment", {**segment("s2", 1), "rules": [{"clauses": [
            {"attribute": "", "op": "segmentMatch", "values": ["s1"]}]}]}),
        item_envelope("prod", "flag", flag("c", 1, rules=[{"id": "r", "variation": 1, "clauses": [
            {"attribute": "", "op": "segmentMatch", "values": ["s1"]}]}])),
    )  # fmt: skip
    env = compiled(state)
    malformed = {"kind": "ERROR", "errorKind": "MALFORMED_FLAG"}
    for key in ("a", "b", "c"):
        assert env.evaluate(key, ALICE).reason.to_json() == malformed
    assert json.loads(env.all_flags_json(ALICE))["a"]["value"] is None


def test_bootstrap_compiles_without_publishing() -> None:
    state, _ = new_state()
    changes: list[Change] = []
    state.listeners.append(changes.append)
    log = RecordLog()
    feed(
        state,
        log,
        item_envelope("prod", "flag", flag("f", 1, rules=[email_rule("alice@example.com")])),
    )
    assert not state.ready and changes == []
    assert compiled(state).evaluate("f", ALICE).value is False  # variation 1 of [true, false]


def test_epoch_change_drops_compiled_environments() -> None:
    state, log, _ = ready_state()
    feed(state, log, item_envelope("prod", "flag", flag("f", 1)))
    assert state.evaluation.environment("prod") is not None
    assert state.set_layout("fedcba987654", 3) is False
    assert state.evaluation.environment("prod") is None
    assert state.evaluation.environments() == {}


def test_items_of_each_environment_are_apart() -> None:
    state, log, _ = ready_state()
    feed(
        state,
        log,
        item_envelope("prod", "flag", flag("f", 1)),
        item_envelope("dev", "flag", flag("f", 1, on=False)),
    )
    assert compiled(state, "prod").evaluate("f", ALICE).value is True
    assert compiled(state, "dev").evaluate("f", ALICE).value is False
    assert state.evaluation.environment("test") is None
    assert set(state.evaluation.environments()) == {"prod", "dev"}


def test_a_compiler_bug_does_not_stop_the_consumer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state, log, changes = ready_state()

    def broken(*args: object) -> frozenset[str]:
        raise RuntimeError("bug")

    monkeypatch.setattr(CompiledEnvironment, "apply", broken)
    with caplog.at_level(logging.ERROR, "flagstream.relay.evaluation"):
        applied = feed(
            state,
            log,
            item_envelope("prod", "flag", flag("f", 1)),
            item_envelope("prod", "segment", segment("s", 1)),
        )
    assert applied == 2 and [c.affected_flags for c in changes] == [{"f"}, frozenset()]
    assert "compiling a flag failed" in caplog.text


def test_deeply_nested_item_json_is_skipped_not_raised() -> None:
    state, log, changes = ready_state()
    nested = b"[" * 100_000 + b"]" * 100_000
    record = log.record(
        dataclasses.replace(item_envelope("prod", "flag", flag("f", 1)), item=nested)
    )
    assert state.apply_batch([record], {record.partition: record.offset + 1}) == 0
    assert changes == [] and state.evaluation.environment("prod") is None


# --- compiling after the bootstrap (relay.evaluation rules 2-4) ------------------------------


def bootstrapped(*envelopes: Envelope) -> tuple[State, RecordLog, list[Change], Any]:
    """A state fed ``envelopes`` during its bootstrap, then made ready."""
    state, metrics = new_state()
    changes: list[Change] = []
    state.listeners.append(changes.append)
    log = RecordLog()
    feed(state, log, env_envelope("prod", [KEY]), *envelopes)
    assert not state.ready
    state.set_bootstrap_targets(dict(log.next))
    assert state.ready
    return state, log, changes, metrics


def test_the_bootstrap_files_items_and_compiles_only_their_last_version() -> None:
    state, _, _, metrics = bootstrapped(
        item_envelope("prod", "flag", flag("f", 1)),
        item_envelope("prod", "flag", flag("f", 2, rules=[email_rule("alice@example.com")])),
        item_envelope("prod", "flag", flag("f", 3, on=False)),
        item_envelope("prod", "flag", flag("g", 1)),
        item_envelope("prod", "flag", flag("gone", 1)),
        item_envelope("prod", "flag", flag("gone", 2, deleted=True)),
        item_envelope("prod", "segment", segment("s", 1)),
    )
    # Ready without a single compilation (no event loop here: nothing in the background).
    evaluation = state.evaluation
    assert evaluation.compilations == 0 and evaluation.pending == 4
    assert metric(metrics, "flagstream_relay_evaluation_items_pending") == 4
    env = compiled(state)  # reading compiles what was filed, each item's last version once
    assert evaluation.compilations == 3 and evaluation.pending == 0
    assert metric(metrics, "flagstream_relay_evaluation_items_pending") == 0
    assert env.evaluate("f", ALICE).reason.to_json() == {"kind": "OFF"}
    assert env.flags["f"].version == 3
    assert env.evaluate("gone", ALICE).reason.to_json() == {
        "kind": "ERROR",
        "errorKind": "FLAG_NOT_FOUND",
    }
    assert set(env.flags) == {"f", "g"} and set(env.segments) == {"s"}
    compiled(state)
    assert evaluation.compilations == 3  # never twice


def test_a_change_to_an_environment_not_compiled_yet_is_filed_then_read_exactly() -> None:
    state, log, changes, _ = bootstrapped(
        item_envelope("prod", "flag", flag("gate", 1)),
        item_envelope(
            "prod", "flag", flag("checkout", 1, prerequisites=[{"key": "gate", "variation": 0}])
        ),
    )
    feed(state, log, item_envelope("prod", "flag", flag("gate", 2, on=False)))
    # Nothing read this environment compiled yet, so nobody holds a result to invalidate.
    assert changes[-1].affected_flags == frozenset()
    assert state.evaluation.compilations == 0
    env = compiled(state)
    assert env.evaluate("checkout", ALICE).reason.to_json() == {
        "kind": "PREREQUISITE_FAILED",
        "prerequisiteKey": "gate",
    }
    # Once read, the environment is compiled change by change, with exact affected flags.
    feed(state, log, item_envelope("prod", "flag", flag("gate", 3)))
    assert changes[-1].affected_flags == {"gate", "checkout"}
    assert env.evaluate("checkout", ALICE).value is True
    assert state.evaluation.compilations == 3


async def test_once_ready_the_filed_items_are_compiled_in_the_background_in_slices() -> None:
    state, _ = new_state()
    log = RecordLog()
    flags = [item_envelope("prod", "flag", flag(f"f{i}", 1)) for i in range(200)]
    feed(state, log, env_envelope("prod", [KEY]), *flags)
    state.evaluation.slice_seconds = 0.0  # one item per slice: every slice yields
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        ticks += 1
        if state.evaluation.pending:
            asyncio.get_running_loop().call_soon(tick)

    state.set_bootstrap_targets(dict(log.next))  # ready: the background compiler starts
    asyncio.get_running_loop().call_soon(tick)
    for _ in range(1000):
        if not state.evaluation.pending:
            break
        await asyncio.sleep(0)
    assert state.evaluation.pending == 0 and state.evaluation.compilations == 200
    assert ticks >= 150  # other callbacks ran between the slices
    assert compiled(state).evaluate("f199", ALICE).value is True


async def test_a_request_compiles_its_environment_first_in_slices() -> None:
    state, _, _, _ = bootstrapped(
        *(item_envelope("prod", "flag", flag(f"f{i}", 1)) for i in range(50)),
        item_envelope("dev", "flag", flag("d", 1)),
    )
    state.evaluation.slice_seconds = 0.0
    others = []
    asyncio.get_running_loop().call_soon(others.append, "ran")
    await state.evaluation.compiled("prod")
    assert others == ["ran"]  # the loop ran while "prod" was being compiled
    assert "prod" not in state.evaluation._filed
    assert compiled(state).evaluate("f49", ALICE).value is True
    await state.evaluation.compiled("nowhere")  # nothing to do


def test_an_epoch_change_drops_what_was_filed() -> None:
    state, _, _, _ = bootstrapped(item_envelope("prod", "flag", flag("f", 1)))
    assert state.evaluation.pending == 1
    assert state.set_layout("fedcba987654", 3) is False
    assert state.evaluation.pending == 0
    assert state.evaluation.environment("prod") is None
