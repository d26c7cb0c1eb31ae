"""Delivery bookkeeping: receipts before acceptance, per-change first/last, convergence."""

from __future__ import annotations

import json
import math

import pytest

from loadtest.recorder import DeliveryRecorder

pytestmark = pytest.mark.unit


def _patch(key: str, version: int) -> str:
    return json.dumps({"path": f"/flags/{key}", "data": {"key": key, "version": version}})


def test_receipt_before_the_driver_knows_the_version() -> None:
    rec = DeliveryRecorder()
    rec.on_event(0, "e", "patch", _patch("f", 2), now=10.5)  # arrives first
    rec.on_event(1, "e", "patch", _patch("f", 2), now=10.9)
    rec.accepted("e", "f", 2, sent=10.0, accepted=11.0)
    (change,) = rec.changes()
    assert (change.version, change.receivers) == (2, 2)
    assert change.first - change.sent == pytest.approx(0.5)
    assert change.last - change.sent == pytest.approx(0.9)
    assert sorted(rec.delays()) == pytest.approx([0.5, 0.9])
    assert rec.write_latencies() == pytest.approx([1.0])


def test_undelivered_change_has_nan_times() -> None:
    rec = DeliveryRecorder()
    rec.accepted("e", "f", 3, sent=1.0, accepted=1.1)
    (change,) = rec.changes()
    assert change.receivers == 0
    assert math.isnan(change.first)


def test_delays_window_selects_by_send_time() -> None:
    rec = DeliveryRecorder()
    rec.accepted("e", "f", 1, sent=1.0, accepted=1.0)
    rec.accepted("e", "f", 2, sent=5.0, accepted=5.0)
    rec.on_event(0, "e", "patch", _patch("f", 1), now=1.2)
    rec.on_event(0, "e", "patch", _patch("f", 2), now=5.3)
    assert rec.delays(since=4, until=6) == pytest.approx([0.3])


def test_counts_event_kinds_and_bad_payloads() -> None:
    rec = DeliveryRecorder()
    rec.on_event(0, "e", "put", '{"path":"/","data":{"flags":{},"segments":{}}}', 0)
    rec.on_event(0, "e", "delete", '{"path":"/flags/x","version":3}', 0)
    rec.on_event(0, "e", "patch", "not json", 0)
    rec.on_event(0, "e", "message", "x", 0)
    assert (rec.puts, rec.deletes, rec.patches, rec.other_events) == (1, 1, 1, 1)
    assert rec.decode_errors == 1
    assert rec.receipts_of_unknown_changes() == 0


def test_watch_follows_puts_and_patches() -> None:
    rec = DeliveryRecorder()
    rec.watch = ("e", "f")
    put = json.dumps({"path": "/", "data": {"flags": {"f": {"version": 4}}, "segments": {}}})
    rec.on_event(7, "e", "put", put, now=1.0)
    assert rec.watch_version == {7: 4}
    rec.on_event(7, "e", "patch", _patch("f", 3), now=2.0)  # older: ignored by the watch
    rec.on_event(7, "e", "patch", _patch("f", 5), now=3.0)
    assert rec.watch_version == {7: 5}
    assert rec.watch_time == {7: 3.0}


def test_lagging_streams_only_final_version_counts() -> None:
    rec = DeliveryRecorder()
    for v in (2, 3, 4):
        rec.accepted("e", "f", v, sent=0, accepted=0)
    rec.accepted("e", "g", 2, sent=0, accepted=0)
    # stream 0 got everything; stream 1 missed v3 (coalesced) but holds v4 and g; stream 2 not
    for stream, versions in ((0, (2, 3, 4)), (1, (2, 4)), (2, (2, 3))):
        for v in versions:
            rec.on_event(stream, "e", "patch", _patch("f", v), now=1)
    for stream in (0, 1, 2):
        rec.on_event(stream, "e", "patch", _patch("g", 2), now=1)
    assert rec.lagging_streams({"e": [0, 1, 2]}) == 1
    assert rec.final_version("e", "f") == 4
    assert rec.final_version("e", "nope") == 0
