"""The driver: writes flag changes and tells the recorder when each one was accepted.

Two ways in, and every result says which one was used:

- ``PublisherDriver`` (``via = "publisher"``): the admin API, as an operator would —
  ``PATCH /api/v1/environments/{env}/flags/{key}`` with ``{"on": ...}``. Accepted = the
  publisher's 200 (Kafka acknowledged the record). Delays include publisher -> Kafka.
- ``KafkaDriver`` (``via = "kafka"``): envelopes produced straight into the topic with an
  idempotent ``acks=all`` producer, for pure relay figures. Accepted = the broker's ack.

Both keep the version of every flag they write, so each client can map a received
``(env, key, version)`` back to the write that made it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp

from loadtest.recorder import DeliveryRecorder
from protocol.envelope import Envelope, encode_envelope
from protocol.environment import CredentialHash, EnvironmentRecord, hash_secret, new_sdk_key
from protocol.keys import partition_for, record_key

__all__ = ["Driver", "DriverError", "KafkaDriver", "PublisherDriver", "flag_json"]

ACTOR = "loadtest"


class DriverError(Exception):
    """A write was refused or the backend is unreachable; the message says which and why."""


def flag_json(key: str, version: int, on: bool) -> dict[str, Any]:
    """A minimal valid LaunchDarkly flag (boolean, two variations)."""
    return {
        "key": key,
        "version": version,
        "on": on,
        "variations": [True, False],
        "fallthrough": {"variation": 0},
        "offVariation": 1,
        "targets": [],
        "contextTargets": [],
        "rules": [],
        "prerequisites": [],
        "salt": key,
        "trackEvents": False,
        "trackEventsFallthrough": False,
        "clientSideAvailability": {"usingMobileKey": False, "usingEnvironmentId": False},
        "deleted": False,
    }


def flag_key(i: int) -> str:
    return f"flag-{i}"


class Driver(Protocol):
    """Writes flags. ``change`` is safe to call concurrently; order per flag is not promised
    between concurrent calls (each call records the version it actually produced)."""

    via: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def create_environment(self, env: str, flags: int) -> str:
        """Create ``env`` with flags ``flag-0..flag-{flags-1}``; return an SDK key for it."""
        ...

    async def change(self, env: str, key: str) -> int:
        """Toggle ``env/key``'s ``on``; record sent/accepted times; return the new version."""
        ...


class PublisherDriver:
    """Writes through the publisher's admin API."""

    via = "publisher"

    def __init__(
        self, url: str, admin_token: str, recorder: DeliveryRecorder, *, inflight: int = 64
    ) -> None:
        self.url = url.rstrip("/")
        self.recorder = recorder
        self._headers = {"Authorization": f"Bearer {admin_token}"}
        self._session: aiohttp.ClientSession | None = None
        self._on: dict[tuple[str, str], bool] = {}
        self._inflight = inflight
        self.status_counts: dict[int, int] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._inflight, force_close=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, path: str, body: Any, ok: tuple[int, ...]) -> Any:
        assert self._session is not None, "start() first"
        try:
            async with self._session.request(method, self.url + path, json=body) as resp:
                self.status_counts[resp.status] = self.status_counts.get(resp.status, 0) + 1
                text = await resp.text()
                if resp.status not in ok:
                    detail = text[:300]
                    raise DriverError(f"publisher {method} {path} -> {resp.status}: {detail}")
                return json.loads(text) if text else None
        except aiohttp.ClientError as exc:
            raise DriverError(f"publisher at {self.url} unreachable: {exc}") from exc

    async def create_environment(self, env: str, flags: int) -> str:
        created = await self._request(
            "POST", "/api/v1/environments", {"key": env, "name": env}, (200, 201)
        )
        sdk_key = _find_sdk_key(created)
        if sdk_key is None:
            raise DriverError(f"no SDK key in the publisher's answer: keys {sorted(created)}")
        sem = asyncio.Semaphore(self._inflight)

        async def put(i: int) -> None:
            async with sem:
                k = flag_key(i)
                await self._request(
                    "PUT",
                    f"/api/v1/environments/{env}/flags/{k}",
                    flag_json(k, 1, False),
                    (200, 201, 202),
                )
                self._on[(env, k)] = False

        await asyncio.gather(*(put(i) for i in range(flags)))
        return sdk_key

    async def change(self, env: str, key: str) -> int:
        on = not self._on.get((env, key), False)
        self._on[(env, key)] = on
        sent = time.perf_counter()
        item = await self._request(
            "PATCH", f"/api/v1/environments/{env}/flags/{key}", {"on": on}, (200, 202)
        )
        accepted = time.perf_counter()
        version = int(item["version"])
        self.recorder.accepted(env, key, version, sent=sent, accepted=accepted)
        return version


def _find_sdk_key(obj: Any) -> str | None:
    """The first ``sdk-…`` string anywhere in the publisher's create-environment answer."""
    if isinstance(obj, str):
        return obj if obj.startswith("sdk-") else None
    if isinstance(obj, dict):
        # prefer fields that name the SDK key, then anything that looks like one
        for name in ("sdkKey", "sdk_key", "sdkKeys"):
            if name in obj and (found := _find_sdk_key(obj[name])) is not None:
                return found
        values: Any = list(obj.values())
    elif isinstance(obj, list):
        values = obj
    else:
        return None
    for v in values:
        if (found := _find_sdk_key(v)) is not None:
            return found
    return None


