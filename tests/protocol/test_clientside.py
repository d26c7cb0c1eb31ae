"""protocol/clientside.py: CORS, secure-mode hashes, versions, evaluated events (no I/O)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from protocol import clientside
from protocol.evaluation import CompiledEnvironment
from protocol.sse import SSEEvent, SSEParser

pytestmark = pytest.mark.unit


def parse(frame: bytes) -> SSEEvent:
    (event,) = [e for e in SSEParser().feed(frame) if isinstance(e, SSEEvent)]
    return event


def test_cors_open_to_all() -> None:
    h = clientside.cors_headers("https://a.example", ("*",), "GET,OPTIONS", preflight=False)
    assert h["Access-Control-Allow-Origin"] == "https://a.example"
    assert h["Vary"] == "Origin" and h["Access-Control-Allow-Credentials"] == "false"
    assert "Access-Control-Allow-Headers" not in h
    assert (
        clientside.cors_headers(None, ("*",), "GET", preflight=False)["Access-Control-Allow-Origin"]
        == "*"
    )


def test_cors_preflight_and_refusal() -> None:
    allowed = ("https://a.example",)
    h = clientside.cors_headers("https://a.example", allowed, "GET,REPORT", preflight=True)
    assert h["Access-Control-Allow-Methods"] == "GET,REPORT"
    assert "X-LaunchDarkly-User-Agent" in h["Access-Control-Allow-Headers"]
    assert h["Access-Control-Max-Age"] == "300"
    assert clientside.cors_headers("https://b.example", allowed, "GET", preflight=True) == {
        "Vary": "Origin"
    }
    # No Origin (not a browser) and a restricted environment: no CORS headers needed.
    assert clientside.cors_headers(None, allowed, "GET", preflight=True) == {"Vary": "Origin"}


def test_secure_mode_hash_is_launchdarklys_hmac() -> None:
    want = hmac.new(b"secret-key", b"org:o1:user:u1", hashlib.sha256).hexdigest()
    assert clientside.secure_mode_hash("secret-key", "org:o1:user:u1") == want
    assert clientside.valid_secure_mode_hash("secret-key", "org:o1:user:u1", want.upper())
    assert not clientside.valid_secure_mode_hash("secret-key", "user:u1", want)
    assert not clientside.valid_secure_mode_hash("secret-key", "u", "é not hex")


def test_restamp_and_unversioned_touch_only_the_results_own_version() -> None:
    # A JSON variation that itself holds the same bytes as the version marker.
    env = CompiledEnvironment.from_items(
        [
            {
                "key": "f",
                "version": 7,
                "on": True,
                "variations": [{"a": 1, "version": 7, "flagVersion": 7}],
                "fallthrough": {"variation": 0},
                "clientSideAvailability": {"usingEnvironmentId": True},
            }
        ]
    )
    from protocol.evaluation import parse_context

    result = env.evaluate("f", parse_context({"key": "k"}))
    stamped = clientside.restamp(result.patch(True), 7, 42)
    obj = json.loads(stamped)
    assert obj["version"] == 42 and obj["flagVersion"] == 7
    assert obj["value"] == {"a": 1, "version": 7, "flagVersion": 7}
    plain = clientside.unversioned(result.fragment(False), 7)
    assert json.loads(b"{" + plain + b"}") == {
        "f": {"value": {"a": 1, "version": 7, "flagVersion": 7}, "variation": 0}
    }
    # Bytes without the marker are left as they are.
    assert clientside.restamp(b'{"value":1}', 3, 9) == b'{"value":1}'
    assert clientside.unversioned(b'{"value":1}', 3) == b'{"value":1}'


def _flag(key: str, version: int, *, prereqs: list[str] = (), segs: list[str] = ()) -> dict:  # type: ignore[assignment]
    rules = (
        [
            {
                "id": "r",
                "variation": 0,
                "clauses": [{"attribute": "key", "op": "segmentMatch", "values": list(segs)}],
            }
        ]
        if segs
        else []
    )
    return {
        "key": key,
        "version": version,
        "on": True,
        "variations": [True, False],
        "fallthrough": {"variation": 0},
        "offVariation": 1,
        "prerequisites": [{"key": p, "variation": 0} for p in prereqs],
        "rules": rules,
    }


def test_dependency_offsets_follow_prerequisites_segments_and_cycles() -> None:
    env = CompiledEnvironment.from_items(
        [
            _flag("a", 1, prereqs=["b"]),
            _flag("b", 1, segs=["s1"]),
            _flag("c", 1),
            _flag("d", 1, segs=["s1"]),
            _flag("cyc1", 1, prereqs=["cyc2"]),
            _flag("cyc2", 1, prereqs=["cyc1"]),
            _flag("missing", 1, prereqs=["nope"], segs=["nothing"]),
        ],
        [
            {
                "key": "s1",
                "version": 1,
                "included": [],
                "rules": [
                    {"clauses": [{"attribute": "key", "op": "segmentMatch", "values": ["s2"]}]}
                ],
            },
            {
                "key": "s2",
                "version": 1,
                "included": [],
                "rules": [
                    {"clauses": [{"attribute": "key", "op": "segmentMatch", "values": ["s1"]}]}
                ],
            },
        ],
    )
    offsets = {
        ("flag", "a"): 10,
        ("flag", "b"): 3,
        ("flag", "c"): 5,
        ("segment", "s1"): 7,
        ("segment", "s2"): 20,
        ("flag", "cyc1"): 1,
        ("flag", "cyc2"): 2,
        ("flag", "missing"): 4,
    }
    deps = clientside.dependency_offsets(
        env.flags, env.segments, lambda kind, key: offsets.get((kind, key), -1)
    )
    assert deps["c"] == 5
    assert deps["b"] == 20  # its segment s1 uses s2 (changed at 20)
    assert deps["a"] == 20  # through its prerequisite b
    assert deps["d"] == 20  # the same segment, from the memo
    assert deps["cyc1"] == deps["cyc2"] == 2
    assert deps["missing"] == 4


def test_events() -> None:
    put = parse(clientside.put_event(b'{"f":{"value":true}}', "e:3"))
    assert (put.event, put.id, json.loads(put.data)) == ("put", "e:3", {"f": {"value": True}})
    patch = parse(clientside.patch_event(b'{"key":"f","value":1}', "e:4"))
    assert patch.event == "patch" and json.loads(patch.data)["key"] == "f"
    delete = parse(clientside.delete_event('f"x', 9, "e:5"))
    assert delete.event == "delete" and json.loads(delete.data) == {"key": 'f"x', "version": 9}
    ping = parse(clientside.PING_EVENT)
    assert ping.event == "ping" and ping.data == " "  # non-empty: EventSource dispatches it
