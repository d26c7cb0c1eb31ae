"""Schemathesis against the publisher's own ``/openapi.json``, on a real publisher process
over the real Redis and Kafka of the local stack.

Every operation of the document is called with generated requests, valid ones and invalid
ones (schemathesis' positive and negative modes), half of them aimed at an environment, a
flag and a segment that exist so the calls reach past the 404s. For every answer:
- no 5xx, and it conforms to the document (status code listed, content type, body schema,
  required headers, invalid data rejected: schemathesis' own checks; all but the one that
  wants every schema-valid body accepted, since the publisher's rules go beyond a schema);
- a rejected request (4xx) changed nothing: the publisher's Redis keys (items, versions,
  environments, tokens, audit) hash the same before and after it.
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
ENV = "fuzzenv"
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
        auth = {"Authorization": f"Bearer {TOKEN}"}
        created = requests.post(
            url + "/api/v1/environments", json={"key": ENV, "name": "Fuzz"}, headers=auth
        )
        assert created.status_code == 201, created.text
        for kind, body in (("flags", FLAG), ("segments", {"included": ["a"]})):
            answer = requests.put(
                f"{url}/api/v1/environments/{ENV}/{kind}/known", json=body, headers=auth
            )
            assert answer.status_code in (200, 201), answer.text
        yield Publisher(url, prefix, client)
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


def _delete_topic(bootstrap: str, topic: str) -> None:
    import asyncio

    from loadtest.driver import delete_topic

    with contextlib.suppress(Exception):
        asyncio.run(delete_topic(bootstrap, topic))


# Keys that change on their own (lease renewals, the forwarder draining the outbox) or per
# request (write-id markers) are not "state" a rejected request could have changed.
_VOLATILE = ("forwarder:", "outbox", "write:")


def fingerprint(publisher: Publisher) -> str:
    digest = hashlib.sha256()
    r = publisher.redis
    for raw in sorted(r.scan_iter(match=f"{publisher.prefix}*", count=1000)):
        key = raw.decode()
        if any(part in key for part in _VOLATILE):
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
    before = fingerprint(publisher)
    response = case.call(
        base_url=publisher.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    # Every check but "valid data is accepted": the document's body schemas give the shape
    # (an object), while the publisher also applies rules no JSON Schema states (variation
    # indices in range, printable names, admin tokens only for every environment), and
    # answers 422 with the rule when one is broken.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500, response.text
    if 400 <= response.status_code < 500:
        assert fingerprint(publisher) == before, (
            f"{case.method} {case.formatted_path} was rejected with {response.status_code} "
            "but changed the publisher's state"
        )
