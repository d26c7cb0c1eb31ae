"""A real LaunchDarkly server-side SDK (``launchdarkly-server-sdk``) that logs every change.

Run as ``python -m loadtest.chaos.sdk_client RELAY_URL`` with the SDK key in
``FLAGSTREAM_CHAOS_SDK_KEY`` (never on the command line, where ``ps`` would show it). The SDK
streams from the relay unchanged; its data store is the SDK's own in-memory store wrapped
so that every ``init`` (a full ``put``) and every ``upsert``/``delete`` (a ``patch`` or
``delete``) is printed as one JSON line with ``time.monotonic()`` (the same clock as the
chaos run's, on Linux) and the flag versions it carried. The chaos run replays these lines
(``loadtest.chaos.observers.replay_sdk_log``). SIGTERM closes the SDK and exits.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from ldclient.client import LDClient
from ldclient.config import Config
from ldclient.feature_store import InMemoryFeatureStore
from ldclient.versioned_data_kind import FEATURES

_lock = threading.Lock()


def _emit(entry: dict[str, Any]) -> None:
    entry["t"] = time.monotonic()
    with _lock:
        sys.stdout.write(json.dumps(entry, separators=(",", ":")) + "\n")
        sys.stdout.flush()


class LoggingStore(InMemoryFeatureStore):
    """The SDK's in-memory store, printing what the SDK asks of it."""

    def init(self, all_data: Any) -> None:
        flags = all_data.get(FEATURES, {}) or {}
        _emit({"op": "init", "flags": {k: int(v.get("version", 0)) for k, v in flags.items()}})
        super().init(all_data)  # type: ignore[no-untyped-call]

    def upsert(self, kind: Any, item: Any) -> None:
        if kind == FEATURES:
            _emit({"op": "upsert", "flags": {item["key"]: int(item.get("version", 0))}})
        super().upsert(kind, item)  # type: ignore[no-untyped-call]

    def delete(self, kind: Any, key: str, version: int) -> None:
        if kind == FEATURES:
            _emit({"op": "upsert", "flags": {key: int(version)}})
        super().delete(kind, key, version)


def main() -> int:
    url = sys.argv[1]
    sdk_key = os.environ["FLAGSTREAM_CHAOS_SDK_KEY"]
    config = Config(
        sdk_key,
        base_uri=url,
        stream_uri=url,
        events_uri=url,
        send_events=False,
        diagnostic_opt_out=True,
        initial_reconnect_delay=0.5,
        feature_store=LoggingStore(),  # type: ignore[no-untyped-call]
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = LDClient(config=config, start_wait=30)
    _emit({"op": "started", "initialized": client.is_initialized()})
    stop.wait()
    client.close()  # type: ignore[no-untyped-call]
    _emit({"op": "closed"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
