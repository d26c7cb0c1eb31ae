"""Render deploy/grafana/flagstream.json, the Grafana dashboard of a flagstream deployment.

``python deploy/grafana/build.py`` rewrites the JSON; ``--check`` exits 1 when the committed
file differs from what this script renders (tests/deploy/test_grafana.py runs it). The panels
show the same signals the alerts in deploy/prometheus/alerts.yml watch; every query is
checked against a real Prometheus scraping a live relay and publisher by
tests/deploy/test_prometheus.py. Import the JSON in Grafana (Dashboards → Import) and pick
the Prometheus data source that scrapes flagstream.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "flagstream.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

# (title, unit, [(legend, expr)], description) per panel, by row.
Panel = tuple[str, str, list[tuple[str, str]], str]

RELAY: list[Panel] = [
    (
        "Streams open / limit",
        "short",
        [
            ("{{instance}}", "sum by (instance) (flagstream_relay_connections)"),
            ("limit {{instance}}", "sum by (instance) (flagstream_relay_max_connections)"),
        ],
        "SSE streams held per relay (all its workers) and the limit above which new streams "
        "get 503. Alert: FlagstreamRelayConnectionsNearLimit.",
    ),
    (
        "Streams opened and closed",
        "ops",
        [
            ("opened", f"sum(rate(flagstream_relay_connections_opened_total[{RATE}]))"),
            (
                "closed: {{reason}}",
                f"sum by (reason) (rate(flagstream_relay_connections_closed_total[{RATE}]))",
            ),
        ],
        "Per second. 'evicted' = clients too slow for the buffer bound "
        "(alert: FlagstreamRelayEvictionsSpiking); 'drain' = relays stopping.",
    ),
    (
        "Requests refused",
        "ops",
        [
            (
                "{{reason}}",
                f"sum by (reason) (rate(flagstream_relay_connections_rejected_total[{RATE}]))",
            )
        ],
        "Per second, by reason: unauthorized (bad SDK key), not_ready, full, behind.",
    ),
    (
        "Fan-out delay (publish → write)",
        "s",
        [
            (
                "p50",
                "histogram_quantile(0.5, sum by (le) "
                f"(rate(flagstream_relay_fanout_delay_seconds_bucket[{RATE}])))",
            ),
            (
                "p99",
                "histogram_quantile(0.99, sum by (le) "
                f"(rate(flagstream_relay_fanout_delay_seconds_bucket[{RATE}])))",
            ),
        ],
        "From the record's publish timestamp to the bytes written to a stream. "
        "Alert: FlagstreamFanoutDelayHigh.",
    ),
    (
        "Fan-out volume",
        "short",
        [
            ("events/s", f"sum(rate(flagstream_relay_events_sent_total[{RATE}]))"),
            ("bytes/s", f"sum(rate(flagstream_relay_bytes_sent_total[{RATE}]))"),
            ("coalesced/s", f"sum(rate(flagstream_relay_coalesced_updates_total[{RATE}]))"),
        ],
        "Events and bytes written to streams per second, and changes replaced by a newer "
        "version before they were sent.",
    ),
    (
        "Stream starts: resumed vs full put",
        "ops",
        [
            ("resumed", f"sum(rate(flagstream_relay_resumptions_total[{RATE}]))"),
            ("full put", f"sum(rate(flagstream_relay_full_puts_total[{RATE}]))"),
            ("held (catch-up)", f"sum(rate(flagstream_relay_catchup_holds_total[{RATE}]))"),
        ],
        "After a relay restart most reconnects should resume (Last-Event-ID, no put).",
    ),
    (
        "Consumer lag",
        "short",
        [("{{instance}}", "max by (instance) (flagstream_relay_consumer_lag_records)")],
        "Records between the relay's position and the topic's end. Alert: FlagstreamRelayLagging.",
    ),
    (
        "Stale / ready",
        "short",
        [
            ("stale {{instance}}", "max by (instance) (flagstream_relay_stale)"),
            ("ready {{instance}}", "min by (instance) (flagstream_relay_ready)"),
        ],
        "stale = 1: Kafka unreachable, serving the last state (alert: FlagstreamRelayStale); "
        "ready = 0: bootstrapping (alert: FlagstreamRelayNotReady).",
    ),
    (
        "Records read",
        "ops",
        [
            ("consumed", f"sum(rate(flagstream_relay_records_consumed_total[{RATE}]))"),
            ("applied", f"sum(rate(flagstream_relay_records_applied_total[{RATE}]))"),
            ("ignored", f"sum(rate(flagstream_relay_records_ignored_total[{RATE}]))"),
            ("skipped", f"sum(rate(flagstream_relay_records_skipped_total[{RATE}]))"),
        ],
        "Per second. 'skipped' = undecodable records (alert: FlagstreamRelayRecordsSkipped).",
    ),
    (
        "State held",
        "short",
        [
            ("environments", "max(flagstream_relay_environments)"),
            ("flags and segments", "max(flagstream_relay_items)"),
            ("workers", "count(flagstream_relay_worker_info)"),
        ],
        "What the relays hold in memory, and how many worker processes answer.",
    ),
    (
        "Last record age at apply",
        "s",
        [("{{instance}}", "max by (instance) (flagstream_relay_last_record_age_seconds)")],
        "Age of the newest applied record's publish timestamp when it was applied.",
    ),
    (
        "Polling requests",
        "ops",
        [
            (
                "{{code}}",
                f"sum by (code) (rate(flagstream_relay_polling_requests_total[{RATE}]))",
            )
        ],
        "GET /sdk/latest-all answers per second (304 = unchanged).",
    ),
]

PUBLISHER: list[Panel] = [
    (
        "Writes by result",
        "ops",
        [
            (
                "{{result}}",
                f"sum by (result) (rate(flagstream_publisher_writes_total[{RATE}]))",
            )
        ],
        "pending = stored but not acknowledged by Kafka in time, answered 202 "
        "(alert: FlagstreamKafkaAckTimeouts).",
    ),
    (
        "Outbox depth",
        "short",
        [("depth", "sum(flagstream_publisher_outbox_depth)")],
        "Records committed but not yet acknowledged by Kafka. Alert: FlagstreamOutboxGrowing.",
    ),
    (
        "Commit → Kafka acknowledgement",
        "s",
        [
            (
                "p50",
                "histogram_quantile(0.5, sum by (le) "
                f"(rate(flagstream_publisher_forward_latency_seconds_bucket[{RATE}])))",
            ),
            (
                "p99",
                "histogram_quantile(0.99, sum by (le) "
                f"(rate(flagstream_publisher_forward_latency_seconds_bucket[{RATE}])))",
            ),
            (
                "forwarded/s",
                f"sum(rate(flagstream_publisher_records_forwarded_total[{RATE}]))",
            ),
        ],
        "Latency from the write's commit to Kafka's acknowledgement, and records forwarded.",
    ),
    (
        "Errors",
        "ops",
        [
            ("Kafka", f"sum(rate(flagstream_publisher_kafka_errors_total[{RATE}]))"),
            ("store", f"sum(rate(flagstream_publisher_store_errors_total[{RATE}]))"),
        ],
        "Failed Kafka operations (the forwarder retries) and store (Redis) failures "
        "(writes answered 503).",
    ),
    (
        "Forwarder lease holders",
        "short",
        [("holders", "sum(flagstream_publisher_forwarder_leader)")],
        "Exactly one publisher should hold it. Alert: FlagstreamForwarderWithoutLease.",
    ),
]


def _panel(panel_id: int, x: int, y: int, spec: Panel) -> dict[str, Any]:
    title, unit, queries, description = spec
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (legend, expr) in enumerate(queries)
        ],
    }


def render() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row_title, specs in (("Relays", RELAY), ("Publisher", PUBLISHER)):
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        for i, spec in enumerate(specs):
            panels.append(_panel(next_id, (i % 3) * 8, y + (i // 3) * 8, spec))
            next_id += 1
        y += -(-len(specs) // 3) * 8
    return {
        "uid": "flagstream",
        "title": "flagstream",
        "description": "Relays and publisher of a flagstream deployment (deploy/grafana).",
        "tags": ["flagstream"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def text() -> str:
    return json.dumps(render(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    rendered = text()
    if args.check:
        if OUTPUT.read_text(encoding="utf-8") != rendered:
            print(f"{OUTPUT} is stale: run python deploy/grafana/build.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(rendered, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
