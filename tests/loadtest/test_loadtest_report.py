"""Result files: valid JSON (NaN -> null), Markdown with command and machine, PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loadtest import plots
from loadtest.report import Result, Table, command_line, fmt_ms
from loadtest.sysinfo import machine_facts

pytestmark = pytest.mark.unit


def _result() -> Result:
    return Result(
        scenario="fanout",
        command=command_line(["fanout", "--streams", "10", "--name", "a b"]),
        machine=machine_facts(),
        config={"streams": 10},
        via="kafka",
        figures={"p50": math.nan, "n": 3, "inf": math.inf},
        tables=[Table("t", ["a", "b"], [["1", "2"]])],
    )


def test_json_is_strict_and_markdown_has_the_facts(tmp_path: Path) -> None:
    result = _result()
    json_path, md_path = result.write(tmp_path, "run")
    data = json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["figures"] == {"p50": None, "n": 3, "inf": None}
    md = md_path.read_text()
    assert "flagstream loadtest fanout --streams 10 --name 'a b'" in md
    assert f"{machine_facts()['cores']} cores" in md
    assert "Python" in md and "Linux" in md
    assert "| a | b |" in md and "| 1 | 2 |" in md
    assert "**kafka**" in md


def test_fmt_ms() -> None:
    assert fmt_ms(0.0123) == "12.3 ms"
    assert fmt_ms(0.5) == "500 ms"
    assert fmt_ms(math.nan) == "-"
    assert fmt_ms(None) == "-"


def test_plots_are_small_pngs(tmp_path: Path) -> None:
    paths = [
        plots.cdf(tmp_path / "c.png", {"a": [0.001, 0.002], "empty": []}, title="t", xlabel="x"),
        plots.lines(
            tmp_path / "l.png",
            [1, 2],
            {"y": [1, 2]},
            title="t",
            xlabel="x",
            ylabel="y",
            logy=True,
            secondary={"z": [3, 4]},
        ),
        plots.bars(
            tmp_path / "b.png", ["a", "b"], {"g": [1, 2], "h": [2, 1]}, title="t", ylabel="y"
        ),
    ]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) < 100_000


def test_markdown_links_plots_relative_to_the_output_dir(tmp_path: Path) -> None:
    result = _result()
    result.plots.append(str(tmp_path / "fanout-cdf.png"))
    assert "![fanout-cdf](fanout-cdf.png)" in result.markdown(relative_to=tmp_path)
