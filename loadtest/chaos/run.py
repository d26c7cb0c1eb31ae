"""One chaos run: bring the system up, load it, break it on a seeded schedule, check it.

Order (each step waits for the previous one):
1. Cluster up (own Kafka + Redis, proxies, 2 publishers, 3 relays), environments, a write
   token, the flags (created with ``If-Match: 0``).
2. Observers: the SSE swarm (spread over all relays, failing over between them), the
   clients that stop reading, two LaunchDarkly SDKs; a sampler of relay RSS.
3. Writers start; after a short warm-up the faults run one by one (``schedule.plan``) until
   the fault phase's duration is used; then the writers stop.
4. The outbox drains; the publisher's final state is read; the run waits (bounded) until
   every view equals it, then reads the topic and every relay's polling answer, replays the
   SDK logs, scans every log for secrets, and judges (``invariants``).
5. Report: a Markdown table (one row per figure), JSON with every figure; on failure also
   the event timeline (``…-timeline.jsonl``) and the services' logs in the run directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.chaos.cluster import Cluster, ClusterConfig
from loadtest.chaos.faults import FaultRecord, inject
from loadtest.chaos.invariants import (
    View,
    check_views,
    convergence_times,
    find_secrets,
    percentile,
    regressions_summary,
)
from loadtest.chaos.observers import ClientLedger, SdkClient, StalledClients, replay_sdk_log
from loadtest.chaos.schedule import FAULT_KINDS, plan
from loadtest.chaos.writers import WriterPool, flag_body
from loadtest.swarm import Swarm, Target
from protocol.envelope import decode_envelope
from publisher.log import FENCED_MESSAGE as FENCED_MARK

__all__ = ["ChaosOptions", "ChaosResult", "run_chaos"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class ChaosOptions:
    duration: float = 600.0
    seed: int = 1
    kinds: tuple[str, ...] = tuple(FAULT_KINDS)
    envs: int = 5
    flags: int = 200  # in all, spread over the environments
    writers: int = 8
    write_rate: float = 40.0
    clients: int = 100
    stalled: int = 4
    sdks: int = 2
    relay_rss_bound_mb: float = 300.0
    converge_timeout: float = 120.0
    out: Path = Path("loadtest/results")
    name: str | None = None
    progress: bool = True

    @property
    def stem(self) -> str:
        return self.name or f"chaos-seed{self.seed}"


@dataclass
class ChaosResult:
    ok: bool
    figures: list[tuple[str, str]]
    failures: list[str]
    details: dict[str, Any]
    markdown: str = ""
    files: list[Path] = field(default_factory=list)


def _say(opts: ChaosOptions, message: str) -> None:
    if opts.progress:
        print(f"chaos: {message}", flush=True, file=sys.stderr)


async def run_chaos(opts: ChaosOptions, command: str) -> ChaosResult:
    started_wall = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    opts.out.mkdir(parents=True, exist_ok=True)
    run_dir = opts.out / f"{opts.stem}-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    config = ClusterConfig(
        topic=f"chaos.{secrets.token_hex(4)}",
        admin_token=secrets.token_urlsafe(24),
        relay_env={
            "FLAGSTREAM_RELAY_HEARTBEAT_INTERVAL": "5",
            "FLAGSTREAM_RELAY_STALE_AFTER": "5",
            "FLAGSTREAM_RELAY_RETRY_AFTER": "1",
            "FLAGSTREAM_RELAY_MAX_BUFFER_BYTES": str(256 * 1024),
            "FLAGSTREAM_RELAY_DRAIN_WINDOW": "1",
        },
    )
    cluster = Cluster.create(config, run_dir)
    sdks: list[SdkClient] = []
    swarm: Swarm | None = None
    stalled: StalledClients | None = None
    sampler: asyncio.Task[None] | None = None
    failed = True  # until a run completed and passed
    try:
        _say(opts, f"starting Kafka, Redis, 2 publishers, 3 relays in {run_dir}")
        await cluster.start()
        setup = await _setup(cluster, opts)
        key_ids = {item: i for i, item in enumerate(setup.items)}
        ledger = ClientLedger(key_ids)
        swarm = Swarm(
            [Target.from_url(u) for u in cluster.relay_urls],
            ledger,  # type: ignore[arg-type]
            source_ips=4,
            reconnect_delay=1.0,
        )
        per_env = max(1, opts.clients // opts.envs)
        clients = []
        for env in setup.env_keys:
            clients += swarm.add(per_env, env, setup.sdk_keys[env])
        # Spread the first connections over the relays; reconnects rotate further.
        for c in clients:
            c.target_index = c.id % len(cluster.relay_urls)
        await swarm.connect_all(clients, rate=200)
        if not await swarm.wait_open(len(clients), 60):
            raise RuntimeError(f"only {swarm.open_count} of {len(clients)} streams opened")
        stalled = StalledClients(
            [(t.host, t.port) for t in swarm.targets],
            [setup.sdk_keys[e] for e in setup.env_keys],
            count=opts.stalled,
        )
        stalled.start()
        sdk_relays = [0, len(cluster.relay_urls) - 1]
        for i in range(opts.sdks):
            env = setup.env_keys[i % len(setup.env_keys)]
            sdk = SdkClient(
                f"sdk-{i}",
                cluster.relay_urls[sdk_relays[i % 2]],
                setup.sdk_keys[env],
                env,
                run_dir / f"sdk-{i}.log",
            )
            sdk.start()
            sdks.append(sdk)
        rss: dict[str, float] = {}
        sampler = asyncio.create_task(_sample_rss(cluster, rss))

        writers = WriterPool(
            cluster.publisher_urls,
            setup.write_token,
            setup.items,
            dict(setup.versions),
            set(),
            opts.seed,
            count=opts.writers,
            rate=opts.write_rate,
        )
        writers.start()
        await asyncio.sleep(3.0)
        # Planned for twice the duration (cost estimates are rough on a shared machine);
        # new faults stop at the duration, once every kind has had its turn.
        schedule = plan(opts.seed, opts.duration * 2, opts.kinds)
        _say(opts, f"up to {len(schedule)} faults planned (seed {opts.seed})")
        records: list[FaultRecord] = []
        phase_start = time.monotonic()
        writes_end = 0.0

        def stop_writing() -> None:
            # Writes stop when the last fault ends: convergence is measured from there.
            nonlocal writes_end
            writes_end = time.monotonic()
            writers.stop_soon()

        first_round = len(opts.kinds)  # always run whole, even past the duration
        for fault in schedule:
            if records:
                await asyncio.sleep(records[-1].fault.gap)
            elapsed = time.monotonic() - phase_start
            if fault.index >= first_round and elapsed >= opts.duration:
                break
            last = fault is schedule[-1] or (
                fault.index >= first_round - 1
                and elapsed + FAULT_KINDS[fault.kind] >= opts.duration
            )
            _say(opts, f"fault {fault.index + 1}/{len(schedule)}: {fault.describe()}")
            record = await inject(cluster, fault, on_end=stop_writing if last else None)
            records.append(record)
            if record.error:
                _say(opts, f"  fault did not go as planned: {record.error}")
            if last:
                break
        if not writes_end:
            stop_writing()
        await writers.stop()
        phase = writes_end - phase_start
        t0 = max([writes_end, *(r.ended for r in records)])
        _say(opts, f"faults done after {phase:.0f}s; {len(writers.acked)} writes acknowledged")

        final = await _final_state(cluster, setup, opts)
        _say(opts, "waiting for every view to converge")
        polls = await _wait_converged(cluster, setup, ledger, sdks, final, opts)
        topic_last, topic_max, stale_appends = await _read_topic(cluster)
        await stalled.stop()
        for sdk in sdks:
            sdk.stop()
        sampler.cancel()

        views = [View("redis", frozenset(setup.env_keys), final)]
        views.append(View("compacted topic", frozenset(setup.env_keys), topic_last))
        for name, (versions, when) in polls.items():
            views.append(View(name, frozenset(setup.env_keys), versions, when))
        client_views = []
        for stream_id, view in ledger.views.items():
            env = ledger.envs[stream_id]
            client_views.append(
                View(
                    f"stream-{stream_id}",
                    frozenset([env]),
                    {(env, k): v for k, v in view.items()},
                    ledger.last_change.get(stream_id),
                )
            )
        missing_streams = [c.id for c in clients if c.id not in ledger.views]
        sdk_replays = {}
        for sdk in sdks:
            replay = replay_sdk_log(sdk.log_path, sdk.name, sdk.env)
            sdk_replays[sdk.name] = replay
            client_views.append(
                View(
                    sdk.name,
                    frozenset([sdk.env]),
                    {(sdk.env, k): v for k, v in replay.view.items()},
                    replay.last_change,
                )
            )
        views += client_views
        verdict = check_views(writers.acked, final, views)
        regressions = ledger.regressions + [r for s in sdk_replays.values() for r in s.regressions]
        times = convergence_times(client_views, t0)
        topic_behind = sum(1 for item, v in final.items() if topic_last.get(item, 0) < v)
        topic_rewound = sum(1 for item, v in topic_last.items() if v < topic_max.get(item, 0))
        texts = {p.name: _read(p) for p in cluster.log_paths + [s.log_path for s in sdks]}
        secrets_found = find_secrets(texts, setup.secrets)
        max_rss = max(rss.values(), default=0.0)

        failures = []
        if verdict.lost:
            failures.append(f"lost: {verdict.lost} ({verdict.lost_by_view})")
        if regressions:
            failures.append(f"regressions: {len(regressions)}")
        if verdict.not_converged or missing_streams:
            failures.append(
                f"not converged: {len(verdict.not_converged)} views, "
                f"{len(missing_streams)} streams that never received anything"
            )
        if max_rss > opts.relay_rss_bound_mb * MIB:
            failures.append(f"relay RSS {max_rss / MIB:.0f} MiB over the bound")
        if secrets_found:
            failures.append(f"secrets in logs: {secrets_found[:5]}")
        if not writers.acked:
            failures.append("no write was acknowledged")
        broken = [f"{r.fault.describe()}: {r.error}" for r in records if r.error]
        if broken:
            # A fault that could not be carried out leaves its case untested: not a pass.
            failures.append(f"faults not carried out as planned: {broken}")
        ok = not failures

        statuses = Counter(w.status for w in writers.acked)
        kinds = Counter(r.fault.kind for r in records)
        figures: list[tuple[str, str]] = [
            ("fault phase", f"{phase:.0f} s, seed {opts.seed}"),
            (
                "writes acknowledged",
                f"{len(writers.acked)} (200: {statuses[200]}, 201: {statuses[201]}, "
                f"202: {statuses[202]})",
            ),
            ("writes not acknowledged", _not_acked(writers.outcomes)),
        ]
        for kind in FAULT_KINDS:
            if kinds[kind]:
                errors = sum(1 for r in records if r.fault.kind == kind and r.error)
                note = f" ({errors} did not go as planned)" if errors else ""
                figures.append((f"faults: {kind}", f"{kinds[kind]}{note}"))
        figures += [
            ("lost", f"{verdict.lost}" + (f" {verdict.lost_by_view}" if verdict.lost else "")),
            ("regressions", str(len(regressions))),
            ("compacted topic: keys behind Redis", str(topic_behind)),
            ("compacted topic: keys whose last record is not the newest", str(topic_rewound)),
            (
                "topic: stale appends (a record older than one before it)",
                f"{len(stale_appends)} (harmless unless it is a key's last record)",
            ),
            (
                # the forwarder logs each batch Kafka refused because a newer leader started
                "batches of deposed leaders fenced by Kafka",
                str(sum(text.count(FENCED_MARK) for text in texts.values())),
            ),
            ("convergence p50", _secs(percentile(times, 50))),
            ("convergence max", _secs(max(times, default=None))),
            (
                "views converged",
                f"{len(views) - len(verdict.not_converged)} of {len(views)} "
                f"(Redis, topic, {len(polls)} relay workers, {len(ledger.views)} streams, "
                f"{len(sdks)} SDKs)",
            ),
            (
                "max relay RSS",
                f"{max_rss / MIB:.0f} MiB (bound {opts.relay_rss_bound_mb:.0f} MiB)",
            ),
            (
                "clients that stopped reading",
                f"{opts.stalled} at a time: {stalled.stalled} stalls, "
                f"{stalled.evicted} ended by the relay (evicted)",
            ),
            ("SSE events checked", f"{ledger.events} ({ledger.puts} puts)"),
            (
                "SDK store updates checked",
                ", ".join(
                    f"{n}: {r.inits} inits, {r.updates} updates" for n, r in sdk_replays.items()
                ),
            ),
            ("secrets in logs", str(len(secrets_found))),
            ("result", "PASS" if ok else "FAIL: " + "; ".join(failures)),
        ]
        details = {
            "started": started_wall,
            "command": command,
            "options": {k: str(v) for k, v in vars(opts).items()},
            "faults": [r.to_json() for r in records],
            "lost_examples": verdict.lost_examples,
            "not_converged": verdict.not_converged[:20],
            "regressions": regressions_summary(regressions),
            "stale_appends": stale_appends[:50],
            "secrets_found": secrets_found,
            "rss_bytes": rss,
            "write_outcomes": dict(writers.outcomes),
            "convergence_seconds": sorted(times),
        }
        result = ChaosResult(ok, figures, failures, details)
        result.markdown = _markdown(result, command, started_wall)
        result.files += _write(opts, result, run_dir)
        failed = not ok
        if not ok:
            timeline = _timeline(records, writers.acked, ledger, sdk_replays, regressions)
            path = opts.out / f"{opts.stem}-timeline.jsonl"
            with path.open("w") as f:
                for entry in timeline:
                    f.write(json.dumps(entry, default=str) + "\n")
            result.files.append(path)
            logs = run_dir / "logs"
            logs.mkdir(exist_ok=True)
            for p in cluster.log_paths:
                with contextlib.suppress(OSError):
                    shutil.copy(p, logs / p.name)
            result.files.append(logs)
        return result
    finally:
        if sampler is not None:
            sampler.cancel()
        if stalled is not None:
            await stalled.stop()
        if swarm is not None:
            await swarm.close()
        for sdk in sdks:
            sdk.stop()
        await asyncio.to_thread(cluster.close)
        for p in cluster.log_paths:
            if p.name.startswith("flagstream-loadtest-"):  # the services' temporary logs
                p.unlink(missing_ok=True)
        if not failed:
            # Kafka's and Redis' data, the SDK logs: kept only to explain a failed run.
            shutil.rmtree(run_dir, ignore_errors=True)


# --- set-up ----------------------------------------------------------------------------------


@dataclass
class Setup:
    env_keys: list[str]
    sdk_keys: dict[str, str]
    items: list[tuple[str, str]]
    versions: dict[tuple[str, str], int]
    write_token: str
    secrets: list[str]


async def _setup(cluster: Cluster, opts: ChaosOptions) -> Setup:
    url = cluster.publisher_urls[0]
    admin = {"Authorization": f"Bearer {cluster.config.admin_token}"}
    env_keys = [f"env-{i}" for i in range(opts.envs)]
    sdk_keys: dict[str, str] = {}
    found_secrets = [cluster.config.admin_token]
    async with aiohttp.ClientSession(headers=admin) as session:
        for env in env_keys:
            body = await _call(
                session, "POST", f"{url}/api/v1/environments", {"key": env, "name": env}
            )
            sdk_keys[env] = body["sdkKey"]
            found_secrets += [body["sdkKey"], body["mobileKey"]]
        token = await _call(
            session,
            "POST",
            f"{url}/api/v1/tokens",
            {"name": "chaos-writers", "scopes": ["write"], "environments": "*"},
        )
        write_token = token["token"]
        found_secrets.append(write_token)
        items = [(env_keys[i % opts.envs], f"flag-{i:03d}") for i in range(opts.flags)]
        versions = {}
        sem = asyncio.Semaphore(16)

        async def create(item: tuple[str, str]) -> None:
            env, key = item
            async with sem:
                stored = await _call(
                    session,
                    "PUT",
                    f"{url}/api/v1/environments/{env}/flags/{key}",
                    flag_body(key, 0, 600),
                    headers={"If-Match": "0"},
                )
            versions[item] = int(stored["version"])

        await asyncio.gather(*(create(i) for i in items))
    return Setup(env_keys, sdk_keys, items, versions, write_token, found_secrets)


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> Any:
    """The answer's body (a write's item), retrying a 503. A 202 is a write stored durably
    whose Kafka acknowledgement took longer than the publisher waits (a loaded machine): it is
    delivered later, and the run's convergence check covers it like every other write."""
    for _ in range(20):
        async with session.request(method, url, json=body, headers=headers) as resp:
            payload = await resp.json(content_type=None)
            if resp.status in (200, 201):
                return payload
            if resp.status == 202 and payload.get("delivery") == "pending":
                return payload["item"]
            if resp.status != 503:
                raise RuntimeError(f"{method} {url}: {resp.status} {payload}")
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{method} {url}: still 503")


