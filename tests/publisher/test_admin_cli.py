"""``flagstream admin`` against a running publisher (real Kafka, in-memory store)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from publisher_support import ADMIN, ApiFactory

from flagstream.stack.process import free_port
from publisher.admin_cli import main
from publisher.memory_store import MemoryStore

pytestmark = pytest.mark.integration


async def admin(
    capsys: pytest.CaptureFixture[str], url: str, *argv: str, token: str = ADMIN
) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, ["--url", url, "--token", token, *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_admin_cli_workflow(
    make_api: ApiFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = await make_api(MemoryStore())
    url = api.url("/")

    code, out, _ = await admin(capsys, url, "env", "create", "prod", "--name", "Production")
    assert code == 0 and "SDK key:        sdk-" in out and "shown only once" in out

    yaml_file = tmp_path / "f1.yaml"
    yaml_file.write_text(
        "key: f1\non: true\nvariations: [true, false]\nfallthrough: {variation: 0}\n"
        "offVariation: 1\n"
    )
    code, out, _ = await admin(
        capsys, url, "flag", "put", "prod", str(yaml_file), "--comment", "hi"
    )
    assert code == 0 and out.strip() == "created flag f1 in prod: version 1"

    json_file = tmp_path / "s1.json"
    json_file.write_text(json.dumps({"key": "s1", "included": ["u1"]}))
    code, out, _ = await admin(capsys, url, "segment", "put", "prod", str(json_file))
    assert code == 0 and "created segment s1" in out

    code, out, _ = await admin(capsys, url, "flag", "toggle", "prod", "f1")
    assert code == 0 and "is now off (version 2)" in out
    code, out, _ = await admin(capsys, url, "flag", "toggle", "prod", "f1", "on")
    assert code == 0 and "is now on (version 3)" in out

    code, out, _ = await admin(capsys, url, "flag", "list", "prod")
    assert code == 0 and out.splitlines()[1].split() == ["f1", "on", "3", "2"]
    code, out, _ = await admin(capsys, url, "--json", "flag", "get", "prod", "f1")
    assert code == 0 and json.loads(out)["version"] == 3

    code, out, _ = await admin(
        capsys, url, "token", "create", "ci", "--scope", "read", "--env", "prod"
    )
    assert code == 0 and "token: fst_" in out
    reader = out.split("token: ")[1].split()[0]
    code, out, _ = await admin(capsys, url, "token", "list")
    assert code == 0 and "ci" in out and reader not in out

    code, out, _ = await admin(
        capsys, url, "env", "rotate-sdk-key", "prod", "--expire-old-in", "60"
    )
    assert code == 0 and "new SDK key for prod: sdk-" in out and "old keys valid until" in out
    code, out, _ = await admin(capsys, url, "env", "show", "prod")
    assert code == 0 and "version 2" in out and out.count("expires") == 2
    code, out, _ = await admin(capsys, url, "env", "list")
    assert code == 0 and out.splitlines()[1].split() == ["prod", "Production", "2", "2"]

    code, out, _ = await admin(capsys, url, "audit", "prod", "--limit", "2")
    lines = out.splitlines()
    assert code == 0 and "WHO" in lines[0] and "rotate-sdk-key" in lines[1] and "admin" in lines[1]
    assert "patch" in lines[2]

    # errors: the API's detail, exit 1
    code, _, err = await admin(capsys, url, "flag", "toggle", "prod", "f1", token=reader)
    assert code == 1 and "403" in err and "write" in err
    code, _, err = await admin(capsys, url, "flag", "get", "prod", "nope")
    assert code == 1 and "404" in err
    code, _, err = await admin(
        capsys, url, "flag", "put", "prod", str(yaml_file), "--if-match", "1"
    )
    assert code == 1 and "412" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: [unclosed\n")
    code, _, err = await admin(capsys, url, "flag", "put", "prod", str(bad))
    assert code == 2 and "not valid JSON or YAML" in err
    code, _, err = await admin(capsys, url, "flag", "put", "prod", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err
    code, _, err = await admin(capsys, url, "flag", "list", "prod", token="wrong-token-xyz")
    assert code == 1 and "401" in err and "wrong-token-xyz" not in err

    code, out, _ = await admin(capsys, url, "flag", "delete", "prod", "f1", "--comment", "bye")
    assert code == 0 and out.strip() == "deleted flag f1 in prod: version 4"
    code, out, _ = await admin(capsys, url, "flag", "list", "prod")
    assert code == 0 and out.strip() == "no flags in prod"


async def test_admin_cli_connection_refused_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = await admin(capsys, url, "env", "list")
    assert code == 3
    assert err.count("\n") == 1 and "cannot reach the publisher" in err and "Traceback" not in err


async def test_admin_cli_usage_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await asyncio.to_thread(main, ["flag"]) == 2
    monkeypatch.delenv("FLAGSTREAM_ADMIN_TOKEN", raising=False)
    code = await asyncio.to_thread(main, ["--url", "http://127.0.0.1:1", "env", "list"])
    assert code == 2 and "FLAGSTREAM_ADMIN_TOKEN" in capsys.readouterr().err


@pytest.mark.parametrize(
    "url", ["not-a-url", "http://[::1", "ftp://127.0.0.1:8031", "http://127.0.0.1:99999", "http://"]
)
async def test_admin_cli_invalid_url_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, _, err = await admin(capsys, url, "env", "list")
    assert code == 2, err
    assert err.count("\n") == 1 and "invalid publisher URL" in err and "Traceback" not in err


async def test_admin_cli_quotes_path_segments_and_reports_errors_in_one_line(
    make_api: ApiFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = await make_api(MemoryStore())
    url = str(api.client.make_url("")).rstrip("/")
    assert (await admin(capsys, url, "env", "create", "qa1"))[0] == 0
    # each would have been a traceback (InvalidURL) or hit another route (a?b -> a)
    for key in ("a?b", "a b", "a\x01b", "../x", "a/b"):
        code, _, err = await admin(capsys, url, "flag", "get", "qa1", key)
        assert code == 1, (key, err)
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "400" in err or "404" in err
    code, _, err = await admin(capsys, url, "flag", "get", "qa1", "a?b")
    assert "/flags/a%3Fb" in err
    segment = tmp_path / "s1.json"
    segment.write_text('{"key": "s1"}')
    code, _, err = await admin(
        capsys, url, "segment", "put", "qa1", str(segment), "--comment", "x\ny"
    )
    assert code == 2 and err.count("\n") == 1 and "Invalid header value" in err


async def test_admin_cli_error_without_problem_body_shows_reason_and_excerpt(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def plain(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html>no such\n page</html>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", plain)
    server = TestServer(app)
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        code, _, err = await admin(capsys, url, "env", "list")
    finally:
        await server.close()
    assert code == 1
    assert "404 Not Found: <html>no such page</html>" in err


async def test_admin_cli_toggle_to_the_current_state_writes_nothing(
    make_api: ApiFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = await make_api(MemoryStore())
    url = str(api.client.make_url("")).rstrip("/")
    assert (await admin(capsys, url, "env", "create", "qa1"))[0] == 0
    flag_file = tmp_path / "f1.json"
    flag_file.write_text(
        json.dumps(
            {
                "key": "f1",
                "on": False,
                "variations": [True, False],
                "offVariation": 1,
                "fallthrough": {"variation": 0},
            }
        )
    )
    assert (await admin(capsys, url, "flag", "put", "qa1", str(flag_file)))[0] == 0
    code, out, _ = await admin(capsys, url, "flag", "toggle", "qa1", "f1", "off")
    assert code == 0 and out.strip() == "flag f1 in qa1 is already off (version 1)"
    status, body, _ = await api.call("GET", "/api/v1/environments/qa1/flags/f1")
    assert status == 200 and body["version"] == 1  # no write, no fan-out
    code, out, _ = await admin(capsys, url, "flag", "toggle", "qa1", "f1", "on")
    assert code == 0 and out.strip() == "flag f1 in qa1 is now on (version 2)"
