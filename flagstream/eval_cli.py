"""``flagstream eval``: evaluate one flag or all flags for a context, for operators and debugging.

The flags come from a running relay (``--relay URL``: its ``/sdk/latest-all``, with the SDK key
from ``--sdk-key`` or ``FLAGSTREAM_SDK_KEY``: exactly the data the relay holds for that
environment) or from a JSON data file (``--data FILE``: ``{"flags": {...}, "segments": {...}}``
as ``/sdk/latest-all`` answers, optionally ``"flagValues": {"key": value}`` as in
LaunchDarkly's file data source). They are compiled and evaluated here with
``protocol.evaluation``, the engine the relay itself uses.

The context is JSON (LaunchDarkly's: single kind, ``multi``, or old user JSON): inline
(``--context '{"kind": "user", "key": "alice"}'``), ``@file``, or ``-`` for stdin.

Output: one line per flag, ``FLAG VALUE VARIATION REASON`` (and why a malformed flag is
malformed), or JSON with ``--json``. Exit codes: 0 evaluated (an ``ERROR`` reason is an
answer too), 1 the relay refused (unknown SDK key, not ready) or ``--flag`` names no flag,
2 bad usage or input (context, data file), 3 the relay cannot be reached.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from protocol.evaluation import (
    SDK_KINDS,
    CompiledEnvironment,
    Context,
    ContextError,
    EvaluationResult,
    SdkKind,
    parse_context,
)

__all__ = ["main"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3
_VALUE_WIDTH = 40


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagstream eval",
        description="Evaluate one flag or all flags for a context, against a running relay's "
        "environment or a JSON data file.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--relay", metavar="URL", help="a relay, e.g. http://127.0.0.1:8030")
    source.add_argument("--data", metavar="FILE", help='JSON {"flags": {...}, "segments": {...}}')
    parser.add_argument(
        "--sdk-key", metavar="KEY", help="the environment's SDK key (default: $FLAGSTREAM_SDK_KEY)"
    )
    parser.add_argument(
        "--context",
        required=True,
        metavar="JSON",
        help='context JSON, @FILE, or - for stdin (e.g. \'{"kind": "user", "key": "alice"}\')',
    )
    parser.add_argument("--flag", metavar="KEY", help="evaluate this flag only (default: all)")
    parser.add_argument(
        "--sdk",
        choices=SDK_KINDS,
        default="server",
        help="all flags as this SDK sees them: server (every flag), client "
        "(clientSideAvailability.usingEnvironmentId), mobile (usingMobileKey)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds")
    return parser


def _read_text(spec: str, what: str) -> str:
    if spec == "-":
        return sys.stdin.read()
    if spec.startswith("@"):
        try:
            return Path(spec[1:]).read_text()
        except OSError as exc:
            raise CliError(
                f"cannot read {what} file {spec[1:]!r}: {exc.strerror}", EXIT_USAGE
            ) from None
    return spec


def _context(spec: str) -> Context:
    text = _read_text(spec, "context")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise CliError(f"--context is not valid JSON: {exc}", EXIT_USAGE) from None
    try:
        return parse_context(obj)
    except ContextError as exc:
        raise CliError(f"invalid context: {exc}", EXIT_USAGE) from None


def _data_file(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CliError(f"cannot read data file {path!r}: {exc.strerror}", EXIT_USAGE) from None
    except ValueError as exc:
        raise CliError(f"data file {path!r} is not valid JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(data, dict):
        raise CliError(
            f'data file {path!r}: expected {{"flags": {{...}}, "segments": {{...}}}}', EXIT_USAGE
        )
    flags = dict(_section(data, "flags", path))
    for key, value in _section(data, "flagValues", path).items():
        flags[key] = {
            "key": key, "version": 1, "on": True, "variations": [value],
            "fallthrough": {"variation": 0},
        }  # fmt: skip
    return {"flags": flags, "segments": _section(data, "segments", path)}


def _section(data: dict[str, Any], name: str, path: str) -> dict[str, Any]:
    section = data.get(name) or {}
    if not isinstance(section, dict):
        raise CliError(f"data file {path!r}: {name!r} must be an object keyed by key", EXIT_USAGE)
    # As LaunchDarkly's file data source: the map key is the key, the version defaults to 1.
    return {
        key: {"version": 1, **item, "key": key} if isinstance(item, dict) else item
        for key, item in section.items()
    }


def _fetch(relay: str, sdk_key: str | None, timeout: float) -> dict[str, Any]:
    if not sdk_key:
        raise CliError("no SDK key: pass --sdk-key or set FLAGSTREAM_SDK_KEY", EXIT_USAGE)
    parts = urllib.parse.urlsplit(relay)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(
            f"invalid relay URL {relay!r}: expected e.g. http://127.0.0.1:8030", EXIT_USAGE
        )
    request = urllib.request.Request(
        relay.rstrip("/") + "/sdk/latest-all",
        headers={"Authorization": sdk_key, "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        hint = {
            401: "the relay does not know this SDK key (wrong environment, or rotated and expired)",
            503: "the relay is not ready yet (still reading the log); retry in a few seconds",
        }.get(exc.code, "unexpected answer")
        raise CliError(f"{relay}: HTTP {exc.code}: {hint}", EXIT_REFUSED) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach the relay at {relay}: {reason}", EXIT_CONNECT) from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise CliError(f"{relay}: /sdk/latest-all did not answer JSON", EXIT_REFUSED) from None
    if not isinstance(data, dict):
        raise CliError(f"{relay}: /sdk/latest-all did not answer a JSON object", EXIT_REFUSED)
    return data


def _reason_text(result: EvaluationResult) -> str:
    reason = result.reason
    parts = {
        "ruleIndex": reason.rule_index,
        "ruleId": reason.rule_id,
        "prerequisiteKey": reason.prerequisite_key,
    }
    details = ", ".join(f"{k}={v}" for k, v in parts.items() if v is not None)
    text: str = reason.kind
    if reason.error_kind:
        text += f" {reason.error_kind}"
    if details:
        text += f"({details})"
    if reason.in_experiment:
        text += " inExperiment"
    if reason.big_segments_status:
        text += f" bigSegmentsStatus={reason.big_segments_status}"
    return text


def _value_text(result: EvaluationResult) -> str:
    text = json.dumps(result.value, ensure_ascii=False)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"


def _detail(result: EvaluationResult) -> dict[str, Any]:
    out = result.detail()
    out["version"] = result.version
    if result.prerequisites:
        out["prerequisites"] = list(result.prerequisites)
    return out


def _render(env: CompiledEnvironment, results: dict[str, EvaluationResult], as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {k: _detail(r) for k, r in sorted(results.items())}, indent=2, ensure_ascii=False
        )
    rows = [("FLAG", "VALUE", "VARIATION", "REASON")]
    notes = []
    for key, result in sorted(results.items()):
        variation = "-" if result.variation is None else str(result.variation)
        rows.append((key, _value_text(result), variation, _reason_text(result)))
        flag = env.flags.get(key)
        if flag is not None and flag.error:
            notes.append(f"{key}: malformed: {flag.error}")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3]
        for row in rows
    ]
    if len(rows) == 1:
        lines.append("(no flags)")
    return "\n".join(line.rstrip() for line in [*lines, *notes])


def run(args: argparse.Namespace) -> str:
    context = _context(args.context)
    if args.relay is not None:
        sdk_key = args.sdk_key or os.environ.get("FLAGSTREAM_SDK_KEY")
        data = _fetch(args.relay, sdk_key, args.timeout)
    else:
        data = _data_file(args.data)
    env = CompiledEnvironment.from_items(data.get("flags") or {}, data.get("segments") or {})
    if args.flag is not None:
        if args.flag not in env.flags:
            known = ", ".join(sorted(env.flags)[:10]) or "none"
            raise CliError(
                f"no flag {args.flag!r} in this environment (flags: {known})", EXIT_REFUSED
            )
        if args.json:
            return json.dumps(
                _detail(env.evaluate(args.flag, context)), indent=2, ensure_ascii=False
            )
        return _render(env, {args.flag: env.evaluate(args.flag, context)}, False)
    return _render(env, env.evaluate_all(context, cast(SdkKind, args.sdk)), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(run(args))
    except CliError as exc:
        print(f"flagstream eval: {exc}", file=sys.stderr)
        return exc.code
    return EXIT_OK
