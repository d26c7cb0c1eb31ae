"""Benchmark of flag evaluation: protocol.evaluation beside LaunchDarkly's Python SDK evaluator.

Run: ``.venv/bin/python -m loadtest.bench_evaluation [--repeats 15] [--contexts 2000] [--json]``

Both engines get the same flags, segments and contexts (parsed beforehand, each in its own
model), in one process, interleaved round by round so machine noise hits both alike:

- one flag per case: off, fallthrough, 10,000 targets, 5 rules x 3 clauses (regex and semver
  included; the contexts match none, so every clause runs), percentage rollout, a segment of
  100,000 included keys, 3 prerequisites;
- all 350 flags of a realistic mix (70% constant) for a context, as the client-side JSON
  (ours: ``all_flags_json``; the SDK: its ``all_flags_state`` loop — evaluate, ``add_flag``,
  ``json.dumps``), with *new* contexts: every round uses contexts not seen before, and our
  parse caches (dates, versions) are emptied first; also with the context parsed from JSON.

A figure is the median over rounds of the mean CPU time (``time.thread_time``: time this
thread ran, so preemption by other processes on a shared machine is not counted) per
evaluation in a round (each round evaluates every context of the pool once). Memory:
tracemalloc of compiling the flags. Also the relay's cost of applying a record now that it
compiles each one. Nothing here asserts anything; figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from ldclient.context import Context as LDContext
from ldclient.evaluation import FeatureFlagsState
from ldclient.impl.evaluator import Evaluator
from ldclient.impl.events.types import EventFactory
from ldclient.impl.model import FeatureFlag, Segment

from protocol.evaluation import CompiledEnvironment, parse_context, parse_context_json, values

BOOL = [True, False]


def _flag(key: str, **fields: Any) -> dict[str, Any]:
    return {
        "key": key,
        "version": 3,
        "on": True,
        "variations": BOOL,
        "offVariation": 1,
        "fallthrough": {"variation": 0},
        "salt": f"salt-{key}",
        "trackEvents": False,
        "clientSideAvailability": {"usingEnvironmentId": True, "usingMobileKey": True},
        **fields,
    }


def _clause(attribute: str, op: str, *values_: Any, **extra: Any) -> dict[str, Any]:
    return {"attribute": attribute, "op": op, "values": list(values_), **extra}


def _rules(n: int, salt: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{salt}-r{i}",
            "variation": 0,
            "clauses": [
                _clause("email", "endsWith", f"@corp{i}.example.com"),
                _clause("appVersion", "semVerGreaterThan", f"9.{i}.0"),
                _clause("name", "matches", f"^admin-{i}-[a-z]+$"),
            ],
        }
        for i in range(n)
    ]


def _rollout() -> dict[str, Any]:
    weights = [(0, 33333), (1, 33333), (0, 33334)]
    return {"rollout": {"variations": [{"variation": v, "weight": w} for v, w in weights]}}


CASES = ("off", "fallthrough", "targets", "rules", "rollout", "segment", "prerequisites")


def single_flag_cases() -> tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]:
    """The cases (each the key of its flag), flags, segments."""
    flags = {
        "off": _flag("off", on=False, rules=_rules(2, "off")),
        "fallthrough": _flag("fallthrough"),
        "targets": _flag(
            "targets",
            fallthrough={"variation": 1},
            targets=[{"variation": 0, "values": [f"user-{i}" for i in range(0, 20000, 2)]}],
        ),
        "rules": _flag("rules", fallthrough={"variation": 1}, rules=_rules(5, "rules")),
        "rollout": _flag("rollout", fallthrough=_rollout()),
        "segment": _flag(
            "segment",
            fallthrough={"variation": 1},
            rules=[{"id": "seg", "variation": 0, "clauses": [_clause("", "segmentMatch", "big")]}],
        ),
        "p1": _flag("p1", targets=[{"variation": 1, "values": ["nobody"]}]),
        "p2": _flag(
            "p2", rules=[{"id": "x", "variation": 1, "clauses": [_clause("country", "in", "zz")]}]
        ),
        "p3": _flag("p3"),
        "prerequisites": _flag(
            "prerequisites",
            fallthrough={"variation": 0},
            prerequisites=[
                {"key": "p1", "variation": 0},
                {"key": "p2", "variation": 0},
                {"key": "p3", "variation": 0},
            ],
        ),
    }
    segments = {
        "big": {"key": "big", "version": 1, "included": [f"user-{i}" for i in range(0, 200000, 2)]}
    }
    return CASES, flags, segments


def mix_350() -> tuple[dict[str, Any], dict[str, Any]]:
    """350 flags: 70% constant (off, or on with a fixed fallthrough), 30% targeting."""
    flags: dict[str, Any] = {}
    for i in range(245):
        key = f"constant-{i}"
        flags[key] = _flag(key, on=i % 3 != 0, rules=_rules(1, key) if i % 3 == 0 else [])
    builders: list[Callable[[str], dict[str, Any]]] = [
        lambda k: _flag(
            k,
            fallthrough={"variation": 1},
            targets=[{"variation": 0, "values": [f"user-{j}" for j in range(0, 200, 2)]}],
        ),
        lambda k: _flag(k, fallthrough={"variation": 1}, rules=_rules(2, k)),
        lambda k: _flag(k, fallthrough=_rollout()),
        lambda k: _flag(
            k,
            fallthrough={"variation": 1},
            rules=[{"id": "seg", "variation": 0, "clauses": [_clause("", "segmentMatch", "beta")]}],
        ),
        lambda k: _flag(
            k,
            prerequisites=[{"key": "constant-1", "variation": 0}],
            rules=[{"id": "c", "variation": 1, "clauses": [_clause("country", "in", "fr", "de")]}],
        ),
    ]
    for i in range(105):
        key = f"targeting-{i}"
        flags[key] = builders[i % len(builders)](key)
    segments = {
        "beta": {"key": "beta", "version": 1, "included": [f"user-{j}" for j in range(0, 2000, 3)]}
    }
    return flags, segments


def contexts(n: int, generation: int) -> list[dict[str, Any]]:
    """``n`` distinct user contexts; another ``generation`` gives contexts never seen."""
    out = []
    for i in range(n):
        j = generation * n + i
        out.append(
            {
                "kind": "user",
                "key": f"user-{j}",
                "email": f"person{j}@example.com",
                "appVersion": f"{j % 7}.{j % 13}.{j}",
                "name": f"Person {j}",
                "country": "us",
            }
        )
    return out


class LaunchDarkly:
    """LaunchDarkly's Python SDK evaluator over the same data (as its client builds it)."""

    def __init__(self, flags: dict[str, Any], segments: dict[str, Any]) -> None:
        self.flags = {k: FeatureFlag(v) for k, v in flags.items()}
        self.segments = {k: Segment(v) for k, v in segments.items()}
        self.evaluator = Evaluator(
            self.flags.get, self.segments.get, lambda _k: (None, "NOT_CONFIGURED")
        )
        self.events = EventFactory(False)

    def evaluate(self, key: str, context: LDContext) -> Any:
        return self.evaluator.evaluate(self.flags[key], context, self.events)

    def all_flags_json(self, context: LDContext) -> bytes:
        """The loop of ``LDClient.all_flags_state`` then its JSON, without the client."""
        state: Any = FeatureFlagsState(True)
        for key, flag in self.flags.items():
            result = self.evaluator.evaluate(flag, context, self.events)
            detail: Any = result.detail
            experiment = EventFactory.is_experiment(flag, detail.reason)
            state.add_flag(
                {
                    "key": key,
                    "value": detail.value,
                    "variation": detail.variation_index,
                    "reason": detail.reason,
                    "version": flag["version"],
                    "prerequisites": result.prerequisites,
                    "trackEvents": flag.get("trackEvents", False) or experiment,
                    "trackReason": experiment,
                    "debugEventsUntilDate": flag.get("debugEventsUntilDate"),
                },
                False,
                False,
            )
        return json.dumps(state.to_json_dict()).encode()


