"""``python -m loadtest.bench_redis``: both clients measured on the real Redis, nothing left."""

from __future__ import annotations

import json

import pytest
import redis

from loadtest.bench_redis import main

pytestmark = pytest.mark.integration

KINDS = ("ping", "xrange32", "evalsha10k")


def test_every_command_is_measured_through_both_clients(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _bench_keys(redis_url)
    assert main(["--redis-url", redis_url, "--calls", "20", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) == {f"{k}_{c}" for k in KINDS for c in ("redis_py", "resp")}
    for row in figures.values():
        assert row["p50_us"] > 0 and row["cpu_us"] > 0
    assert _bench_keys(redis_url) == before  # its stream was deleted


def test_it_refuses_a_remote_redis_and_a_zero_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--redis-url", "redis://redis.example:6379/0"]) == 2
    assert "loopback" in capsys.readouterr().err
    assert main(["--redis-url", "redis://127.0.0.1:1/0", "--calls", "0"]) == 2
    assert "--calls" in capsys.readouterr().err


def _bench_keys(redis_url: str) -> set[bytes]:
    with redis.Redis.from_url(redis_url) as client:
        return set(client.scan_iter(match="bench:redis:*"))
