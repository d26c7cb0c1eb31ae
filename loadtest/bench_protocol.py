"""Micro-benchmark of the protocol core (pure CPU, single thread, no I/O).

Run: ``.venv/bin/python -m loadtest.bench_protocol [--seconds 1.0] [--json]``

Reports operations per second for what a relay does per record and per broadcast:
decode an envelope, encode SSE frames (patch, delete, full put), the SSE parser (MB/s, used by
the load generator), and flag validation (publisher side). Each figure is the best of three
timed rounds, to dampen noise on a shared machine. Figures go to BENCHMARKS.md; nothing here
asserts a threshold.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from protocol import ld
from protocol.envelope import Envelope, decode_envelope, encode_envelope
from protocol.model import encode_item, validate_flag
from protocol.sse import SSEParser


def sample_flag(key: str, version: int = 1) -> dict[str, Any]:
    """A realistic flag: two rules, a target list, a percentage rollout."""
    return {
        "key": key,
        "version": version,
        "on": True,
        "variations": [True, False],
        "fallthrough": {
            "rollout": {
                "variations": [{"variation": 0, "weight": 25000}, {"variation": 1, "weight": 75000}]
            }
        },
        "offVariation": 1,
        "targets": [{"values": [f"user-{i}" for i in range(10)], "variation": 0}],
        "rules": [
            {
                "id": "r1",
                "clauses": [{"attribute": "email", "op": "endsWith", "values": ["@example.com"]}],
                "variation": 0,
            },
            {
                "id": "r2",
                "clauses": [{"attribute": "", "op": "segmentMatch", "values": ["beta-users"]}],
                "variation": 0,
            },
        ],
        "salt": "0123456789abcdef",
    }


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn``: best of three rounds of ~seconds/3 each."""
    best = 0.0
    for _ in range(3):
        n = 0
        batch = 1
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(batch):
                fn()
            n += batch
            now = time.perf_counter()
            if now >= deadline:
                break
            batch = min(batch * 2, 4096)
        best = max(best, n / (now - start))
    return best


def run(seconds: float) -> dict[str, float]:
    item = encode_item(validate_flag(sample_flag("checkout-redesign", 42)))
    env = Envelope("flag", "production", "checkout-redesign", 42, 1_763_773_200_000, "bench", item)
    record = encode_envelope(env)
    flags = {f"flag-{i}": encode_item(validate_flag(sample_flag(f"flag-{i}"))) for i in range(1000)}
    stream = b"".join(
        ld.patch_event("flag", f"flag-{i}", flags[f"flag-{i}"], id=f"0123456789ab:{i}")
        for i in range(1000)
    )
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]

    def parse_stream() -> None:
        parser = SSEParser()
        for chunk in chunks:
            parser.feed(chunk)

    raw_flag = sample_flag("checkout-redesign", 42)
    results = {
        "envelope_decodes_per_s": rate(lambda: decode_envelope(record), seconds),
        "envelope_encodes_per_s": rate(lambda: encode_envelope(env), seconds),
        "patch_frame_encodes_per_s": rate(
            lambda: ld.patch_event("flag", "checkout-redesign", item, id="0123456789ab:12345"),
            seconds,
        ),
        "delete_frame_encodes_per_s": rate(
            lambda: ld.delete_event("flag", "checkout-redesign", 43, id="0123456789ab:12346"),
            seconds,
        ),
        "put_1000_flags_encodes_per_s": rate(
            lambda: ld.put_event(flags, {}, id="0123456789ab:99999"), seconds
        ),
        "sse_parser_mb_per_s": rate(parse_stream, seconds) * len(stream) / 1e6,
        "sse_parser_events_per_s": rate(parse_stream, seconds) * 1000,
        "flag_validations_per_s": rate(lambda: validate_flag(raw_flag), seconds),
    }
    results["item_bytes"] = len(item)
    results["envelope_bytes"] = len(record)
    results["put_1000_flags_bytes"] = len(ld.put_event(flags, {}, id="0123456789ab:99999"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    results = run(args.seconds)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"python {platform.python_version()} on {platform.machine()}")
        for name, value in results.items():
            print(f"{name:32s} {value:>14,.0f}" if value >= 100 else f"{name:32s} {value:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
