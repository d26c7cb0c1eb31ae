"""``flagstream loadtest chaos``: the schedule, the invariant checks, the observers' rules,
the Kafka proxy, and a bounded run of the whole suite on its own Kafka and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest.chaos.cluster import LinkedKafka
from loadtest.chaos.invariants import View, check_views, convergence_times, find_secrets
from loadtest.chaos.observers import ClientLedger, apply_view, replay_sdk_log
from loadtest.chaos.schedule import FAULT_KINDS, is_known, plan
from loadtest.chaos.writers import AckedWrite, flag_body
from protocol.model import validate_flag

# --- schedule ------------------------------------------------------------------------------


@pytest.mark.unit
def test_a_schedule_depends_only_on_its_seed() -> None:
    kinds = tuple(FAULT_KINDS)
    assert plan(7, 300, kinds) == plan(7, 300, kinds)
    assert plan(7, 300, kinds) != plan(8, 300, kinds)


@pytest.mark.unit
def test_the_first_round_has_every_kind_once_and_the_duration_is_filled() -> None:
    kinds = tuple(FAULT_KINDS)
    faults = plan(3, 600, kinds)
    assert sorted(f.kind for f in faults[: len(kinds)]) == sorted(kinds)
    cost = sum(FAULT_KINDS[f.kind] + f.gap for f in faults)
    assert 600 * 0.8 <= cost <= 600 * 1.1
    assert [f.index for f in faults] == list(range(len(faults)))
    # a short run still has one fault
    assert len(plan(1, 1, ("kafka-kill",))) == 1


@pytest.mark.unit
def test_variants_can_be_forced_and_unknown_kinds_are_refused() -> None:
    faults = plan(5, 200, ("zombie:held",))
    assert faults and {f.variant for f in faults} == {"held"}
    assert is_known("relay-cut:reset") and is_known("zombie")
    assert not is_known("zombie:loud") and not is_known("meteor")
    with pytest.raises(ValueError, match="unknown fault kinds"):
        plan(1, 10, ("meteor",))


# --- invariants ----------------------------------------------------------------------------


def acked(env: str, key: str, version: int, status: int = 200) -> AckedWrite:
    return AckedWrite(0.0, 0.0, 0, 0, env, key, version, status, False)


@pytest.mark.unit
def test_a_view_behind_an_acknowledged_write_counts_as_lost_and_unconverged() -> None:
    writes = [acked("a", "f", 3), acked("a", "f", 4), acked("b", "g", 2, 202)]
    final = {("a", "f"): 4, ("b", "g"): 2}
    views = [
        View("redis", frozenset("ab"), final),
        # what a zombie's late record leaves in a compacted topic: the older version last
        View("compacted topic", frozenset("ab"), {("a", "f"): 3, ("b", "g"): 2}),
        View("stream-1", frozenset("b"), {("b", "g"): 2}, last_change=12.0),
    ]
    verdict = check_views(writes, final, views)
    assert verdict.lost == 1
    assert verdict.lost_by_view == {"compacted topic": 1}
    assert verdict.lost_examples == ["compacted topic: a/f holds v3, v4 was acknowledged (200)"]
    assert verdict.not_converged == ["compacted topic (1: a/f: v3 != v4)"]


@pytest.mark.unit
def test_every_view_at_the_final_state_passes() -> None:
    final = {("a", "f"): 9}
    verdict = check_views([acked("a", "f", 9)], final, [View("x", frozenset("a"), dict(final))])
    assert (verdict.lost, verdict.not_converged) == (0, [])


@pytest.mark.unit
def test_convergence_is_measured_from_the_last_fault() -> None:
    views = [
        View("s1", frozenset("a"), {}, last_change=10.0),  # converged before t0
        View("s2", frozenset("a"), {}, last_change=13.5),
        View("s3", frozenset("a"), {}, last_change=None),  # polled: no change time known
    ]
    assert convergence_times(views, t0=12.0) == [0.0, 1.5]


@pytest.mark.unit
def test_secrets_are_found_in_logs_and_reported_by_prefix_only() -> None:
    logs = {"relay.log": "auth failed for sdk-12345678-aaaa", "pub.log": "all fine"}
    assert find_secrets(logs, ["sdk-12345678-aaaa", "short"]) == ["relay.log: sdk-12…"]


# --- observers -----------------------------------------------------------------------------


@pytest.mark.unit
def test_views_follow_the_sdk_rules_and_report_every_step_down() -> None:
    view: dict[str, int] = {}
    assert apply_view(view, "put", {"f": 3, "g": 1}) == (True, [])
    assert apply_view(view, "upsert", {"f": 4}) == (True, [])
    assert apply_view(view, "upsert", {"f": 4}) == (False, [])  # a duplicate is fine
    assert apply_view(view, "upsert", {"f": 2}) == (False, [("f", 4, 2)])  # ignored, reported
    # a put that takes f back and forgets g
    changed, regressions = apply_view(view, "put", {"f": 3})
    assert changed and sorted(regressions) == [("f", 4, 3), ("g", 1, 0)]
    assert view == {"f": 3}


@pytest.mark.unit
def test_the_ledger_reads_sse_events_as_an_sdk_would() -> None:
    ledger = ClientLedger({("e", "f"): 0})
    put = json.dumps({"path": "/", "data": {"flags": {"f": {"key": "f", "version": 2}}}})
    ledger.on_event(1, "e", "put", put, 0.0)
    ledger.on_event(1, "e", "patch", json.dumps({"path": "/flags/f", "data": {"version": 5}}), 0)
    ledger.on_event(1, "e", "delete", json.dumps({"path": "/flags/f", "version": 4}), 0.0)
    ledger.on_event(1, "e", "patch", json.dumps({"path": "/segments/s", "data": {}}), 0.0)
    assert ledger.views[1] == {"f": 5}
    assert [(r.key, r.held, r.shown, r.event) for r in ledger.regressions] == [
        ("f", 5, 4, "delete")
    ]
    assert (ledger.events, ledger.puts) == (3, 1)
    assert [e["version"] for e in ledger.timeline()] == [5, 4]


@pytest.mark.unit
def test_an_sdk_log_is_replayed_with_the_same_rules(tmp_path: Path) -> None:
    log = tmp_path / "sdk.log"
    log.write_text(
        "some SDK log line\n"
        '{"op":"started","t":1.0}\n'
        '{"op":"init","t":2.0,"flags":{"f":1,"g":1}}\n'
        '{"op":"upsert","t":3.0,"flags":{"f":2}}\n'
        '{"op":"init","t":4.0,"flags":{"f":1,"g":1}}\n'
    )
    replay = replay_sdk_log(log, "sdk-0", "e")
    assert replay.view == {"f": 1, "g": 1}
    assert (replay.inits, replay.updates, replay.last_change) == (2, 1, 4.0)
    assert [(r.key, r.held, r.shown) for r in replay.regressions] == [("f", 2, 1)]


@pytest.mark.unit
def test_writer_flags_are_valid_and_padded() -> None:
    body = flag_body("flag-001", 12345, 600)
    validate_flag({**body, "version": 1})
    assert len(body["variations"][0]) == 602


# --- the broker's links and the proxy ------------------------------------------------------


@pytest.mark.unit
def test_each_link_is_a_listener_that_advertises_its_proxy(tmp_path: Path) -> None:
    broker = LinkedKafka(tmp_path, 9100, 9101, [(9200, 9300), (9201, 9301)])
    props = dict(
        line.split("=", 1) for line in broker._server_properties().splitlines() if "=" in line
    )
    assert props["listeners"].endswith("LINK0://127.0.0.1:9200,LINK1://127.0.0.1:9201") and props[
        "listeners"
    ].startswith("PLAINTEXT://127.0.0.1:9100")
    assert props["advertised.listeners"].endswith("LINK0://127.0.0.1:9300,LINK1://127.0.0.1:9301")
    assert props["listener.security.protocol.map"].endswith("LINK0:PLAINTEXT,LINK1:PLAINTEXT")


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _command(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()
    assert (await proc.stdout.readline()).strip() == b"ok"


async def test_setup_takes_a_pending_write_as_written_and_retries_a_503() -> None:
    """A seeding write answered 202 (stored, Kafka slower than the publisher waits: seen on a
    loaded machine) is a written item, not a failed run; a 503 is asked again; other
    answers stop the run with their status."""
    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer

    from loadtest.chaos.run import _call

    answers = [
        web.json_response({"detail": "not ready"}, status=503),
        web.json_response({"delivery": "pending", "item": {"key": "f", "version": 1}}, status=202),
        web.json_response({"detail": "version mismatch"}, status=409),
    ]

    async def answer(_: web.Request) -> web.Response:
        return answers.pop(0)

    app = web.Application()
    app.router.add_put("/flag", answer)
    async with TestServer(app, host="127.0.0.1") as server, ClientSession() as session:
        url = str(server.make_url("/flag"))
        assert await _call(session, "PUT", url, {}) == {"key": "f", "version": 1}
        with pytest.raises(RuntimeError, match="409"):
            await _call(session, "PUT", url, {})


@pytest.mark.integration
async def test_the_proxy_forwards_holds_and_resets() -> None:
    from flagstream.stack.process import free_port

    server, target = await _echo_server()
    listen = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.chaos.proxy",
        f"{listen}:{target}",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"ready"
        reader, writer = await asyncio.open_connection("127.0.0.1", listen)
        writer.write(b"one")
        assert await asyncio.wait_for(reader.read(3), 10) == b"one"

        await _command(proc, "cut 0 blackhole")
        writer.write(b"two")
        with pytest.raises(TimeoutError):  # held, not answered
            await asyncio.wait_for(reader.read(3), 0.5)
        await _command(proc, "heal 0")
        assert await asyncio.wait_for(reader.read(3), 10) == b"two"  # delivered, in order

        await _command(proc, "cut 0 reset")
        assert await asyncio.wait_for(reader.read(3), 10) == b""  # closed
        r2, _w2 = await asyncio.open_connection("127.0.0.1", listen)
        assert await asyncio.wait_for(r2.read(3), 10) == b""  # refused while cut
        await _command(proc, "heal 0")
        r3, w3 = await asyncio.open_connection("127.0.0.1", listen)
        w3.write(b"three")
        assert await asyncio.wait_for(r3.readexactly(5), 10) == b"three"
        w3.close()
        writer.close()
    finally:
        proc.kill()
        await proc.wait()
        server.close()


# --- the bounded run -----------------------------------------------------------------------

# Every fault kind, the zombie included: the forwarder is fenced by Kafka (a transactional
# producer per publisher, one transactional.id per deployment), so a deposed leader's held
# batch is aborted instead of landing after the new leader's records (docs/reliability.md).
BOUNDED_KINDS = list(FAULT_KINDS)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_bounded_chaos_run_holds_every_invariant(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flagstream",
            "loadtest",
            "chaos",
            "--duration",
            "90",
            "--seed",
            "11",
            "--faults",
            ",".join(BOUNDED_KINDS),
            "--clients",
            "40",
            "--write-rate",
            "25",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    figures = json.loads((tmp_path / "chaos-seed11.json").read_text())["figures"]
    assert figures["lost"] == "0" and figures["regressions"] == "0", figures
    assert figures["secrets in logs"] == "0"
    assert figures["result"] == "PASS"
    # every kind was injected (the first round of a schedule has each kind)
    for kind in BOUNDED_KINDS:
        count = figures.get(f"faults: {kind}", "0").split()[0]
        assert int(count) >= 1, (kind, figures)
    assert "| writes acknowledged |" in proc.stdout
    print(f"bounded chaos run: {time.monotonic() - started:.0f}s\n{proc.stdout}")
