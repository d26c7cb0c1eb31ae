"""The command line: help, bad arguments, unreachable systems -> one line, exit 2."""

from __future__ import annotations

import pytest

from loadtest.cli import build_parser, main
from loadtest.procs import free_port

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "scenario", ["fanout", "throughput", "capacity", "reconnect-storm", "cold-start"]
)
def test_every_scenario_has_help(scenario: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([scenario, "--help"])
    assert exc.value.code == 0
    assert "--spawn" in capsys.readouterr().out


def test_defaults_say_how_changes_are_written() -> None:
    parser = build_parser()
    assert parser.parse_args(["fanout"]).via == "publisher"
    assert parser.parse_args(["throughput"]).via == "kafka"
    with pytest.raises(SystemExit):
        parser.parse_args(["throughput", "--rates", "1,x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["cold-start", "--sizes", "0"])


def test_storm_needs_spawn(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["reconnect-storm", "--relay", "http://127.0.0.1:1", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--spawn" in err and "Traceback" not in err


def test_unreachable_kafka_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    rc = main(
        ["capacity", "--relay", "http://127.0.0.1:1", "--kafka", f"127.0.0.1:{port}", "--quiet"]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0] and "stack up" in err[0]
