"""``flagstream publisher``: configuration errors (exit 2, one line each) and a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from flagstream.stack.process import free_port
from publisher.cli import main, parse_settings
from publisher.config import PublisherSettings

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-admin-token-0123456789"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("FLAGSTREAM_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.unit
def test_flags_override_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLAGSTREAM_ADMIN_TOKEN", TOKEN)
    clean_env.setenv("FLAGSTREAM_PUBLISHER_PORT", "9000")
    clean_env.setenv("FLAGSTREAM_TOPIC", "from.env")
    clean_env.setenv("FLAGSTREAM_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    settings = parse_settings(["--port", "9001", "--redis-prefix", "x:"])
    assert isinstance(settings, PublisherSettings)
    assert settings.port == 9001 and settings.topic == "from.env"
    assert settings.kafka_bootstrap == "10.0.0.1:9092" and settings.redis_prefix == "x:"
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--port", "70000"], {}, "--port / FLAGSTREAM_PUBLISHER_PORT"),
        (["--port", "abc"], {}, "FLAGSTREAM_PUBLISHER_PORT"),
        ([], {"FLAGSTREAM_PUBLISHER_ACK_TIMEOUT": "-1"}, "FLAGSTREAM_PUBLISHER_ACK_TIMEOUT"),
        (["--topic", "bad topic"], {}, "--topic / FLAGSTREAM_TOPIC"),
        (["--kafka-bootstrap", "nohost"], {}, "FLAGSTREAM_KAFKA_BOOTSTRAP"),
        (["--redis-url", "http://x"], {}, "FLAGSTREAM_REDIS_URL: must start with redis://"),
        ([], {"FLAGSTREAM_ADMIN_TOKEN": "short"}, "FLAGSTREAM_ADMIN_TOKEN: must be at least 16"),
        ([], {"FLAGSTREAM_ADMIN_TOKEN": ""}, "FLAGSTREAM_ADMIN_TOKEN"),
    ],
)
def test_invalid_config_exits_2_with_one_clear_line(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    fragment: str,
) -> None:
    clean_env.setenv("FLAGSTREAM_ADMIN_TOKEN", TOKEN)
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert err.count("\n") == 1, err


@pytest.mark.unit
def test_missing_admin_token_exits_2(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 2
    assert "FLAGSTREAM_ADMIN_TOKEN is required" in capsys.readouterr().err


def _get(url: str, token: str | None = None, body: object = None) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.e2e
async def test_publisher_process_serves_and_stops_on_sigterm(
    kafka_bootstrap: str, redis_url: str, unique_name: str
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLAGSTREAM_")},
        "FLAGSTREAM_ADMIN_TOKEN": TOKEN,
        "FLAGSTREAM_REDIS_URL": redis_url,
        "FLAGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLAGSTREAM_TOPIC": f"{unique_name}.state",
        "FLAGSTREAM_PUBLISHER_REDIS_PREFIX": f"{unique_name}:",
    }
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "flagstream", "publisher", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                status, _ = await asyncio.to_thread(_get, base + "/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("publisher did not become ready")
        status, body = await asyncio.to_thread(
            _get, base + "/api/v1/environments", TOKEN, {"key": "prod"}
        )
        assert status == 201, body
        status, body = await asyncio.to_thread(_get, base + "/api/v1/environments", "nope-token")
        assert status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            raw, _ = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            raise
        out = raw.decode()
        from publisher.redis_store import RedisStore

        store = RedisStore(redis_url, prefix=f"{unique_name}:")
        await store.delete_all()
        await store.close()
    assert proc.returncode == 0, out
    assert "publisher listening on" in out
    assert TOKEN not in out and "sdk-" not in out and "Traceback" not in out


@pytest.mark.integration
def test_impossible_replication_factor_exits_2_at_start(
    clean_env: pytest.MonkeyPatch,
    kafka_bootstrap: str,
    unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.setenv("FLAGSTREAM_ADMIN_TOKEN", TOKEN)
    clean_env.setenv("FLAGSTREAM_PUBLISHER_TOPIC_REPLICATION_FACTOR", "3")
    argv = ["--kafka-bootstrap", kafka_bootstrap, "--topic", f"{unique_name}.state"]
    assert main([*argv, "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "INVALID_REPLICATION_FACTOR" in err
    assert "FLAGSTREAM_PUBLISHER_TOPIC_REPLICATION_FACTOR to at most 1" in err


@pytest.mark.unit
def test_help_names_the_environment_variable_of_every_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_settings(["--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in (
        "FLAGSTREAM_TOPIC_PARTITIONS",
        "FLAGSTREAM_PUBLISHER_ACK_TIMEOUT",
        "FLAGSTREAM_PUBLISHER_LOG_LEVEL",
    ):
        assert f"({name})" in out