def _round(fn: Callable[[Any], object], items: list[Any]) -> float:
    # CPU time of this thread: on a shared machine, time spent preempted is not counted.
    start = time.thread_time()
    for item in items:
        fn(item)
    return (time.thread_time() - start) / len(items) * 1e6


def measure(
    pairs: dict[str, tuple[Callable[[Any], object], list[Any]]],
    repeats: int,
    before_round: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Median µs per call of each function, rounds interleaved.

    The data both engines were given is frozen out of the garbage collector's sight first
    (``gc.freeze``): otherwise a collection that one engine's garbage triggers would scan the
    other's millions of objects (target lists, the 100,000-key segment) inside a round. The
    collector stays on: an engine that allocates per evaluation pays for it.
    """
    gc.collect()
    gc.freeze()
    samples: dict[str, list[float]] = {name: [] for name in pairs}
    for r in range(repeats):
        for name, (fn, items) in pairs.items():
            if before_round is not None:
                before_round(r)
            samples[name].append(_round(fn, items))
    gc.unfreeze()
    return {name: statistics.median(times) for name, times in samples.items()}


def bench_single(repeats: int, n_contexts: int) -> list[dict[str, Any]]:
    cases, flags, segments = single_flag_cases()
    ours = CompiledEnvironment.from_items(flags, segments)
    theirs = LaunchDarkly(flags, segments)
    raw = contexts(n_contexts, 0)
    our_contexts = [parse_context(c) for c in raw]
    ld_contexts = [LDContext.from_dict(c) for c in raw]
    rows = []
    for key in cases:
        times = measure(
            {
                "ours": (lambda c, key=key: ours.evaluate(key, c), our_contexts),  # type: ignore[misc]
                "ld": (lambda c, key=key: theirs.evaluate(key, c), ld_contexts),  # type: ignore[misc]
            },
            repeats,
        )
        sample = ours.evaluate(key, our_contexts[1])
        rows.append(
            {
                "case": key,
                "ours_us": times["ours"],
                "ld_us": times["ld"],
                "ratio": times["ld"] / times["ours"],
                "constant": ours.flags[key].constant is not None,
                "sample_reason": sample.reason.to_json(),
            }
        )
    return rows


def bench_all_flags(repeats: int, n_contexts: int) -> dict[str, Any]:
    flags, segments = mix_350()
    ours = CompiledEnvironment.from_items(flags, segments)
    theirs = LaunchDarkly(flags, segments)
    generations = [contexts(n_contexts, g + 1) for g in range(repeats)]
    our_rounds = [[parse_context(c) for c in gen] for gen in generations]
    ld_rounds = [[LDContext.from_dict(c) for c in gen] for gen in generations]
    json_rounds = [[json.dumps(c).encode() for c in gen] for gen in generations]

    def new_contexts(r: int) -> None:
        values._semvers.clear()  # a new context's attribute strings were never parsed
        values._times.clear()
        state["r"] = r

    state = {"r": 0}
    times = measure(
        {
            "ours": (
                lambda i: ours.all_flags_json(our_rounds[state["r"]][i]),
                list(range(n_contexts)),
            ),
            "ours_with_parse": (
                lambda i: ours.all_flags_json(parse_context_json(json_rounds[state["r"]][i])),
                list(range(n_contexts)),
            ),
            "ld": (
                lambda i: theirs.all_flags_json(ld_rounds[state["r"]][i]),
                list(range(n_contexts)),
            ),
            "ld_with_parse": (
                lambda i: theirs.all_flags_json(
                    LDContext.from_dict(json.loads(json_rounds[state["r"]][i]))
                ),
                list(range(n_contexts)),
            ),
        },
        repeats,
        new_contexts,
    )
    body = json.loads(ours.all_flags_json(our_rounds[0][0]))
    constants = sum(1 for f in ours.flags.values() if f.constant is not None)
    return {
        "flags": len(flags),
        "constant_flags": constants,
        "body_bytes": len(ours.all_flags_json(our_rounds[0][0])),
        "sample_keys": len(body),
        **{f"{k}_us": v for k, v in times.items()},
        "ratio": times["ld"] / times["ours"],
        "ratio_with_parse": times["ld_with_parse"] / times["ours_with_parse"],
    }


def _allocated(build: Callable[[], object]) -> tuple[int, object]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    built = build()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, built


def _compiler_of(flags: list[dict[str, Any]]) -> Callable[[], object]:
    return lambda: CompiledEnvironment.from_items(flags)


def bench_memory() -> dict[str, Any]:
    flags, segments = mix_350()
    size, _ = _allocated(lambda: CompiledEnvironment.from_items(flags, segments))
    ld_size, _ = _allocated(lambda: LaunchDarkly(flags, segments))
    raw = sum(len(json.dumps(f)) for f in flags.values())
    _, one_flags, one_segments = single_flag_cases()
    per_case = {}
    for case in ("off", "fallthrough", "targets", "rules", "rollout"):
        per_case[case], _ = _allocated(_compiler_of([one_flags[case]]))
    segment_size, _ = _allocated(lambda: CompiledEnvironment.from_items([], one_segments))
    return {
        "mix_350_bytes_per_flag": size / len(flags),
        "ld_mix_350_bytes_per_flag": ld_size / len(flags),
        "mix_350_json_bytes_per_flag": raw / len(flags),
        "per_case_bytes": per_case,
        "segment_100k_bytes": segment_size,
    }


def _no_compile(*args: object) -> frozenset[str]:
    return frozenset()


def bench_relay_apply(repeats: int) -> dict[str, Any]:
    """``State.apply_batch`` of the 350-flag mix as records, compiling vs not compiling."""
    from protocol.envelope import Envelope, encode_envelope
    from protocol.keys import record_key
    from relay.evaluation import EvaluationService
    from relay.metrics import RelayMetrics
    from relay.state import SourceRecord, State

    flags, _ = mix_350()
    records = [
        SourceRecord(
            0,
            i,
            record_key("prod", "flag", k),
            encode_envelope(Envelope("flag", "prod", k, 3, 0, "bench", json.dumps(f).encode())),
        )
        for i, (k, f) in enumerate(flags.items())
    ]
    original = EvaluationService.apply

    def one(compile_items: bool) -> float:
        replacement: Any = original if compile_items else _no_compile
        EvaluationService.apply = replacement  # type: ignore[method-assign]
        state = State(RelayMetrics())
        state.set_layout("0123456789ab", 1)
        start = time.thread_time()
        state.apply_batch(records, {0: len(records)})
        return (time.thread_time() - start) / len(records) * 1e6

    try:
        on = statistics.median(one(True) for _ in range(repeats))
        off = statistics.median(one(False) for _ in range(repeats))
    finally:
        EvaluationService.apply = original  # type: ignore[method-assign]
    return {"apply_us_per_record_compiling": on, "apply_us_per_record_without_compile": off}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_evaluation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--repeats", type=int, default=15, help="rounds per figure (median)")
    parser.add_argument("--contexts", type=int, default=2000, help="distinct contexts per round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()
    single = bench_single(args.repeats, args.contexts)
    all_flags = bench_all_flags(args.repeats, max(50, args.contexts // 10))
    memory = bench_memory()
    relay = bench_relay_apply(args.repeats)
    result = {
        "started": started,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_before": load,
        "load_after": os.getloadavg(),
        "single": single,
        "all_flags": all_flags,
        "memory": memory,
        "relay": relay,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    after = os.getloadavg()[0]
    cpus = result["cpus"]
    print(f"{started}, Python {result['python']}, {cpus} cpus, load {load[0]:.1f}->{after:.1f}")
    print(f"{'case':<16}{'ours µs':>10}{'LD µs':>10}{'ratio':>8}")
    for row in single:
        print(f"{row['case']:<16}{row['ours_us']:>10.2f}{row['ld_us']:>10.2f}{row['ratio']:>7.1f}x")
    a = all_flags
    print(
        f"{'all 350 flags':<16}{a['ours_us']:>10.1f}{a['ld_us']:>10.1f}{a['ratio']:>7.1f}x   "
        f"({a['constant_flags']} constant, {a['body_bytes']} bytes)"
    )
    parsed = (a["ours_with_parse_us"], a["ld_with_parse_us"], a["ratio_with_parse"])
    print(f"{'  + parse JSON':<16}{parsed[0]:>10.1f}{parsed[1]:>10.1f}{parsed[2]:>7.1f}x")
    m = memory
    print(
        f"memory per compiled flag (350 mix): {m['mix_350_bytes_per_flag']:.0f} B "
        f"(LD model {m['ld_mix_350_bytes_per_flag']:.0f} B; "
        f"JSON {m['mix_350_json_bytes_per_flag']:.0f} B); "
        f"per case: {m['per_case_bytes']}; 100k-key segment: {m['segment_100k_bytes']} B"
    )
    r = relay
    print(
        f"relay apply: {r['apply_us_per_record_compiling']:.1f} µs/record compiling, "
        f"{r['apply_us_per_record_without_compile']:.1f} µs/record without"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