# --- observation -----------------------------------------------------------------------------


def _resident_bytes(pid: int, page: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
    except (OSError, IndexError, ValueError):
        return None


async def _sample_rss(cluster: Cluster, peak: dict[str, float]) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        for index, pids in cluster.relay_pids().items():
            for pid in pids:
                resident = _resident_bytes(pid, page)
                if resident is None:
                    continue
                name = f"relay-{index}/{pid}"
                peak[name] = max(peak.get(name, 0.0), float(resident))
        await asyncio.sleep(1.0)


async def _final_state(
    cluster: Cluster, setup: Setup, opts: ChaosOptions
) -> dict[tuple[str, str], int]:
    """The publisher's state once its outbox is empty (every write forwarded)."""
    headers = {"Authorization": f"Bearer {cluster.config.admin_token}"}
    deadline = time.monotonic() + opts.converge_timeout
    async with aiohttp.ClientSession(
        headers=headers, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        while time.monotonic() < deadline:
            depth = None
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.get(cluster.publisher_urls[0] + "/readyz") as resp:
                    depth = (await resp.json(content_type=None)).get("outboxDepth")
            if depth == 0:
                break
            await asyncio.sleep(0.5)
        final: dict[tuple[str, str], int] = {}
        for env in setup.env_keys:
            url = f"{cluster.publisher_urls[0]}/api/v1/environments/{env}/flags?includeDeleted=true"
            body = await _call(session, "GET", url, None)
            for item in body["items"]:
                final[(env, item["key"])] = int(item["version"])
    return final


async def _poll_relays(cluster: Cluster, setup: Setup) -> dict[str, dict[tuple[str, str], int]]:
    """Every relay worker's ``/sdk/latest-all`` for every environment (by worker header)."""
    out: dict[str, dict[tuple[str, str], int]] = {}
    for index, url in enumerate(cluster.relay_urls):
        workers = cluster.config.relay_workers[index]
        for env in setup.env_keys:
            seen: set[str] = set()
            for _ in range(40 * workers):
                connector = aiohttp.TCPConnector(force_close=True)
                async with aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=5)
                ) as session:
                    try:
                        async with session.get(
                            url + "/sdk/latest-all", headers={"Authorization": setup.sdk_keys[env]}
                        ) as resp:
                            if resp.status != 200:
                                continue
                            worker = resp.headers.get("X-Flagstream-Worker", "0/?").split("/")[0]
                            body = await resp.json()
                    except (aiohttp.ClientError, TimeoutError):
                        continue
                name = f"relay-{index} worker {worker} polling"
                view = out.setdefault(name, {})
                for key, flag in body.get("flags", {}).items():
                    view[(env, key)] = int(flag["version"])
                seen.add(worker)
                if len(seen) >= workers:
                    break
    return out


