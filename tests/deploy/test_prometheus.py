"""deploy/prometheus and deploy/grafana checked for real: promtool on the rules, their unit
tests and the example configuration; every metric the rules and the dashboard name exists
on a live relay and publisher, and every dashboard query runs on a real Prometheus; and a
real Prometheus scraping a relay sees FlagstreamRelayStale fire when Kafka stops and resolve
when it comes back."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_support import (
    EXAMPLE_CONFIG,
    RULE_TESTS,
    RULES,
    dashboard_expressions,
    exposed_names,
    metric_names,
    prometheus,
    promtool,
    rule_expressions,
)
from test_server import seeded

from flagstream.stack.kafka import KafkaBroker
from loadtest.procs import spawn_publisher, spawn_relay
from loadtest.procs import wait_ready as wait_service

ALERTS_IN_THE_ISSUE = {
    "FlagstreamRelayStale",
    "FlagstreamRelayLagging",
    "FlagstreamFanoutDelayHigh",
    "FlagstreamRelayEvictionsSpiking",
    "FlagstreamRelayConnectionsNearLimit",
    "FlagstreamRelayNotReady",
    "FlagstreamOutboxGrowing",
    "FlagstreamForwarderWithoutLease",
    "FlagstreamKafkaAckTimeouts",
}


def test_promtool_accepts_the_rules_and_the_example_config() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 14 rules found" in checked.stdout
    config = promtool("check", "config", str(EXAMPLE_CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests compare for real: a wrong expectation fails."""
    (tmp_path / "alerts.yml").write_text(RULES.read_text())
    broken = RULE_TESTS.read_text().replace("is 4.96s", "is 1.00s")
    assert broken != RULE_TESTS.read_text()
    (tmp_path / "t.yml").write_text(broken)
    result = promtool("test", "rules", "t.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "FlagstreamFanoutDelayHigh" in result.stdout + result.stderr


def test_every_alert_of_the_issue_exists_has_a_test_and_a_runbook() -> None:
    rules = rule_expressions()
    assert set(rules) >= ALERTS_IN_THE_ISSUE
    tests = RULE_TESTS.read_text()
    runbooks = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    anchors = {h.lower() for h in re.findall(r"^#### (Flagstream\w+)", runbooks, re.MULTILINE)}
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert f"alertname: {name}" in tests, f"{name} has no promtool unit test"
            url = rule["annotations"]["runbook_url"]
            assert url.startswith("docs/operations.md#"), url
            assert url.split("#", 1)[1] in anchors, f"{name}: no section for {url}"
            assert name in runbooks, f"{name} is not named in docs/operations.md"
    assert {name.lower() for name in ALERTS_IN_THE_ISSUE} <= anchors


@pytest.mark.e2e
async def test_every_metric_of_the_rules_and_the_dashboard_exists_on_live_services(
    kafka_bootstrap: str, redis_url: str, unique_name: str
) -> None:
    token = "metrics-check-admin-token-0123"
    publisher = spawn_publisher(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topic=unique_name,
        admin_token=token,
        extra_env={"FLAGSTREAM_PUBLISHER_REDIS_PREFIX": f"{unique_name}:"},
    )
    relay = None
    try:
        await wait_service(publisher.url, service=publisher)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                publisher.url + "/api/v1/environments",
                json={"key": "prod", "name": "Prod"},
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                assert r.status == 201, await r.text()
            relay = spawn_relay(kafka_bootstrap=kafka_bootstrap, topic=unique_name, workers=2)
            await wait_service(relay.url, service=relay)
            exposed: set[str] = set()
            for url in (relay.url, publisher.url):
                async with session.get(url + "/metrics") as r:
                    assert r.status == 200
                    exposed |= exposed_names(await r.text())
        used = metric_names([*rule_expressions().values(), *dashboard_expressions()])
        assert len(used) >= 25
        assert used - exposed == set()
    finally:
        if relay is not None:
            relay.close()
        publisher.close()


def _stale_rule_fires_sooner(rules: str) -> str:
    """alerts.yml with FlagstreamRelayStale's ``for`` shortened (same expression)."""
    marker = "      - alert: FlagstreamRelayStale\n"
    head, rest = rules.split(marker, 1)
    rest, count = re.subn(r"\n        for: 2m\n", "\n        for: 3s\n", rest, count=1)
    assert count == 1
    return head + marker + rest


@pytest.mark.e2e
@pytest.mark.slow
async def test_prometheus_sees_the_stale_alert_fire_and_resolve_across_a_kafka_outage(
    tmp_path: Path, private_kafka: KafkaBroker, unique_name: str
) -> None:
    async with seeded(private_kafka.bootstrap, unique_name):
        pass  # topic, environment and flags exist
    relay = spawn_relay(
        kafka_bootstrap=private_kafka.bootstrap,
        topic=unique_name,
        workers=2,
        extra_env={
            "FLAGSTREAM_RELAY_STALE_AFTER": "2",
            "FLAGSTREAM_RELAY_RECONNECT_BACKOFF_MAX": "1",
        },
    )
    try:
        await wait_service(relay.url, service=relay)
        host = relay.url.removeprefix("http://")
        rules = _stale_rule_fires_sooner(RULES.read_text())
        with prometheus(tmp_path / "prom", {"flagstream-relay": [host]}, rules) as prom:
            async with aiohttp.ClientSession() as session:
                # Scraped and healthy: up, not stale, no alert.
                for _ in range(60):
                    data = await prom.api(session, "query", query="flagstream_relay_stale")
                    if data["result"]:
                        break
                    await asyncio.sleep(0.5)
                assert [r["value"][1] for r in data["result"]] == ["0"]
                assert await prom.alerts(session, "FlagstreamRelayStale") == []
                # Every dashboard query is valid PromQL on this server.
                for expr in dashboard_expressions():
                    await prom.api(session, "query", query=expr.replace("$__rate_interval", "1m"))

                await asyncio.to_thread(private_kafka.stop)
                firing = await prom.wait_alert(session, "FlagstreamRelayStale", "firing", 90)
                assert firing[0]["labels"]["instance"] == host
                assert firing[0]["labels"]["severity"] == "critical"
                assert "cannot read Kafka" in firing[0]["annotations"]["summary"]

                await asyncio.to_thread(private_kafka.start, 240.0)
                await prom.wait_alert(session, "FlagstreamRelayStale", None, 120)
                data = await prom.api(session, "query", query="flagstream_relay_stale")
                assert [r["value"][1] for r in data["result"]] == ["0"]
    finally:
        relay.close()
