"""The real OpenFeature OFREP providers against a real relay over real HTTP.

The Python and Node providers reach the relay through ``ValidatingProxy``, which checks every
answer they get against the OFREP spec (the browser's own answers are the same ones
test_ofrep.py validates: bulk, 304, the notice stream).

- Python: ``openfeature-sdk`` + ``openfeature-provider-ofrep`` (PyPI, installed by
  ``make venv``), run in a thread (the provider is synchronous; the relay runs on this loop).
- Node: ``@openfeature/server-sdk`` + ``@openfeature/ofrep-provider`` (npm).
- Browser: ``@openfeature/web-sdk`` + ``@openfeature/ofrep-web-provider`` (npm), bundled here
  with esbuild (npm) and loaded by headless Debian chromium (Playwright from PyPI) from a page
  on another origin than the relay (CORS), with a client-side id: bulk evaluation at start,
  then a flag change reaches it through the relay's notice stream and it emits
  ``ConfigurationChanged`` naming the changed flag.

npm packages come from ``ofrep_js/package-lock.json``: the ``ofrep_js`` fixture runs
``npm ci`` into ``ofrep_js/node_modules`` (git-ignored) when that is missing or older than
the lockfile, then builds the browser bundle into ``ofrep_js/build``; later runs reuse both.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from npm_prune import prune
from ofrep_support import (
    CLIENT_ID,
    ENV,
    SDK_KEY,
    ValidatingProxy,
    catalogue_envelopes,
    env_record_envelope,
    expected,
)
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails
from relay_support import (
    Backend,
    RunningRelay,
    flag,
    free_port,
    item_envelope,
    metric,
    run_relay,
    wait_ready,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JS_DIR = Path(__file__).resolve().parent / "ofrep_js"
BUNDLE = JS_DIR / "build" / "ofrep-web.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

ALICE = {"targetingKey": "alice", "email": "alice@ex.com", "plan": "pro"}

# (flag, type, default, context, value, variant, reason, errorCode) — what every server-side
# provider must report; the rollout's expected value comes from the engine.
CASES: list[tuple[str, str, Any, dict[str, Any] | None, Any, str | None, str, str | None]] = [
    ("bool-flag", "boolean", False, ALICE, True, "0", "STATIC", None),
    ("string-flag", "string", "x", ALICE, "blue", "control", "STATIC", None),
    ("string-flag", "string", "x", {"targetingKey": "vip-user"}, "red", "2",
     "TARGETING_MATCH", None),
    ("int-flag", "integer", 0, ALICE, 5, "1", "TARGETING_MATCH", None),
    ("float-flag", "float", 0.0, ALICE, 0.25, "0", "STATIC", None),
    ("object-flag", "object", {}, ALICE, {"theme": "light", "tags": ["a"]}, "1", "STATIC", None),
    ("experiment-flag", "string", "x", ALICE, "b", "1", "SPLIT", None),
    ("off-flag", "boolean", True, ALICE, False, "1", "DISABLED", None),
    ("no-such-flag", "boolean", True, ALICE, True, None, "ERROR", "FLAG_NOT_FOUND"),
    ("bool-flag", "boolean", True, {"email": "nokey@ex.com"}, True, None, "ERROR",
     "TARGETING_KEY_MISSING"),
    ("malformed-flag", "boolean", True, ALICE, True, None, "ERROR", "GENERAL"),
]  # fmt: skip
ROLLOUT_KEYS = [f"user-{i}" for i in range(12)]


@pytest.fixture
async def relay(backend: Backend) -> AsyncIterator[RunningRelay]:
    async with backend.producer() as producer:
        await producer.send_many([env_record_envelope(), *catalogue_envelopes()])
    async with run_relay(backend.settings(), backend.source()) as running:
        await wait_ready(running)
        yield running


# --- Python -------------------------------------------------------------------------------------


def _python_evaluate(key: str, kind: str, default: Any, context: Any) -> Any:
    client = api.get_client()
    ctx = None
    if context is not None:
        attributes = {k: v for k, v in context.items() if k != "targetingKey"}
        ctx = EvaluationContext(context.get("targetingKey"), attributes)
    getter = {
        "boolean": client.get_boolean_details,
        "string": client.get_string_details,
        "integer": client.get_integer_details,
        "float": client.get_float_details,
        "object": client.get_object_details,
    }[kind]
    return getter(key, default, ctx)


@pytest.fixture
async def proxy(relay: RunningRelay) -> AsyncIterator[ValidatingProxy]:
    """The relay behind a proxy that validates every answer the provider gets (spec)."""
    async with ValidatingProxy(relay.url) as running:
        yield running
    assert running.failures == []
    assert running.checked > 0


async def test_python_provider(proxy: ValidatingProxy) -> None:
    provider = OFREPProvider(
        proxy.url, headers_factory=lambda: {"Authorization": f"Bearer {SDK_KEY}"}
    )
    api.set_provider(provider)
    try:
        for key, kind, default, context, value, variant, reason, code in CASES:
            details: FlagEvaluationDetails[Any] = await asyncio.to_thread(
                _python_evaluate, key, kind, default, context
            )
            assert details.value == value, key
            assert type(details.value) is type(value), key
            assert details.reason == reason, (key, details)
            assert details.variant == variant, key
            got = details.error_code.value if details.error_code is not None else None
            assert got == code, (key, details.error_message)
            if code is None:
                assert details.flag_metadata["flagVersion"] == 1
        for user in ROLLOUT_KEYS:
            details = await asyncio.to_thread(
                _python_evaluate, "rollout-flag", "boolean", False,
                {"targetingKey": user},
            )  # fmt: skip
            result = expected("rollout-flag", {"kind": "user", "key": user})
            assert (details.value, details.variant, details.reason) == (
                result.value, str(result.variation), "SPLIT",
            )  # fmt: skip
    finally:
        api.clear_providers()


# --- Node ---------------------------------------------------------------------------------------


def _npm(*args: str) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is missing (Node.js 18+ with npm: apt-get install -y nodejs npm)"
    done = subprocess.run(
        [npm, *args, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="session")
def ofrep_js() -> Iterator[Path]:
    """``ofrep_js/node_modules`` installed from the lockfile, and the browser bundle built."""
    lock = JS_DIR / "package-lock.json"
    installed = JS_DIR / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        _npm("ci")
        prune(JS_DIR / "node_modules")  # what points into the authors' monorepos
    entry = JS_DIR / "browser_entry.js"
    if not BUNDLE.exists() or BUNDLE.stat().st_mtime < max(
        entry.stat().st_mtime, installed.stat().st_mtime
    ):
        esbuild = JS_DIR / "node_modules" / ".bin" / "esbuild"
        done = subprocess.run(
            [str(esbuild), str(entry), "--bundle", "--format=iife", f"--outfile={BUNDLE}"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    yield JS_DIR


async def test_node_provider(proxy: ValidatingProxy, ofrep_js: Path) -> None:
    node_types = {"integer": "number", "float": "number"}
    cases = [
        {"key": key, "type": node_types.get(kind, kind), "default": default, "context": context}
        for key, kind, default, context, *_ in CASES
    ]
    cases += [
        {"key": "rollout-flag", "type": "boolean", "default": False,
         "context": {"targetingKey": user}}
        for user in ROLLOUT_KEYS
    ]  # fmt: skip
    job = json.dumps({"baseUrl": proxy.url, "credential": SDK_KEY, "cases": cases})
    node = shutil.which("node")
    assert node, "node is missing (Node.js 18+: apt-get install -y nodejs)"
    process = await asyncio.create_subprocess_exec(
        node,
        str(ofrep_js / "server_provider.mjs"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(job.encode()), 120)
    assert process.returncode == 0, err.decode()
    results = json.loads(out)
    for got, (key, _, _, _, value, variant, reason, code) in zip(results, CASES, strict=False):
        assert got["key"] == key
        assert got["value"] == value and got["reason"] == reason, (key, got)
        assert got["variant"] == variant and got["errorCode"] == code, (key, got)
        if code is None:
            assert got["flagMetadata"]["flagVersion"] == 1
    for got, user in zip(results[len(CASES) :], ROLLOUT_KEYS, strict=True):
        result = expected("rollout-flag", {"kind": "user", "key": user})
        assert (got["value"], got["variant"], got["reason"]) == (
            result.value, str(result.variation), "SPLIT",
        )  # fmt: skip


# --- browser ------------------------------------------------------------------------------------

PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>ofrep</title>
<script src="/ofrep-web.js"></script></head><body>OFREP web provider test page</body></html>"""


