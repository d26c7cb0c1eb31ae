"""``flagstream relay``: parse flags over ``FLAGSTREAM_*`` variables, validate once, run.

Every ``RelaySettings`` field is a flag (``max_buffer_bytes`` -> ``--max-buffer-bytes``);
flags override the environment. A bad value prints one line per field with the fix and
exits with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from relay.config import RelaySettings

_ENV_NAMES = {
    "kafka_bootstrap": "FLAGSTREAM_KAFKA_BOOTSTRAP",
    "topic": "FLAGSTREAM_TOPIC",
}


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return _ENV_NAMES.get(field, f"FLAGSTREAM_RELAY_{field.upper()}")


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagstream relay",
        description=(
            "Run a relay: reads the flag state topic from Kafka and serves LaunchDarkly "
            "server-side SDKs (SSE /all, /flags, polling /sdk/latest-all)."
        ),
    )
    for name, info in RelaySettings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        parser.add_argument(
            flag_name(name),
            dest=name,
            default=None,
            metavar="VALUE",
            help=f"{info.description or name} (env {env_name(name)}; default {default})",
        )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    return parser


def load_settings(argv: Sequence[str]) -> tuple[RelaySettings, str]:
    """Parse ``argv`` over the environment; raises ValidationError or SystemExit."""
    args = build_parser().parse_args(list(argv))
    overrides: dict[str, Any] = {}
    for name in RelaySettings.model_fields:
        value = getattr(args, name)
        if value is None:
            continue
        if name == "max_connection_lifetime" and value.lower() in {"", "none", "off"}:
            overrides[name] = None
        else:
            overrides[name] = value
    return RelaySettings(**overrides), args.log_level


def format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "settings"
        where = (
            f"{flag_name(field)} / {env_name(field)}"
            if field in RelaySettings.model_fields
            else field
        )
        message = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"flagstream relay: invalid {where}: {message} (got {err.get('input')!r})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, log_level = load_settings(sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        for line in format_errors(exc):
            print(line, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=log_level,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    from relay.server import serve

    return serve(settings)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
