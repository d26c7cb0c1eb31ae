"""Schemathesis against the publisher's own ``/openapi.json``, on a real publisher process
over the real Redis and Kafka of the local stack.

Every operation of the document is called with generated requests, valid ones and invalid
ones (schemathesis' positive and negative modes), half of them aimed at an environment, a
flag and a segment that exist so the calls reach past the 404s. For every answer:
- no 5xx, and it conforms to the document (status code listed, content type, body schema,
  required headers, invalid data rejected: schemathesis' own checks; all but the one that
  wants every schema-valid body accepted, since the publisher's rules go beyond a schema);
- a rejected request (4xx) changed nothing: the publisher's Redis keys (items, versions,
  environments, tokens, audit, governance records, schedule, secrets) hash the same before
  and after it. The one documented exception: an apply refused because the change no longer
  fits the item (409 ``request-failed``) records that failure on the change request
  (docs/governance.md, change requests rule 5); then nothing but that request and the audit
  log may have changed.

Governance (docs/governance.md) is fuzzed on things that exist too: a change request, a
trigger (its id; another one's secret for the trigger URL) and a rollout plan on the known flag.
Work the scheduler does by itself (a rollout step coming due) is not a request's doing: before
each case the test waits until nothing is due within the next 10 s, so no scheduled write can
land while a case runs; and it puts the environment's policy back to the default, so that a
policy set by an earlier case does not refuse every later write.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from flagstream.stack.process import free_port
from publisher.openapi import openapi_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOKEN = "fuzz-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = "fuzzenv"
DEFAULT_POLICY = {
    "requiredApprovals": 0,
    "allowSelfApproval": False,
    "requireComment": False,
    "critical": False,
}
QUIET_MS = 10_000
FLAG = {
    "on": True,
    "variations": [True, False],
    "fallthrough": {"variation": 0},
    "offVariation": 1,
}

schema = schemathesis.openapi.from_dict(openapi_spec())
# Unknown query parameters are ignored, as most HTTP APIs do: not generated as "invalid".
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], allow_extra_parameters=False
)


@dataclass
class Publisher:
    url: str
    prefix: str
    redis: redis.Redis
    ids: dict[str, str]  # what exists: change request, trigger and its secret


@pytest.fixture(scope="module")
def publisher(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str
) -> Iterator[Publisher]:
    name = f"t-{uuid.uuid4().hex[:12]}"
    prefix = f"{name}:"
    port = free_port()
    log_path = tmp_path_factory.mktemp("fuzz") / "publisher.log"
    env = {
        **os.environ,
        "FLAGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLAGSTREAM_REDIS_URL": redis_url,
        "FLAGSTREAM_TOPIC": name,
        "FLAGSTREAM_TOPIC_PARTITIONS": "1",
        "FLAGSTREAM_ADMIN_TOKEN": TOKEN,
        "FLAGSTREAM_PUBLISHER_REDIS_PREFIX": prefix,
        "FLAGSTREAM_PUBLISHER_PORT": str(port),
        "FLAGSTREAM_PUBLISHER_HOST": "127.0.0.1",
        "FLAGSTREAM_PUBLISHER_SCHEDULER_INTERVAL": "0.1",
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "publisher.cli"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        created = requests.post(
            url + "/api/v1/environments", json={"key": ENV, "name": "Fuzz"}, headers=AUTH
        )
        assert created.status_code == 201, created.text
        for kind, body in (("flags", FLAG), ("segments", {"included": ["a"]})):
            answer = requests.put(
                f"{url}/api/v1/environments/{ENV}/{kind}/known", json=body, headers=AUTH
            )
            assert answer.status_code in (200, 201), answer.text
        yield Publisher(url, prefix, client, _governance(url))
        log = log_path.read_text()
        assert "Traceback" not in log, log[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()
        _delete_topic(kafka_bootstrap, name)


def _governance(url: str) -> dict[str, str]:
    """A change request, two triggers and a rollout plan on the known flag (the plan's first
    step is written at once, its second an hour later)."""
    base = f"{url}/api/v1/environments/{ENV}"

    def post(method: str, path: str, body: object) -> dict[str, str]:
        answer = requests.request(method, base + path, json=body, headers=AUTH, timeout=30)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    request = post(
        "POST", "/change-requests", {"resource": "flags/known", "change": {"mergePatch": {}}}
    )
    trigger = post("POST", "/flags/known/triggers", {"action": "off"})
    # a second one for the trigger URL: the first may be deleted by a case before it is called
    called = post("POST", "/flags/known/triggers", {"action": "on"})
    post(
        "PUT",
        "/flags/known/rollout-plan",
        {
            "steps": [{"percent": 10, "holdSeconds": 3600}, {"percent": 100, "holdSeconds": 0}],
            "toVariation": 1,
        },
    )
    return {
        "change-requests": request["id"],
        "triggers": trigger["id"],
        "secret": called["url"].rsplit("/", 1)[1],
    }


def settle(publisher: Publisher) -> None:
    """Nothing scheduled comes due while the next case runs; the policy is the default."""
    schedule = f"{publisher.prefix}gov:schedule"
    deadline = time.monotonic() + 120
    while publisher.redis.zrangebyscore(schedule, "-inf", int(time.time() * 1000) + QUIET_MS):
        assert time.monotonic() < deadline, "the scheduler did not get through what is due"
        time.sleep(0.1)
    env = requests.get(f"{publisher.url}/api/v1/environments/{ENV}", headers=AUTH, timeout=30)
    if env.status_code == 200 and any(env.json()[k] != v for k, v in DEFAULT_POLICY.items()):
        reset = requests.patch(
            f"{publisher.url}/api/v1/environments/{ENV}",
            json=DEFAULT_POLICY,
            headers=AUTH,
            timeout=30,
        )
        assert reset.status_code == 200, reset.text


def _delete_topic(bootstrap: str, topic: str) -> None:
    import asyncio

    from loadtest.driver import delete_topic

    with contextlib.suppress(Exception):
        asyncio.run(delete_topic(bootstrap, topic))


# Keys that change on their own (lease renewals, the forwarder draining the outbox), per
# request (write-id markers) or per call (a trigger URL's rate window: counting a refused
# call is the rate limit's job) are not "state" a rejected request could have changed.
_VOLATILE = ("forwarder:", "outbox", "write:", "gov:rate:")
# What an apply that failed on the item's state records (see the module docstring).
_APPLY_FAILURE = ("gov:change-request:", "gov:rev:change-request:", "audit:")


def fingerprint(publisher: Publisher, *, ignore: tuple[str, ...] = ()) -> str:
    digest = hashlib.sha256()
    r = publisher.redis
    for raw in sorted(r.scan_iter(match=f"{publisher.prefix}*", count=1000)):
        key = raw.decode()
        if any(part in key for part in _VOLATILE + ignore):
            continue
        kind = r.type(raw).decode()
        if kind == "hash":
            value = sorted(r.hgetall(raw).items())
        elif kind == "list":
            value = r.lrange(raw, 0, -1)
        elif kind == "string":
            value = r.get(raw)
        elif kind == "zset":
            value = r.zrange(raw, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(r.smembers(raw))
        else:
            value = kind
        digest.update(f"{key}={value!r}\n".encode())
    return digest.hexdigest()


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_answers_per_its_document(
    case: schemathesis.Case, publisher: Publisher
) -> None:
    # Half of the cases aim at things that exist, so they reach the handlers' real work.
    rng = random.Random(repr((case.method, case.path, case.path_parameters, case.body)))
    if case.path_parameters and rng.random() < 0.5:
        if "env" in case.path_parameters:
            case.path_parameters["env"] = ENV
        if "key" in case.path_parameters:
            case.path_parameters["key"] = "known"
        if "id" in case.path_parameters:
            for collection in ("change-requests", "triggers"):
                if f"/{collection}/" in case.path:
                    case.path_parameters["id"] = publisher.ids[collection]
        if "secret" in case.path_parameters:
            case.path_parameters["secret"] = publisher.ids["secret"]
    settle(publisher)
    before = fingerprint(publisher)
    is_apply = case.path.endswith("/apply")
    before_apply = fingerprint(publisher, ignore=_APPLY_FAILURE) if is_apply else ""
    response = case.call(base_url=publisher.url, headers=AUTH, timeout=30)
    # Every check but "valid data is accepted": the document's body schemas give the shape
    # (an object), while the publisher also applies rules no JSON Schema states (variation
    # indices in range, printable names, admin tokens only for every environment), and
    # answers 422 with the rule when one is broken.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500, response.text
    if 400 <= response.status_code < 500:
        if is_apply and _apply_failed(response):
            before, after = before_apply, fingerprint(publisher, ignore=_APPLY_FAILURE)
        else:
            after = fingerprint(publisher)
        assert after == before, (
            f"{case.method} {case.formatted_path} was rejected with {response.status_code} "
            "but changed the publisher's state"
        )


def _apply_failed(response: requests.Response) -> bool:
    if response.status_code != 409:
        return False
    body = response.json()
    return bool(
        body["type"].endswith("/request-failed")
        and body.get("changeRequest", {}).get("status") == "failed"
    )
