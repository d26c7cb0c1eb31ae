"""The progress display: periodic lines off a terminal, never fatal."""

from __future__ import annotations

import asyncio
import io

import pytest

from loadtest.progress import Progress

pytestmark = pytest.mark.unit


async def test_progress_logs_lines_and_survives_a_failing_render() -> None:
    out = io.StringIO()
    calls = {"n": 0}

    def render() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return f"step {calls['n']}"

    async with Progress("t", render, stream=out, interval=0.01, log_every=0) as p:
        p.note("phase two")
        await asyncio.sleep(0.08)
    text = out.getvalue()
    assert "[t] phase two" in text
    assert "progress unavailable: RuntimeError" in text
    assert "step" in text
    assert "\r" not in text  # not a terminal: plain lines


async def test_disabled_progress_writes_nothing() -> None:
    out = io.StringIO()
    async with Progress("t", lambda: "x", stream=out, interval=0.01, enabled=False) as p:
        p.note("hidden")
        await asyncio.sleep(0.03)
    assert out.getvalue() == ""
