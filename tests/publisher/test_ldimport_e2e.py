"""``flagstream admin import launchdarkly`` end to end: a generated Relay Proxy archive (5,000
flags with prerequisites, rules, segments, rollouts) imported into a publisher on Redis and
Kafka, then the official LaunchDarkly Python SDK streaming from a relay on that topic must
evaluate every flag exactly as the same SDK does from the archive's own data (its file data
source): same value, variation and reason for every flag and context."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from ld_archive import contexts, env_rep, environment_data, write_archive
from ldclient import LDClient
from ldclient.config import Config
from ldclient.impl.integrations.files import file_data_source
from ldclient.integrations import Files
from publisher_support import ADMIN, ApiFactory
from relay_support import relay_settings, run_relay, wait_ready

from publisher.admin_cli import main
from publisher.redis_store import RedisStore

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

FLAGS = 5000


async def admin(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, ["--url", url, "--token", ADMIN, *argv])
    out, err = capsys.readouterr()
    return code, out + err


def _states(client: LDClient, ctxs: list[Any]) -> list[dict[str, Any]]:
    """Every flag's value, variation and reason for each context (versions left out: the
    publisher numbers its own)."""
    out = []
    for ctx in ctxs:
        state = client.all_flags_state(ctx, with_reasons=True).to_json_dict()
        meta = state.pop("$flagsState")
        state.pop("$valid")
        out.append(
            {
                key: (value, meta[key].get("variation"), meta[key].get("reason"))
                for key, value in state.items()
            }
        )
    return out


async def test_import_of_a_relay_archive_evaluates_like_the_source(
    make_api: ApiFactory,
    redis_store: RedisStore,
    kafka_bootstrap: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The SDK's file data source parses with PyYAML's pure-Python loader when PyYAML is
    # installed (minutes for this 5 MB file on a loaded machine); its other path is
    # json.loads, which reads the same JSON into the same data.
    monkeypatch.setattr(file_data_source, "have_yaml", False)
    production = environment_data(seed=18, flag_count=FLAGS, segment_count=60)
    staging = environment_data(seed=19, flag_count=30, segment_count=5)
    archive = tmp_path / "ld-archive.tar.gz"
    write_archive(
        archive,
        [
            (env_rep("5f0aaa", "production", "Production"), production),
            (env_rep("5f0bbb", "staging", "Staging"), staging),
        ],
    )
    api = await make_api(redis_store, max_bulk_body_bytes=32 * 1024 * 1024)
    url = api.url("/")

    code, out = await admin(capsys, url, "import", "launchdarkly", str(archive), "--dry-run")
    assert code == 1 and "--create-environments" in out  # no environment yet: says how

    code, out = await admin(
        capsys, url, "import", "launchdarkly", str(archive), "--create-environments"
    )
    assert code == 0, out
    assert f"webshop/production -> production: {FLAGS} flags, 61 segments; wrote {FLAGS + 61}" in (
        out
    )
    assert "webshop/staging -> staging: 30 flags, 6 segments; wrote 36" in out
    assert "flag 'flag-deleted': deleted in LaunchDarkly, skipped" in out
    assert "segment 'segment-gone': deleted in LaunchDarkly, skipped" in out
    assert "segment 'segment-big': a big (unbounded) segment" in out
    sdk_key = re.search(r"created environment production .*?SDK key (sdk-[0-9a-f-]+)", out)
    assert sdk_key, out

    # Idempotent: the same archive again writes nothing.
    code, out = await admin(capsys, url, "import", "launchdarkly", str(archive))
    assert code == 0 and f"wrote 0, {FLAGS + 61} unchanged" in out, out
    assert await redis_store.outbox_depth() < FLAGS  # nothing new queued by the re-run

    # Prerequisites, segments, rules and rollouts kept exactly (versions renumbered).
    stored = json.loads((await redis_store.get_item("production", "flag", "flag-04999")) or b"")
    source = production["flags"]["flag-04999"]
    assert {k: v for k, v in stored.items() if k != "version"} == {
        k: v for k, v in source.items() if k != "version"
    }
    assert stored["version"] == 1

    data_file = tmp_path / "production-data.json"
    data_file.write_text(json.dumps(production))
    reference = LDClient(
        Config(
            "sdk-file",
            update_processor_class=Files.new_data_source(paths=[str(data_file)]),
            send_events=False,
            diagnostic_opt_out=True,
        ),
        start_wait=30,
    )
    settings = relay_settings(kafka_bootstrap, api.topic)
    async with run_relay(settings) as relay:
        await wait_ready(relay, within=60)
        streamed = await asyncio.to_thread(
            LDClient,
            Config(
                sdk_key.group(1),
                base_uri=relay.url,
                stream_uri=relay.url,
                events_uri=relay.url,
                send_events=False,
                diagnostic_opt_out=True,
            ),
            60,
        )
        try:
            assert reference.is_initialized() and streamed.is_initialized()
            ctxs = contexts(12)
            expected = await asyncio.to_thread(_states, reference, ctxs)
            got = await asyncio.to_thread(_states, streamed, ctxs)
        finally:
            await asyncio.to_thread(streamed.close)
            reference.close()
    assert len(expected[0]) == FLAGS  # every flag of the source (the deleted one excluded)
    mismatches = [
        (i, key, expected[i][key], got[i].get(key))
        for i in range(len(ctxs))
        for key in expected[i]
        if got[i].get(key) != expected[i][key]
    ]
    assert not mismatches, mismatches[:5]
    kinds = {reason["kind"] for state in expected for (_, _, reason) in state.values()}
    assert {"OFF", "FALLTHROUGH", "RULE_MATCH", "TARGET_MATCH", "PREREQUISITE_FAILED"} <= kinds
