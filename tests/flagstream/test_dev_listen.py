"""``flagstream dev`` start-up errors name the real cause of a failed bind (flagstream/dev.py)."""

from __future__ import annotations

import socket

import pytest

from flagstream import dev


@pytest.mark.parametrize("host", ["999.1.1.1", "192.0.2.55"])
def test_bad_host_is_not_blamed_on_another_instance(
    capsys: pytest.CaptureFixture[str], host: str
) -> None:
    assert dev.main(["--host", host, "--port", "0", "--ephemeral"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"cannot listen on {host}:0" in err
    assert "is not an address of this machine" in err
    assert "another flagstream dev" not in err


def test_port_in_use_keeps_the_other_instance_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert dev.main(["--port", str(port), "--ephemeral"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is another flagstream dev running? choose another --port" in err