async def _wait_converged(
    cluster: Cluster,
    setup: Setup,
    ledger: ClientLedger,
    sdks: list[SdkClient],
    final: dict[tuple[str, str], int],
    opts: ChaosOptions,
) -> dict[str, tuple[dict[tuple[str, str], int], float]]:
    """Wait (bounded) until streams, SDKs and relay polling all equal ``final``; return the
    last polling answers with the time each relay worker first answered ``final``."""
    by_env: dict[str, dict[str, int]] = {}
    for (env, key), version in final.items():
        by_env.setdefault(env, {})[key] = version
    deadline = time.monotonic() + opts.converge_timeout
    converged_at: dict[str, float] = {}
    polls: dict[str, dict[tuple[str, str], int]] = {}
    while True:
        streams_ok = all(
            view == by_env.get(ledger.envs[sid], {}) for sid, view in ledger.views.items()
        )
        sdks_ok = all(
            replay_sdk_log(s.log_path, s.name, s.env).view == by_env.get(s.env, {}) for s in sdks
        )
        polls = await _poll_relays(cluster, setup)
        now = time.monotonic()
        for name, view in polls.items():
            if view == final and name not in converged_at:
                converged_at[name] = now
        polls_ok = all(view == final for view in polls.values()) and polls
        if (streams_ok and sdks_ok and polls_ok) or now > deadline:
            break
        await asyncio.sleep(1.0)
    return {name: (view, converged_at.get(name, time.monotonic())) for name, view in polls.items()}