@pytest.fixture
async def page_origin(ofrep_js: Path) -> AsyncIterator[str]:
    """A page (and the bundle) served from another origin than the relay."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html")

    async def bundle(request: web.Request) -> web.Response:
        return web.Response(body=BUNDLE.read_bytes(), content_type="application/javascript")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/ofrep-web.js", bundle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://localhost:{port}"  # the relay is http://127.0.0.1:<other port>
    finally:
        await runner.cleanup()


async def test_browser_provider_bulk_then_change_through_the_event_stream(
    relay: RunningRelay, backend: Backend, page_origin: str
) -> None:
    from playwright.async_api import async_playwright

    assert shutil.which(CHROMIUM), "chromium is missing: apt-get install -y chromium"
    bulk_304 = {"route": "bulk", "code": "304"}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(page_origin + "/")
            await page.evaluate(
                "([url, id, ctx]) => window.ofrepTest.start(url, id, ctx)",
                [relay.url, CLIENT_ID, ALICE],
            )

            async def details(key: str, kind: str, default: Any) -> dict[str, Any]:
                result: dict[str, Any] = await page.evaluate(
                    "([k, t, d]) => window.ofrepTest.details(k, t, d)", [key, kind, default]
                )
                return result

            # Bulk evaluation at start, with the client-side id: browser flags only.
            assert await details("bool-flag", "boolean", False) == {
                "value": True, "variant": "0", "reason": "STATIC", "errorCode": None,
                "flagMetadata": {"reasonKind": "FALLTHROUGH", "flagVersion": 1,
                                 "variationIndex": 0},
            }  # fmt: skip
            string = await details("string-flag", "string", "x")
            assert (string["value"], string["variant"]) == ("blue", "control")
            hidden = await details("int-flag", "number", 42)  # not available to browsers
            assert (hidden["value"], hidden["errorCode"]) == (42, "FLAG_NOT_FOUND")
            # The notice stream is open, and its first notice was answered with a 304.
            hub = relay.app[_hub_key()]
            await wait_until(lambda: hub.stats()["streams"]["ofrep"] == 1)
            await wait_until(
                lambda: (
                    metric(relay.metrics, "flagstream_relay_ofrep_requests_total", bulk_304) >= 1
                )
            )
            assert await page.evaluate("window.ofrepTest.changes.length") == 0

            async with backend.producer() as producer:
                written = time.time()
                await producer.send(
                    item_envelope(
                        ENV, "flag",
                        flag("bool-flag", 2, on=False,
                             clientSideAvailability={"usingEnvironmentId": True}),
                    )
                )  # fmt: skip
            await wait_until(lambda: page.evaluate("window.ofrepTest.changes.length"), within=10)
            (change,) = await page.evaluate("window.ofrepTest.changes")
            assert change["flagsChanged"] == ["bool-flag"]
            # Measured, not asserted (a loaded machine must not fail the test): the issue's
            # goal is under a second; `pytest -s` shows it, docs/openfeature.md has figures.
            delay = change["at"] / 1000 - written
            print(f"write acknowledged -> ConfigurationChanged in the page: {delay * 1000:.0f} ms")
            after = await details("bool-flag", "boolean", True)
            assert (after["value"], after["reason"], after["variant"]) == (False, "DISABLED", "1")
            assert errors == []
        finally:
            await browser.close()


def _hub_key() -> Any:
    from relay.app import HUB_KEY

    return HUB_KEY
