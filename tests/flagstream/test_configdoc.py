"""docs/configuration.md is generated from the Settings classes and must match them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from flagstream import configdoc
from flagstream.configdoc import DOC_PATH, Service

pytestmark = pytest.mark.unit


class _Example(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLAGSTREAM_EXAMPLE_")

    port: int = Field(default=8080, ge=0, le=65535, description="port to bind")
    bootstrap: str = Field(
        default="127.0.0.1:19092",
        validation_alias=AliasChoices("bootstrap", "FLAGSTREAM_KAFKA_BOOTSTRAP"),
        description="Kafka | servers",
    )
    token: SecretStr | None = Field(default=None, description="admin token")
    lifetime: float | None = None


_FLAGS = (("--port", "port", str, "port to bind"),)

_SERVICE = Service(
    title="Example",
    command="flagstream example",
    settings=f"{__name__}:_Example",
    intro="An example.",
    flags=f"{__name__}:_FLAGS",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kafka-bootstrap", dest="bootstrap")
    parser.add_argument("-l", "--lifetime", dest="lifetime")
    return parser


def test_committed_reference_matches_the_code() -> None:
    rendered = configdoc.render()
    committed = DOC_PATH.read_text(encoding="utf-8")
    assert committed == rendered, (
        "docs/configuration.md is stale: run `.venv/bin/python -m flagstream.configdoc`"
    )


def test_every_settings_field_is_documented() -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    for service in configdoc.SERVICES:
        cls = configdoc._load(service.settings)
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            for env in configdoc._env_names(name, field, prefix):
                assert f"`{env}`" in text, f"{service.settings}.{name} ({env}) is not documented"


def test_row_shows_prefixed_name_range_default_and_meaning() -> None:
    text = configdoc.render_service(_SERVICE)
    assert (
        "| `FLAGSTREAM_EXAMPLE_PORT` | `--port` | int | `8080` | ≥ 0, ≤ 65535 | port to bind |"
        in text
    )


def test_shared_alias_is_documented_without_the_service_prefix() -> None:
    text = configdoc.render_service(_SERVICE)
    assert "`FLAGSTREAM_KAFKA_BOOTSTRAP`" in text
    assert "FLAGSTREAM_EXAMPLE_BOOTSTRAP" not in text
    assert "Kafka \\| servers" in text  # a pipe would break the table


def test_secret_and_optional_fields() -> None:
    text = configdoc.render_service(_SERVICE)
    assert "| `FLAGSTREAM_EXAMPLE_TOKEN` |  | secret or none | unset |" in text
    assert "| `FLAGSTREAM_EXAMPLE_LIFETIME` |  | float or none | unset |  |  |" in text


def test_flags_come_from_the_services_parser_or_flag_table() -> None:
    assert configdoc.flag_names(f"{__name__}:_parser") == {
        "bootstrap": "--kafka-bootstrap",
        "lifetime": "--lifetime",
    }
    assert configdoc.flag_names(f"{__name__}:_FLAGS") == {"port": "--port"}
    assert configdoc.flag_names(None) == {}
    relay_flags = configdoc.flag_names("relay.cli:build_parser")
    assert relay_flags["max_connections"] == "--max-connections"


def test_check_mode_reports_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "configuration.md"
    assert configdoc.main(["--output", str(target)]) == 0
    assert configdoc.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text(encoding="utf-8").replace("Relay", "Rel"), encoding="utf-8")
    capsys.readouterr()
    assert configdoc.main(["--check", "--output", str(target)]) == 1
    assert "is stale" in capsys.readouterr().out
