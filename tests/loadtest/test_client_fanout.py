"""``flagstream loadtest client-fanout`` at a small size against the shared stack: the real
command in a subprocess; correct counts only (figures go to BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.cli import main


def test_client_fanout_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["client-fanout", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--contexts" in out and "--dynamic-share" in out


def test_client_fanout_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client-fanout", "--contexts", "ten", "--out", "/nonexistent"]) == 2
    assert "comma-separated list of integers" in capsys.readouterr().err
    assert main(["client-fanout", "--dynamic-share", "2", "--out", "/nonexistent"]) == 2


@pytest.mark.e2e
@pytest.mark.slow
def test_client_fanout_smoke(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique_name: str
) -> None:
    cmd = [
        sys.executable, "-m", "flagstream", "loadtest", "client-fanout", "--spawn",
        "--kafka", kafka_bootstrap, "--redis", redis_url, "--topic", unique_name,
        "--out", str(tmp_path), "--quiet", "--ready-timeout", "60",
        "--streams", "200", "--contexts", "5,200", "--flags", "40", "--poll-seconds", "2",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ}, check=False
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    data = json.loads((tmp_path / "client-fanout.json").read_text())
    assert data["ok"] is True
    figures = data["figures"]
    for phase in ("server /all", "client /eval, K=5", "client /eval, K=200"):
        assert figures[phase]["delivered"] == 200, phase
        assert figures[phase]["rss_per_idle_stream_bytes"] is not None
    assert figures["evalx poll"]["requests"] > 0 and figures["evalx poll"]["errors"] == 0
    assert "client /eval, K=200" in (tmp_path / "client-fanout.md").read_text()
