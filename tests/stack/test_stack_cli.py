"""``flagstream stack up|down|status``: the shared stack is only ever reused and queried
here; start/stop behaviour is exercised on private data dirs and ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagstream.stack import cli, process
from flagstream.stack.jars import ensure_jars
from flagstream.stack.kafka import KafkaBroker
from flagstream.stack.redis import RedisServer
from flagstream.stack.stack import Stack, resolve_config

pytestmark = pytest.mark.integration


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "flagstream", "stack", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


@pytest.fixture
def private_args(tmp_path: Path) -> Iterator[list[str]]:
    """CLI options for a private stack; whatever it started is stopped afterwards."""
    kafka, controller, redis = process.free_ports(3)
    args = [
        "--data-dir",
        str(tmp_path / "stack"),
        "--kafka-port",
        str(kafka),
        "--controller-port",
        str(controller),
        "--redis-port",
        str(redis),
    ]
    yield args
    Stack(resolve_config(tmp_path / "stack", kafka, controller, redis)).down()


def test_up_reuses_the_running_shared_stack(
    local_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    kafka_pid, redis_pid = local_stack.kafka.pid, local_stack.redis.pid
    assert cli.main(["up", "--data-dir", str(local_stack.config.data_dir)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"FLAGSTREAM_KAFKA_BOOTSTRAP={local_stack.kafka.bootstrap}",
        f"FLAGSTREAM_REDIS_URL={local_stack.redis.url}",
    ]
    assert (local_stack.kafka.pid, local_stack.redis.pid) == (kafka_pid, redis_pid)


def test_status_of_the_shared_stack(local_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--data-dir", str(local_stack.config.data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"kafka: running pid {local_stack.kafka.pid}, ready" in out
    assert f"redis: running pid {local_stack.redis.pid}, ready" in out


def test_up_down_status_cycle_leaves_no_process(private_args: list[str]) -> None:
    up = run_cli("up", *private_args)
    assert up.returncode == 0, up.stderr
    env = dict(line.split("=", 1) for line in up.stdout.splitlines())
    assert set(env) == {"FLAGSTREAM_KAFKA_BOOTSTRAP", "FLAGSTREAM_REDIS_URL"}
    assert "Traceback" not in up.stderr

    data_dir = Path(private_args[1])
    kafka_pid = process.read_pid(data_dir / "kafka" / "kafka.pid")
    redis_pid = process.read_pid(data_dir / "redis" / "redis.pid")
    assert kafka_pid and redis_pid
    assert process.is_running(kafka_pid, ["kafka.Kafka"])
    assert process.is_running(redis_pid, ["redis-server"])

    again = run_cli("up", *private_args)
    assert again.returncode == 0 and again.stdout == up.stdout
    assert "already running" in again.stderr
    assert process.read_pid(data_dir / "kafka" / "kafka.pid") == kafka_pid

    status = run_cli("status", *private_args)
    assert status.returncode == 0 and status.stdout.count(", ready") == 2

    down = run_cli("down", *private_args)
    assert down.returncode == 0, down.stderr
    assert not process.is_running(kafka_pid, [])
    assert not process.is_running(redis_pid, [])

    stopped = run_cli("status", *private_args)
    assert stopped.returncode == 1
    assert "kafka: stopped" in stopped.stdout and "redis: stopped" in stopped.stdout
    assert run_cli("down", *private_args).returncode == 0  # nothing left: still fine


def test_down_of_a_missing_data_dir_is_a_no_op(tmp_path: Path) -> None:
    assert cli.main(["down", "--data-dir", str(tmp_path / "nothing")]) == 0


def test_down_purge_deletes_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    (data_dir / "kafka").mkdir(parents=True)
    assert cli.main(["down", "--purge", "--data-dir", str(data_dir)]) == 0
    assert not data_dir.exists()


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("flagstream stack: error: ")
    return err[-1]


def test_port_in_use_is_one_clear_line(
    private_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    redis_port = int(private_args[private_args.index("--redis-port") + 1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", redis_port))
        squatter.listen()
        assert cli.main(["up", *private_args]) == 1
    line = _one_line_error(capsys)
    assert f"port {redis_port}" in line and "in use" in line


def test_kafka_port_in_use_is_one_clear_line(
    private_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    kafka_port = int(private_args[private_args.index("--kafka-port") + 1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", kafka_port))
        squatter.listen()
        assert cli.main(["up", *private_args]) == 1
    line = _one_line_error(capsys)
    assert f"port {kafka_port} (Kafka broker)" in line


def test_missing_java_names_the_apt_fix(
    private_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert cli.main(["up", *private_args]) == 1
    line = _one_line_error(capsys)
    assert "'java' not found" in line and "apt-get install -y openjdk-17-jre-headless" in line


def test_missing_mvn_names_the_apt_fix(
    private_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = subprocess.run(["which", "java"], capture_output=True, text=True).stdout.strip()
    (bin_dir / "java").symlink_to(os.path.realpath(java))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FLAGSTREAM_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert cli.main(["up", *private_args]) == 1
    line = _one_line_error(capsys)
    assert "'mvn' not found" in line and "apt-get install -y maven" in line


@pytest.mark.slow
def test_failed_download_is_one_clear_line(
    private_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FLAGSTREAM_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("FLAGSTREAM_KAFKA_VERSION", "0.0.0-no-such-version")
    assert cli.main(["up", *private_args]) == 1
    line = _one_line_error(capsys)
    assert "failed to download Kafka 0.0.0-no-such-version jars" in line
    assert not (tmp_path / "empty-cache" / "kafka-jars" / "0.0.0-no-such-version").exists()


def test_bad_port_in_env_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLAGSTREAM_STACK_KAFKA_PORT", "kafka")
    assert cli.main(["status", "--data-dir", str(tmp_path)]) == 1
    assert "FLAGSTREAM_STACK_KAFKA_PORT='kafka' is not a port" in _one_line_error(capsys)


def test_bad_port_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["up", "--kafka-port", "70000"])
    assert exit_info.value.code == 2
    assert "not a port number" in capsys.readouterr().err


def test_ports_come_from_the_last_up_unless_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port variables in the caller's environment would win over the recorded ports.
    for name in ("KAFKA_PORT", "CONTROLLER_PORT", "REDIS_PORT"):
        monkeypatch.delenv(f"FLAGSTREAM_STACK_{name}", raising=False)
    stack = Stack(resolve_config(tmp_path, 1111, 2222, 3333))
    stack.record()
    assert resolve_config(tmp_path) == stack.config
    assert resolve_config(tmp_path, kafka_port=4444).kafka_port == 4444


def test_cached_jars_are_reused_without_mvn(
    local_stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    jars = ensure_jars()  # the shared stack runs, so they are cached
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn reachable now
    assert ensure_jars() == jars
    assert any(jar.name.startswith("kafka_2.13-") for jar in jars.iterdir())
    assert any(jar.name.startswith("log4j-slf4j-impl-") for jar in jars.iterdir())


def test_stopping_is_exact(private_redis: RedisServer, tmp_path: Path) -> None:
    """A broker of another data dir never touches this redis (markers must match)."""
    stranger = KafkaBroker(tmp_path / "other", 1, 2)
    stranger.data_dir.mkdir(parents=True)
    stranger.pidfile.write_text(f"{private_redis.pid}\n")  # a stale/foreign PID
    assert stranger.pid is None
    stranger.stop()
    stranger.kill()
    assert private_redis.is_ready()
