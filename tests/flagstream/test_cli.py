"""The ``flagstream`` dispatcher: usage on no command (exit 2), help (exit 0)."""

from __future__ import annotations

import pytest

from flagstream.cli import main

pytestmark = pytest.mark.unit


def test_no_command_prints_usage_to_stderr_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: flagstream COMMAND")


@pytest.mark.parametrize("arg", ["--help", "-h", "help"])
def test_help_prints_usage_to_stdout_and_exits_0(
    capsys: pytest.CaptureFixture[str], arg: str
) -> None:
    assert main([arg]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("usage: flagstream COMMAND") and "publisher" in out


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
