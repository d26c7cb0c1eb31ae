"""``flagstream eval`` against a running relay (``flagstream dev`` on loopback, real HTTP) and
against data files."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from flagstream import dev
from flagstream.cli import main as flagstream_main
from flagstream.dev import DevServer
from flagstream.eval_cli import main
from flagstream.stack.process import free_port

ALICE = '{"kind": "user", "key": "alice"}'


@pytest.fixture
async def server() -> AsyncIterator[DevServer]:
    async with dev.running(port=0, host="127.0.0.1") as running:
        yield running


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_all_flags_from_a_running_relay(
    server: DevServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert server.sdk_key is not None
    code, out, err = await run(
        capsys, "--relay", server.url, "--sdk-key", server.sdk_key, "--context", ALICE
    )
    assert code == 0, err
    rows = {line.split()[0]: line.split(None, 3) for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == ["FLAG", "VALUE", "VARIATION", "REASON"]
    assert rows["search-v2"][1:] == ["true", "0", "RULE_MATCH(ruleIndex=0, ruleId=beta)"]
    assert rows["new-checkout"][1:] == ["false", "1", "OFF"]
    assert any(
        line.startswith("banner-text ") and '"Welcome to flagstream"' in line
        for line in out.splitlines()
    )

    code, out, _ = await run(
        capsys, "--relay", server.url, "--sdk-key", server.sdk_key, "--context",
        '{"kind": "user", "key": "carol"}', "--flag", "search-v2", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out) == {
        "value": False, "variationIndex": 1, "reason": {"kind": "FALLTHROUGH"}, "version": 1,
    }  # fmt: skip


async def test_audiences_and_environment_variable_key(
    server: DevServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert server.sdk_key is not None
    # The demo flags are for every SDK; this one is for server-side and mobile SDKs only.
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as session:
        flag = {
            "on": True,
            "variations": [True, False],
            "fallthrough": {"variation": 0},
            "offVariation": 1,
            "clientSideAvailability": {"usingEnvironmentId": False, "usingMobileKey": True},
        }
        url = f"{server.url}/api/v1/environments/demo/flags/mobile-only"
        async with session.put(url, json=flag) as resp:
            assert resp.status in (200, 201, 202), await resp.text()
    monkeypatch.setenv("FLAGSTREAM_SDK_KEY", server.sdk_key)
    async with asyncio.timeout(10):
        while True:  # the relay applies the write within milliseconds
            code, out, _ = await run(
                capsys, "--relay", server.url, "--context", ALICE, "--sdk", "mobile", "--json"
            )
            if code == 0 and "mobile-only" in json.loads(out):
                break
            await asyncio.sleep(0.05)
    assert "search-v2" in json.loads(out)
    code, out, _ = await run(
        capsys, "--relay", server.url, "--context", ALICE, "--sdk", "client", "--json"
    )
    assert code == 0
    client_flags = json.loads(out)
    assert "search-v2" in client_flags and "mobile-only" not in client_flags


async def test_relay_errors(server: DevServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await run(
        capsys, "--relay", server.url, "--sdk-key", "sdk-nope", "--context", ALICE
    )
    assert code == 1 and "HTTP 401" in err and "does not know this SDK key" in err
    code, _, err = await run(
        capsys, "--relay", f"http://127.0.0.1:{free_port()}", "--sdk-key", "k", "--context", ALICE
    )
    assert code == 3 and "cannot reach the relay" in err
    code, _, err = await run(capsys, "--relay", "ftp://x", "--sdk-key", "k", "--context", ALICE)
    assert code == 2 and "invalid relay URL" in err
    code, _, err = await run(capsys, "--relay", server.url, "--context", ALICE)
    assert code == 2 and "no SDK key" in err
    assert server.sdk_key is not None
    code, _, err = await run(
        capsys,
        "--relay",
        server.url,
        "--sdk-key",
        server.sdk_key,
        "--context",
        ALICE,
        "--flag",
        "nope",
    )
    assert code == 1 and "no flag 'nope'" in err and "search-v2" in err


def write(tmp_path: Path, name: str, content: object) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


async def test_data_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    buckets = [{"variation": 0, "weight": 60000}, {"variation": 1, "weight": 40000}]
    data = write(tmp_path, "data.json", {
        "flags": {
            "hashKey": {"on": True, "salt": "saltyA", "variations": ["a", "b"],
                        "fallthrough": {"rollout": {"variations": buckets}}},
            "broken": {"on": True, "variations": "x"},
            "needs": {"on": True, "variations": [1, 2], "fallthrough": {"variation": 1},
                      "offVariation": 0, "prerequisites": [{"key": "missing", "variation": 0}]},
        },
        "segments": {"s": {"included": ["userKeyA"]}},
        "flagValues": {"simple": {"nested": "ü" * 50}},
    })  # fmt: skip
    context = write(tmp_path, "ctx.json", {"key": "userKeyA"})  # old user JSON
    code, out, err = await run(capsys, "--data", data, "--context", f"@{context}")
    assert code == 0, err
    lines = out.splitlines()
    assert any(
        line.split()[:3] == ["broken", "null", "-"] and "ERROR MALFORMED_FLAG" in line
        for line in lines
    )
    assert "broken: malformed: variations: must be a list" in out
    assert any("PREREQUISITE_FAILED(prerequisiteKey=missing)" in line for line in lines)
    assert any(line.startswith("simple ") and "…" in line for line in lines)
    monkeypatch.setattr("sys.stdin", io.StringIO('{"kind": "user", "key": "userKeyB"}'))
    code, out, _ = await run(
        capsys, "--data", data, "--context", "-", "--flag", "hashKey", "--json"
    )
    assert code == 0 and json.loads(out)["value"] == "b"  # userKeyB buckets at 0.67
    empty = write(tmp_path, "empty.json", {})
    code, out, _ = await run(capsys, "--data", empty, "--context", ALICE)
    assert code == 0 and "(no flags)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "/nonexistent.json", "--context", ALICE], "cannot read data file"),
        (["--data", "{tmp}/bad.json", "--context", ALICE], "is not valid JSON"),
        (["--data", "{tmp}/list.json", "--context", ALICE], "expected"),
        (["--data", "{tmp}/badsection.json", "--context", ALICE], "'flags' must be an object"),
        (["--data", "{tmp}/list.json", "--context", "{"], "--context is not valid JSON"),
        (
            ["--data", "{tmp}/list.json", "--context", '{"kind": "user"}'],
            'invalid context: context "key"',
        ),
        (["--data", "{tmp}/list.json", "--context", "@/nonexistent"], "cannot read context file"),
    ],
)
async def test_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    write(tmp_path, "bad.json", "{")
    write(tmp_path, "list.json", [])
    write(tmp_path, "badsection.json", {"flags": [1]})
    code, _, err = await run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2 and message in err, err
    assert "Traceback" not in err


def test_dispatcher_knows_eval(capsys: pytest.CaptureFixture[str]) -> None:
    assert flagstream_main(["--help"]) == 0
    assert "eval" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        flagstream_main(["eval", "--context", ALICE])  # no --relay or --data
    assert exit_.value.code == 2
