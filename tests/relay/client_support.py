"""Helpers of the client-side / mobile tests: an environment with every credential and
client setting, flags that target, contexts in the URL form SDKs send, and a relay on it."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from relay_support import Backend, RunningRelay, flag, item_envelope, run_relay, wait_ready

from protocol.envelope import Envelope
from protocol.environment import CredentialHash, EnvironmentRecord, hash_secret

ENV = "web"
CLIENT_ID = "5f0c1d2e3b4a596877665544"
MOBILE_KEY = "mob-11111111-2222-3333-4444-555555555555"
SDK_KEY = "sdk-11111111-2222-3333-4444-555555555555"
SECRET = "sms-test-secret-0123456789abcdef"
BOTH = {"usingEnvironmentId": True, "usingMobileKey": True}


def b64(context: dict[str, Any]) -> str:
    """The context as LaunchDarkly's SDKs put it in a URL: base64url JSON, no padding."""
    raw = json.dumps(context, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def env_envelope(
    *,
    version: int = 1,
    secure_mode: bool = False,
    origins: Iterable[str] = ("*",),
    mode: str = "evaluated",
    env: str = ENV,
    client_id: str = CLIENT_ID,
) -> Envelope:
    record = EnvironmentRecord(
        key=env,
        name=env,
        version=version,
        sdk_keys=(CredentialHash(hash_secret(SDK_KEY)),),
        mobile_keys=(CredentialHash(hash_secret(MOBILE_KEY)),),
        client_side_id=client_id,
        secure_mode=secure_mode,
        secure_mode_secret=SECRET,
        allowed_origins=tuple(origins),
        client_stream_mode=mode,  # type: ignore[arg-type]
    )
    return Envelope(
        kind="env",
        env=env,
        key=env,
        version=version,
        published_ms=int(time.time() * 1000),
        actor="test",
        item=record.to_json(),
    )


def targeted(key: str, version: int, **extra: Any) -> dict[str, Any]:
    """A flag visible to JS and mobile: alice is targeted (variation 1 = false), a rule
    serves false to emails at example.org, everyone else gets the fallthrough (true)."""
    item = flag(
        key,
        version,
        targets=[{"variation": 1, "values": ["alice"]}],
        rules=[
            {
                "id": "r1",
                "variation": 1,
                "clauses": [{"attribute": "email", "op": "endsWith", "values": ["@example.org"]}],
            }
        ],
        clientSideAvailability=BOTH,
    )
    item.update(extra)
    return item


def rollout(key: str, version: int) -> dict[str, Any]:
    """A 50/50 percentage rollout over [true, false] by user key."""
    return flag(
        key,
        version,
        fallthrough={
            "rollout": {
                "variations": [{"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]
            }
        },
        clientSideAvailability=BOTH,
    )


async def seed(
    backend: Backend, *envelopes: Envelope, flags: Iterable[dict[str, Any]] = ()
) -> None:
    async with backend.producer() as producer:
        for e in envelopes:
            await producer.send(e)
        for item in flags:
            await producer.send(item_envelope(ENV, "flag", item))


@contextlib.asynccontextmanager
async def client_relay(backend: Backend, **settings: Any) -> AsyncIterator[RunningRelay]:
    async with run_relay(backend.settings(**settings), backend.source()) as relay:
        await wait_ready(relay)
        yield relay


@dataclass
class Http:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)
