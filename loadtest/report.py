"""A scenario's result: JSON file, Markdown summary (ready for BENCHMARKS.md), plot list.

Figures are plain numbers (seconds, bytes, counts) in ``figures``; ``tables`` are what the
Markdown shows; ``series`` holds the raw samples the plots were drawn from (JSON only).
NaN/inf become ``null`` in JSON so the file is valid for any reader.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Result", "Table", "command_line", "fmt_ms"]


def command_line(argv: list[str]) -> str:
    return "flagstream loadtest " + " ".join(shlex.quote(a) for a in argv)


def fmt_ms(seconds: float | int | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        out = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |"]
        out.append("|" + "|".join("---" for _ in self.headers) + "|")
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join(out)


@dataclass
class Result:
    scenario: str
    command: str
    machine: dict[str, Any]
    config: dict[str, Any]
    via: str | None = None
    started_utc: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    )
    duration_s: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ok: bool = True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _clean(
            {
                "scenario": self.scenario,
                "command": self.command,
                "ok": self.ok,
                "started_utc": self.started_utc,
                "duration_s": self.duration_s,
                "via": self.via,
                "machine": self.machine,
                "config": self.config,
                "figures": self.figures,
                "tables": [t.__dict__ for t in self.tables],
                "plots": self.plots,
                "notes": self.notes,
                "series": self.series,
            }
        )
        return out

    def markdown(self, *, relative_to: Path | None = None) -> str:
        m = self.machine
        facts = (
            f"{m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB, "
            f"Linux {m.get('kernel')}, Python {m.get('python')}, "
            f"nofile {m.get('nofile_soft')}, load at start {m.get('loadavg_at_start')}"
        )
        out = [
            f"### {self.scenario} ({self.started_utc}, {self.duration_s:.0f} s)",
            "",
            "```",
            self.command,
            "```",
            "",
            f"Machine: {facts}.",
        ]
        if self.via:
            out.append(f"Changes written via: **{self.via}**.")
        for table in self.tables:
            out += ["", table.markdown()]
        if self.notes:
            out += [""] + [f"- {n}" for n in self.notes]
        for plot in self.plots:
            p = Path(plot)
            shown = (
                p.relative_to(relative_to) if relative_to and p.is_relative_to(relative_to) else p
            )
            out += ["", f"![{p.stem}]({shown.as_posix()})"]
        return "\n".join(out) + "\n"

    def write(self, out_dir: Path, stem: str | None = None) -> tuple[Path, Path]:
        """Write ``{stem}.json`` and ``{stem}.md`` into ``out_dir``; return both paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = stem or self.scenario
        json_path = out_dir / f"{stem}.json"
        md_path = out_dir / f"{stem}.md"
        json_path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        md_path.write_text(self.markdown(relative_to=out_dir))
        return json_path, md_path


def print_summary(result: Result) -> None:
    sys.stdout.write(result.markdown())
