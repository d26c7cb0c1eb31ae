"""The relay state compiles every applied flag and segment (relay.evaluation): fed records
directly, no I/O. The same paths with a real relay over Kafka are in
test_evaluation_relay.py."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest
from relay_support import RecordLog, env_envelope, flag, item_envelope, new_state, segment

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