async def _read_topic(
    cluster: Cluster,
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int], list[str]]:
    """Per flag: the version of its last record (what compaction keeps) and the largest;
    and every record appended after a newer version of its key (a *stale append*)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    last: dict[tuple[str, str], int] = {}
    largest: dict[tuple[str, str], int] = {}
    stale: list[str] = []
    # read_committed, as the relays read: a fenced leader's aborted batch is in the log but
    # never read, and compaction removes it.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=cluster.kafka.bootstrap,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        # The publisher created the topic with this many partitions.
        parts = [TopicPartition(cluster.config.topic, p) for p in range(cluster.config.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=2000, max_records=5000)
                for record in batch.get(tp, []):
                    envelope = decode_envelope(record.value)
                    if envelope.kind != "flag":
                        continue
                    item = (envelope.env, envelope.key)
                    if envelope.version < largest.get(item, 0):
                        stale.append(
                            f"{item[0]}/{item[1]} v{envelope.version} at offset {record.offset} "
                            f"of partition {tp.partition}, after v{largest[item]}"
                        )
                    last[item] = envelope.version
                    largest[item] = max(largest.get(item, 0), envelope.version)
    finally:
        await consumer.stop()
    return last, largest, stale


# --- report ----------------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _not_acked(outcomes: Counter[str]) -> str:
    parts = [f"{k}: {v}" for k, v in sorted(outcomes.items()) if k not in {"200", "201", "202"}]
    return ", ".join(parts) or "0"


def _markdown(result: ChaosResult, command: str, started: str) -> str:
    lines = [
        f"### Chaos run ({started})",
        "",
        f"`{command}`",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in result.figures),
    ]
    if result.details.get("faults"):
        lines += [
            "",
            "Faults, in order: " + "; ".join(f["fault"] for f in result.details["faults"]),
        ]
    for title, key in (
        ("Lost (examples)", "lost_examples"),
        ("Regressions (examples)", "regressions"),
        ("Not converged", "not_converged"),
        ("Stale appends in the topic", "stale_appends"),
    ):
        if result.details.get(key):
            lines += ["", f"{title}:", *(f"- {x}" for x in result.details[key])]
    return "\n".join(lines) + "\n"


def _write(opts: ChaosOptions, result: ChaosResult, run_dir: Path) -> list[Path]:
    md = opts.out / f"{opts.stem}.md"
    md.write_text(result.markdown)
    js = opts.out / f"{opts.stem}.json"
    js.write_text(
        json.dumps(
            {
                "ok": result.ok,
                "figures": dict(result.figures),
                "failures": result.failures,
                **result.details,
            },
            indent=1,
            default=str,
        )
    )
    return [md, js]


def _timeline(
    records: list[FaultRecord],
    acked: list[Any],
    ledger: ClientLedger,
    sdk_replays: dict[str, Any],
    regressions: list[Any],
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = [r.to_json() for r in records]
    entries += [
        {
            "t": w.acked,
            "what": "write",
            "item": f"{w.env}/{w.key}",
            "version": w.version,
            "status": w.status,
            "sent": w.sent,
            "writer": w.writer,
            "publisher": w.publisher,
            "deleted": w.deleted,
        }
        for w in acked
    ]
    entries += [{"t": r.t, "what": "regression", **vars_of(r)} for r in regressions]
    entries += ledger.timeline()
    for replay in sdk_replays.values():
        entries += replay.timeline
    entries.sort(key=lambda e: e["t"])
    return entries


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}