class KafkaDriver:
    """Produces envelopes straight into the topic (creating it, compacted, if missing)."""

    via = "kafka"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        recorder: DeliveryRecorder,
        *,
        partitions: int = 6,
        linger_ms: int = 0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.recorder = recorder
        self.partitions = partitions
        self.linger_ms = linger_ms
        self._producer: Any = None
        self._versions: dict[tuple[str, str], int] = {}
        self._on: dict[tuple[str, str], bool] = {}

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        await ensure_topic(self.bootstrap, self.topic, self.partitions)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
            max_batch_size=1 << 20,
            max_request_size=8 << 20,
        )
        try:
            await self._producer.start()
        except Exception as exc:
            raise DriverError(f"Kafka at {self.bootstrap} unreachable: {exc}") from exc
        parts = await self._producer.partitions_for(self.topic)
        if parts:
            self.partitions = len(parts)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    def _envelope(self, env: str, key: str, version: int, on: bool) -> bytes:
        item = json.dumps(flag_json(key, version, on), separators=(",", ":")).encode()
        return encode_envelope(
            Envelope(
                kind="flag",
                env=env,
                key=key,
                version=version,
                published_ms=int(time.time() * 1000),
                actor=ACTOR,
                item=item,
            )
        )

    def _send(self, env: str, kind: str, key: str, value: bytes) -> Any:
        return self._producer.send(
            self.topic,
            value=value,
            key=record_key(env, kind, key),  # type: ignore[arg-type]
            partition=partition_for(env, self.partitions),
        )

    async def fill_flags(
        self, env: str, count: int, progress: Callable[[int], None] | None = None
    ) -> None:
        """Write flags ``flag-0..flag-{count-1}`` (version 1) of ``env`` in large batches
        (bulk fills for cold starts; much faster than one ``send`` per record). Returns
        once every batch is acknowledged; nothing is recorded."""
        partition = partition_for(env, self.partitions)
        futures: list[Any] = []
        batch = self._producer.create_batch()
        in_batch = 0
        for j in range(count):
            key = flag_key(j)
            self._versions[(env, key)] = 1
            self._on[(env, key)] = False
            rk = record_key(env, "flag", key)
            value = self._envelope(env, key, 1, False)
            if batch.append(key=rk, value=value, timestamp=None) is None:
                futures.append(
                    await self._producer.send_batch(batch, self.topic, partition=partition)
                )
                if progress is not None:
                    progress(in_batch)
                batch = self._producer.create_batch()
                batch.append(key=rk, value=value, timestamp=None)
                in_batch = 0
            in_batch += 1
        if in_batch:
            futures.append(await self._producer.send_batch(batch, self.topic, partition=partition))
            if progress is not None:
                progress(in_batch)
        await asyncio.gather(*futures)

    async def create_environment(self, env: str, flags: int) -> str:
        sdk_key = new_sdk_key()
        record = EnvironmentRecord(
            key=env,
            name=env,
            version=1,
            sdk_keys=(CredentialHash(hash_secret(sdk_key)),),
            mobile_keys=(),
            client_side_id=env.replace(".", "-")[:64],
        )
        value = encode_envelope(
            Envelope(
                kind="env",
                env=env,
                key=env,
                version=1,
                published_ms=int(time.time() * 1000),
                actor=ACTOR,
                item=record.to_json(),
            )
        )
        futures = [await self._send(env, "env", env, value)]
        for i in range(flags):
            k = flag_key(i)
            self._versions[(env, k)] = 1
            self._on[(env, k)] = False
            futures.append(await self._send(env, "flag", k, self._envelope(env, k, 1, False)))
        await asyncio.gather(*futures)
        return sdk_key

    async def change(self, env: str, key: str) -> int:
        version = self._versions.get((env, key), 0) + 1
        self._versions[(env, key)] = version
        on = not self._on.get((env, key), False)
        self._on[(env, key)] = on
        sent = time.perf_counter()
        future = await self._send(env, "flag", key, self._envelope(env, key, version, on))
        await future
        self.recorder.accepted(env, key, version, sent=sent, accepted=time.perf_counter())
        return version


async def ensure_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` (compacted) if it does not exist yet."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
    except Exception as exc:
        raise DriverError(f"Kafka at {bootstrap} unreachable: {exc}") from exc
    try:
        if topic in await admin.list_topics():
            return
        try:
            result = await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=partitions,
                        replication_factor=1,
                        topic_configs={"cleanup.policy": "compact"},
                    )
                ]
            )
        except TopicAlreadyExistsError:
            return
        for _name, code, *_ in getattr(result, "topic_errors", []):
            if code not in (0, 36):  # 36: already exists (a concurrent creator)
                raise DriverError(f"could not create topic {topic!r}: Kafka error {code}")
    finally:
        await admin.close()


async def delete_topic(bootstrap: str, topic: str) -> None:
    """Delete ``topic`` (cleanup after a scenario that filled one)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
