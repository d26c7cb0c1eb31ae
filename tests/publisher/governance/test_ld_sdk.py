"""The official LaunchDarkly Python SDK, streaming from a relay that reads the real Kafka topic
the publisher writes to, sees a scheduled change arrive at its time and every step of a
progressive rollout arrive, each as its own version."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gov_support import flag_body
from ldclient import Context, LDClient
from ldclient.config import Config
from ldclient.feature_store import InMemoryFeatureStore
from ldclient.versioned_data_kind import FEATURES
from publisher_support import ADMIN, Api, ApiFactory
from relay_support import relay_settings, run_relay, wait_ready, wait_until

from publisher.governance import scheduler as scheduler_module
from publisher.governance.install import GOVERNANCE
from publisher.redis_store import RedisStore

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class RecordingStore(InMemoryFeatureStore):  # type: ignore[misc]
    """The SDK's own in-memory store, remembering every flag version the SDK received."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.seen: list[tuple[float, str, int, dict[str, Any]]] = []

    def _record(self, item: dict[str, Any]) -> None:
        with self.lock:
            self.seen.append((time.time(), item["key"], item["version"], item))

    def init(self, all_data: Any) -> None:
        super().init(all_data)
        for item in all_data.get(FEATURES, {}).values():
            self._record(item)

    def upsert(self, kind: Any, item: dict[str, Any]) -> None:
        super().upsert(kind, item)
        if kind == FEATURES:
            self._record(item)

    def versions(self, key: str) -> list[tuple[float, int, dict[str, Any]]]:
        with self.lock:
            return [(t, v, i) for t, k, v, i in self.seen if k == key]


@pytest.fixture
async def publisher(
    make_api: ApiFactory, redis_url: str, unique_name: str
) -> AsyncIterator[tuple[Api, str]]:
    store = RedisStore(redis_url, prefix=f"{unique_name}:")
    try:
        api = await make_api(store, scheduler_interval=0.05)
        status, env, _ = await api.call("POST", "/api/v1/environments", {"key": "prod"})
        assert status == 201, env
        for body in (
            flag_body("launch"),
            {**flag_body("colour"), "variations": ["red", "green"]},
        ):
            status, _, _ = await api.call(
                "PUT", f"/api/v1/environments/prod/flags/{body['key']}", body
            )
            assert status == 201
        yield api, env["sdkKey"]
    finally:
        await store.delete_all()
        await store.close()


async def test_ld_sdk_sees_a_scheduled_change_and_every_rollout_step(
    publisher: tuple[Api, str], kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, sdk_key = publisher
    # The rollout's steps hold an hour each; once the SDK has a step, the test sets the
    # scheduler's clock to the time the next one is due (so that one alone falls due). With
    # holds of a second, a loaded machine could deliver two steps to the relay together,
    # which then sends only the later one (coalescing): the SDK would never see the earlier.
    clock: dict[str, int | None] = {"ms": None}
    real_now_ms = scheduler_module.now_ms

    def scheduler_now_ms() -> int:
        return real_now_ms() if clock["ms"] is None else clock["ms"]

    monkeypatch.setattr(scheduler_module, "now_ms", scheduler_now_ms)
    async with run_relay(relay_settings(kafka_bootstrap, api.topic)) as relay:
        await wait_ready(relay)
        recording = RecordingStore()
        config = Config(
            sdk_key,
            base_uri=relay.url,
            stream_uri=relay.url,
            events_uri=relay.url,
            send_events=False,
            diagnostic_opt_out=True,
            initial_reconnect_delay=0.1,
            feature_store=recording,
        )
        client = await asyncio.to_thread(LDClient, config, 15)
        try:
            assert client.is_initialized()
            someone = Context.create("someone")
            assert client.variation("launch", someone, None) is True

            # -- a scheduled change arrives at its time, not before ---------------------
            at = int(time.time() * 1000) + 1500
            status, cr, _ = await api.call(
                "POST",
                "/api/v1/environments/prod/change-requests",
                {
                    "resource": "flags/launch",
                    "change": {"mergePatch": {"on": False}},
                    "executeAt": at,
                },
                token=ADMIN,
            )
            assert status == 201 and cr["status"] == "scheduled"
            await wait_until(lambda: len(recording.versions("launch")) >= 2, within=20)
            received, version, item = recording.versions("launch")[-1]
            assert (version, item["on"]) == (2, False)
            assert received * 1000 >= at
            assert client.variation("launch", someone, None) is False
            print(
                f"\nscheduled change: due {at}, seen by the SDK "
                f"{received * 1000 - at:.0f} ms after its time"
            )

            # -- every step of a progressive rollout -------------------------------------
            plan_path = "/api/v1/environments/prod/flags/colour/rollout-plan"
            status, plan, _ = await api.call(
                "PUT",
                plan_path,
                {
                    "toVariation": 1,
                    "steps": [
                        {"percent": 10, "holdSeconds": 3600},
                        {"percent": 50, "holdSeconds": 3600},
                        {"percent": 100, "holdSeconds": 0},
                    ],
                },
                token=ADMIN,
            )
            assert status == 201, plan
            for seen_versions in (2, 3, 4):
                await wait_until(
                    lambda n=seen_versions: len(recording.versions("colour")) >= n, within=30
                )
                status, shown, _ = await api.call("GET", plan_path, token=ADMIN)
                assert status == 200, shown
                if shown["nextStepAt"] is not None:  # the step's hold is over
                    clock["ms"] = shown["nextStepAt"]
                    api.app[GOVERNANCE].scheduler.kick()
            seen = recording.versions("colour")
            assert [v for _, v, _ in seen] == [1, 2, 3, 4]
            weights = [
                [w["weight"] for w in i["fallthrough"]["rollout"]["variations"]]
                for _, _, i in seen[1:]
            ]
            assert weights == [[90000, 10000], [50000, 50000], [0, 100000]]
            contexts = [Context.create(f"user-{n}") for n in range(200)]
            assert {client.variation("colour", c, None) for c in contexts} == {"green"}
        finally:
            await asyncio.to_thread(client.close)
