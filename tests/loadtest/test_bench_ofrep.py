"""loadtest.bench_ofrep: the flag mix, and one short real run against a spawned relay on the
local Kafka (every answer 200, figures present)."""

from __future__ import annotations

import json

import pytest

from loadtest import bench_ofrep
from protocol.evaluation import CompiledEnvironment


def test_flag_mix() -> None:
    flags = bench_ofrep.bench_flags(350)
    env = CompiledEnvironment.from_items(flags)
    constant = [f for f in env.flags.values() if f.constant is not None]
    assert len(flags) == 350 and len(constant) == 245
    assert len(bench_ofrep._contexts(7)) == 7


def test_bad_arguments() -> None:
    with pytest.raises(SystemExit, match="--flags"):
        bench_ofrep.main(["--flags", "0"])
    with pytest.raises(SystemExit, match="--seconds"):
        bench_ofrep.main(["--seconds", "0"])


@pytest.mark.integration
@pytest.mark.slow
def test_short_run(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--kafka", kafka_bootstrap, "--seconds", "1", "--warmup", "0.3", "--connections",
            "2", "--contexts", "40", "--flags", "30", "--floor", "--json"]  # fmt: skip
    assert bench_ofrep.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["phase"] for r in report["results"]] == ["livez", "single", "bulk"]
    for result in report["results"]:
        assert result["requests"] > 0
        assert set(result["statuses"]) == {"200"}
        assert result["p50_ms"] <= result["p99_ms"]
    assert report["flags_evaluated_per_context"] == 9
