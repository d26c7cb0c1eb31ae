"""Evaluate flags with the official LaunchDarkly Python server SDK, served by a flagstream relay.

Nothing here is flagstream-specific: the stock SDK (``pip install launchdarkly-server-sdk``)
is pointed at a relay instead of LaunchDarkly's own service, and it streams ``/all`` exactly
as it would from LaunchDarkly. Run ``flagstream dev`` first; it prints the SDK key::

    python examples/sdk_client.py --sdk-key sdk-... --flag new-checkout

The program prints the flag's value, then every change the relay pushes, until Ctrl-C.
Toggle the flag with the ``flagstream admin`` line that ``flagstream dev`` printed and watch
the new value arrive within milliseconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

import ldclient
from ldclient import Context
from ldclient.config import Config
from ldclient.interfaces import FlagValueChange


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--relay",
        default=os.environ.get("FLAGSTREAM_RELAY_URL", "http://127.0.0.1:8030"),
        help="base URL of a flagstream relay (default: %(default)s)",
    )
    parser.add_argument(
        "--sdk-key",
        default=os.environ.get("FLAGSTREAM_SDK_KEY"),
        help="server-side SDK key of the environment (or FLAGSTREAM_SDK_KEY)",
    )
    parser.add_argument("--flag", default="new-checkout", help="flag key to watch")
    parser.add_argument("--user", default="example-user", help="context key to evaluate for")
    parser.add_argument(
        "--once", action="store_true", help="print the current value and exit (no watching)"
    )
    args = parser.parse_args(argv)
    if not args.sdk_key:
        parser.error("an SDK key is needed: --sdk-key sdk-... (flagstream dev prints one)")

    relay = args.relay.rstrip("/")
    config = Config(
        args.sdk_key,
        # The relay serves both the streaming (/all) and the polling (/sdk/latest-all) API.
        stream_uri=relay,
        base_uri=relay,
        # flagstream does not collect analytics events; never send them to LaunchDarkly.
        events_uri=relay,
        send_events=False,
        diagnostic_opt_out=True,
    )
    ldclient.set_config(config)
    client = ldclient.get()
    try:
        if not client.is_initialized():
            print(f"could not initialize from {relay}: is the relay running, is the SDK key right?")
            return 1
        context = Context.builder(args.user).kind("user").build()
        value = client.variation(args.flag, context, None)
        print(f"{args.flag} = {value!r}", flush=True)
        if args.once:
            return 0

        def on_change(change: FlagValueChange) -> None:
            print(f"{change.key}: {change.old_value!r} -> {change.new_value!r}", flush=True)

        client.flag_tracker.add_flag_value_change_listener(args.flag, context, on_change)
        print("watching for changes (Ctrl-C to stop)", flush=True)
        threading.Event().wait()  # listeners run on the SDK's own thread
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
