import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ld_eventsource.actions import Event  # type: ignore[import-untyped]
from ldclient.feature_store import InMemoryFeatureStore
from ldclient.impl.datasource.streaming import StreamingUpdateProcessor
from ldclient.versioned_data_kind import FEATURES, SEGMENTS

from protocol import ld
from protocol.model import encode_item, make_tombstone, validate_flag, validate_segment
from protocol.sse import SSEEvent, SSEParser

pytestmark = pytest.mark.unit

# Bounded so the whole protocol suite stays fast on a shared machine; raise locally to dig.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def flag(key: str, version: int, on: bool = True) -> bytes:
    return encode_item(
        validate_flag(
            {
                "key": key,
                "version": version,
                "on": on,
                "variations": [True, False],
                "fallthrough": {"variation": 0},
                "offVariation": 1,
            }
        )
    )


def segment(key: str, version: int) -> bytes:
    return encode_item(validate_segment({"key": key, "version": version, "included": ["u"]}))


def parse_one(frame: bytes) -> SSEEvent:
    out = SSEParser().feed(frame)
    assert len(out) == 1 and isinstance(out[0], SSEEvent)
    return out[0]


def data(frame: bytes) -> Any:
    return json.loads(parse_one(frame).data)


def test_put_event() -> None:
    frame = ld.put_event({"f1": flag("f1", 1)}, {"s1": segment("s1", 2)}, id="e:5")
    event = parse_one(frame)
    assert (event.event, event.id) == ("put", "e:5")
    body = json.loads(event.data)
    assert body["path"] == "/"
    assert body["data"]["flags"]["f1"]["version"] == 1
    assert body["data"]["segments"]["s1"]["included"] == ["u"]


def test_empty_put_and_polling_body() -> None:
    assert data(ld.put_event({}, {}, id="e:-1")) == {
        "path": "/",
        "data": {"flags": {}, "segments": {}},
    }
    assert ld.polling_body({}, {}) == b'{"flags":{},"segments":{}}'


def test_items_are_spliced_unchanged() -> None:
    item = b'{"key":"f","version":2,"x":"\\u00e9"}'  # an escape a re-encoder would change
    assert item in ld.put_event({"f": item}, {}, id="i")
    assert item in ld.patch_event("flag", "f", item, id="i")
    assert item in ld.flags_put_event({"f": item}, id="i")
    assert item in ld.flags_patch_event("f", item, id="i")
    assert item in ld.polling_body({"f": item}, {})


def test_patch_and_delete_paths() -> None:
    p = parse_one(ld.patch_event("segment", "s1", segment("s1", 3), id="e:7"))
    assert (p.event, p.id) == ("patch", "e:7")
    assert json.loads(p.data)["path"] == "/segments/s1"
    assert data(ld.patch_event("flag", "f1", flag("f1", 3), id="e:7"))["path"] == "/flags/f1"
    d = parse_one(ld.delete_event("flag", "f1", 4, id="e:8"))
    assert (d.event, d.id) == ("delete", "e:8")
    assert json.loads(d.data) == {"path": "/flags/f1", "version": 4}
    assert data(ld.delete_event("segment", "s", 2, id="i")) == {"path": "/segments/s", "version": 2}


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        ld.patch_event("env", "x", b"{}", id="i")  # type: ignore[arg-type]


def test_legacy_flags_stream() -> None:
    put = parse_one(ld.flags_put_event({"f1": flag("f1", 1), "f2": flag("f2", 1)}, id="e:1"))
    assert put.event == "put"
    assert set(json.loads(put.data)) == {"f1", "f2"}  # the data IS the flags map
    patch = data(ld.flags_patch_event("f1", flag("f1", 2), id="e:2"))
    assert patch["path"] == "/f1" and patch["data"]["version"] == 2
    assert data(ld.flags_delete_event("f1", 3, id="e:3")) == {"path": "/f1", "version": 3}


def test_heartbeat_is_a_comment() -> None:
    assert ld.heartbeat() == b":\n"


def test_polling_body_with_tombstone() -> None:
    body = json.loads(
        ld.polling_body({"f": encode_item(make_tombstone("f", 4))}, {"s": segment("s", 1)})
    )
    assert body["flags"]["f"] == {"key": "f", "version": 4, "deleted": True}
    assert body["segments"]["s"]["key"] == "s"


@FAST
@given(st.text(max_size=20))
def test_any_key_gives_valid_json(key: str) -> None:
    item = b"{}"
    assert json.loads(ld.polling_body({key: item}, {}))["flags"] == {key: {}}
    assert data(ld.patch_event("flag", key, item, id="i"))["path"] == "/flags/" + key
    assert data(ld.flags_delete_event(key, 1, id="i"))["path"] == "/" + key


def apply(store: InMemoryFeatureStore, frame: bytes) -> None:
    """Feed a frame to the real LaunchDarkly Python SDK's stream message handler."""
    event = parse_one(frame)
    msg = Event(event=event.event, data=event.data, id=event.id)
    StreamingUpdateProcessor._process_message(None, store, msg)  # type: ignore[arg-type]


def test_the_python_sdk_applies_our_events() -> None:
    store = InMemoryFeatureStore()  # type: ignore[no-untyped-call]
    apply(
        store,
        ld.put_event(
            {"f1": flag("f1", 1), "gone": encode_item(make_tombstone("gone", 2))},
            {"s1": segment("s1", 1)},
            id="e:1",
        ),
    )
    assert store.initialized
    assert store.get(FEATURES, "f1", lambda x: x)["version"] == 1
    assert store.get(FEATURES, "gone", lambda x: x) is None  # tombstone kept as deleted
    apply(store, ld.patch_event("flag", "f1", flag("f1", 2, on=False), id="e:2"))
    assert store.get(FEATURES, "f1", lambda x: x)["on"] is False
    apply(store, ld.patch_event("flag", "f1", flag("f1", 1), id="e:3"))  # older: ignored
    assert store.get(FEATURES, "f1", lambda x: x)["version"] == 2
    apply(store, ld.patch_event("segment", "s2", segment("s2", 1), id="e:4"))
    assert store.get(SEGMENTS, "s2", lambda x: x)["key"] == "s2"
    apply(store, ld.delete_event("flag", "f1", 3, id="e:5"))
    assert store.get(FEATURES, "f1", lambda x: x) is None
    apply(store, ld.patch_event("flag", "f1", flag("f1", 2), id="e:6"))  # cannot resurrect
    assert store.get(FEATURES, "f1", lambda x: x) is None
