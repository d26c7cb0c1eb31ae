"""The ``flagstream`` command: a thin dispatcher to each component's own ``main(argv)``.

Subcommands are imported lazily so that ``flagstream stack`` works before the heavy
runtime dependencies are imported, and so that each component owns its own argument parsing.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# name -> (module, function, one-line help). Each function takes argv (without the
# subcommand) and returns the process exit code.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "stack": ("flagstream.stack.cli", "main", "run the local Kafka + Redis stack (up|down|status)"),
    "publisher": ("publisher.cli", "main", "run the publisher (admin API, outbox forwarder)"),
    "relay": ("relay.cli", "main", "run a relay (SSE and polling endpoints for SDKs)"),
    "admin": ("publisher.admin_cli", "main", "command-line client for the publisher API"),
    "dev": ("flagstream.dev", "main", "embedded publisher + relay in one process, no services"),
    "demo": ("flagstream.demo", "main", "the whole pipeline on the local stack, live"),
    "loadtest": ("loadtest.cli", "main", "load generator and benchmark scenarios"),
    "eval": ("flagstream.eval_cli", "main", "evaluate flags for a context (relay or data file)"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: flagstream COMMAND [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run 'flagstream COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:  # a usage error, like any command's missing argument
        print(_usage(), file=sys.stderr)
        return 2
    if args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"flagstream: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    entry: Callable[[list[str]], int] = getattr(module, function_name)
    try:
        return entry(rest)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
