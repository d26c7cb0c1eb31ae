"""``flagstream relay`` configuration: environment variables, flags over them, one clear
line per bad value and exit code 2."""

from __future__ import annotations

import pytest

from flagstream.fdlimit import connection_budget
from relay import cli
from relay.config import RelaySettings

pytestmark = pytest.mark.unit


def test_defaults_cover_the_contract() -> None:
    s = RelaySettings()
    assert (s.host, s.port) == ("127.0.0.1", 8030)
    assert s.kafka_bootstrap == "127.0.0.1:19092" and s.topic == "flagstream.state"
    assert s.max_connections == connection_budget() and s.max_buffer_bytes == 1024 * 1024
    assert s.heartbeat_interval == 15.0 and s.max_connection_lifetime is None
    assert s.lifetime_jitter == 0.1 and s.drain_window == 10.0 and s.catchup_wait == 5.0
    assert s.max_request_line == 8190 and s.max_header_size == 8190 and s.workers >= 1


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGSTREAM_KAFKA_BOOTSTRAP", "10.0.0.1:9092, 10.0.0.2:9092")
    monkeypatch.setenv("FLAGSTREAM_TOPIC", "flags.prod")
    monkeypatch.setenv("FLAGSTREAM_RELAY_PORT", "9000")
    monkeypatch.setenv("FLAGSTREAM_RELAY_MAX_CONNECTION_LIFETIME", "600")
    settings, level = cli.load_settings(["--port", "9100", "--catchup-wait", "2.5"])
    assert settings.kafka_bootstrap == "10.0.0.1:9092,10.0.0.2:9092"
    assert settings.topic == "flags.prod"
    assert settings.port == 9100  # the flag wins over the environment
    assert settings.catchup_wait == 2.5
    assert settings.max_connection_lifetime == 600.0
    assert level == "INFO"
    settings, _ = cli.load_settings(["--max-connection-lifetime", "none"])
    assert settings.max_connection_lifetime is None


def test_invalid_values_exit_2_with_one_line_each(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLAGSTREAM_RELAY_PORT", "eighty")
    code = cli.main(["--workers", "0", "--topic", "bad topic", "--kafka-bootstrap", "nohost"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4
    assert all(line.startswith("flagstream relay: invalid ") for line in lines)
    joined = "\n".join(lines)
    for where in ("--port / FLAGSTREAM_RELAY_PORT", "--workers", "--topic / FLAGSTREAM_TOPIC"):
        assert where in joined
    assert "host:port" in joined
    assert "Traceback" not in joined


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in RelaySettings.model_fields:
        assert cli.flag_name(name) in out
    assert "FLAGSTREAM_RELAY_CATCHUP_WAIT" in out
