"""``flagstream dev``: the publisher and a relay in one process, on one port, no services.

No Kafka, no Redis: the publisher writes to an embedded store and log, the relay reads the
same log. By default they are the SQLite backends of ``flagstream.embedded`` in a data
directory (``./.flagstream``, ``--data-dir``), so a restart keeps environments, SDK keys,
flags, segments, audit, API tokens and stream positions (an SDK that reconnects with
``Last-Event-ID`` resumes without a ``put``), the admin token generated on the first start
(``admin-token`` in the data directory, mode 0600) and the demo SDK key; the demo data is
seeded only on the first start. ``--ephemeral`` uses ``MemoryStore`` and ``MemoryLog``
instead and keeps nothing. Everything above those interfaces — the publisher's API,
validation, versioning and outbox forwarder; the relay's follower, state, resumption and
fan-out, on the relay's lean (detached) stream path — is the production code.

One port serves both apps (default 127.0.0.1:8030):

- ``/api/...`` and ``/openapi.json`` go to the publisher app;
- everything else goes to the relay app (``/all``, ``/flags``, ``/sdk/latest-all``,
  ``/status``), so SDKs use the root URL exactly as they would a relay;
- ``/livez``, ``/readyz`` and ``/metrics`` exist in both apps and are answered here for the
  whole process: ``/readyz`` is 200 once the relay has read the log and the store answers
  (503 while draining at shutdown); ``/metrics`` is the relay's and the publisher's
  registries, one after the other (their names do not overlap:
  ``flagstream_relay_*``, ``flagstream_publisher_*``).

On its first start it seeds a demo environment with a few flags and a segment through the
publisher's own HTTP API (the same code path as any operator's write); every start prints the
admin token, the demo SDK key, a ``curl -N`` line that shows the live stream and the
``flagstream admin`` line that toggles a flag. Ctrl-C (or SIGTERM) closes the streams and
stops. A data directory that is in use by another process, damaged or not writable stops
the start with one line naming the fix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRuleMatching, MatchedSubAppResource
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from flagstream.embedded import DataDirError, Embedded, open_embedded
from flagstream.memlog import MemoryLog
from publisher.app import METRICS as PUBLISHER_METRICS
from publisher.app import PUBLISHER
from publisher.app import build_app as build_publisher_app
from publisher.config import PublisherSettings
from publisher.log import RecordLog
from publisher.memory_store import MemoryStore
from publisher.store import Store, StoreUnavailable
from relay.app import STATE_KEY
from relay.app import build_app as build_relay_app
from relay.config import RelaySettings
from relay.hub import Hub
from relay.metrics import RelayMetrics
from relay.server import observe_relay
from relay.source import RecordSource

__all__ = ["DEMO_ENV", "DevServer", "DevSettings", "build_dev_app", "main", "running", "seed"]

log = logging.getLogger("flagstream.dev")

DEMO_ENV = "demo"
TOGGLE_FLAG = "new-checkout"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8030
ADMIN_TOKEN_FILE = "admin-token"
DEMO_KEY_FILE = "demo-sdk-key"
_SEEDED = "demo_seeded"  # meta entry set once the demo data is complete


class DevSettings(BaseSettings):
    """Where ``flagstream dev`` keeps its data (its listen address is ``--host``/``--port``)."""

    model_config = SettingsConfigDict(env_prefix="FLAGSTREAM_DEV_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".flagstream"),
        description="directory of the embedded SQLite store and log, the generated admin "
        "token and the demo SDK key (created 0700; one process at a time)",
    )
    ephemeral: bool = Field(
        default=False,
        description="keep nothing: in-memory store and log, a new admin token and SDK key "
        "on every start",
    )


class EmbeddedLog(RecordLog, Protocol):
    """A publisher ``RecordLog`` that also hands out relay ``RecordSource`` readers."""

    def source(self) -> RecordSource: ...


_RELAY_APP = web.AppKey("dev_relay_app", web.Application)
_PUBLISHER_APP = web.AppKey("dev_publisher_app", web.Application)
_HUB = web.AppKey("dev_hub", Hub)
_RELAY_METRICS = web.AppKey("dev_relay_metrics", RelayMetrics)


# --- one port, two apps ------------------------------------------------------------------


class _PathRule(AbstractRuleMatching):
    """Routes a request to a sub-application by path prefix, keeping the path unchanged.

    ``add_subapp(prefix, app)`` would prepend the prefix to the sub-app's routes, but the
    publisher's routes already carry ``/api/v1``; this rule lets both apps keep their own
    absolute paths on one port.
    """

    def __init__(
        self,
        prefixes: tuple[str, ...],
        *,
        exact: tuple[str, ...] = (),
        exclude: tuple[str, ...] = (),
    ) -> None:
        self._prefixes = prefixes
        self._exact = frozenset(exact)
        self._exclude = frozenset(exclude)

    async def match(self, request: web.Request) -> bool:
        path = request.path
        if path in self._exclude:
            return False
        return path in self._exact or path.startswith(self._prefixes)

    def get_info(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            "prefixes": self._prefixes,
            "exact": sorted(self._exact),
            "exclude": sorted(self._exclude),
        }

    @property
    def canonical(self) -> str:
        return "|".join(self._prefixes) or "*"


def _mount(root: web.Application, subapp: web.Application, rule: AbstractRuleMatching) -> None:
    # The same registration ``Application.add_domain`` performs, with a path rule instead of
    # a Host rule: the sub-app's middlewares, signals (startup/cleanup) and app keys work as
    # for any sub-application.
    root._add_subapp(partial(MatchedSubAppResource, rule, subapp), subapp)


async def _livez(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    root = request.app
    relay_ready = root[_RELAY_APP][STATE_KEY].ready
    try:
        await root[_PUBLISHER_APP][PUBLISHER].store.ping()
        publisher_ready = True
    except StoreUnavailable:
        publisher_ready = False
    draining = root[_HUB].draining
    body = {
        "status": "ready" if relay_ready and publisher_ready and not draining else "not ready",
        "relay": "draining" if draining else ("ready" if relay_ready else "bootstrapping"),
        "publisher": "ready" if publisher_ready else "store unavailable",
    }
    if body["status"] == "ready":
        return web.json_response(body)
    return web.json_response(body, status=503, headers={"Retry-After": "1"})


async def _metrics(request: web.Request) -> web.Response:
    root = request.app
    publisher_registry = root[_PUBLISHER_APP][PUBLISHER_METRICS].registry
    body = root[_RELAY_METRICS].render() + generate_latest(publisher_registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _index(request: web.Request) -> web.Response:
    text = (
        "flagstream dev: publisher and relay in one process, in memory\n\n"
        "relay (SDKs):  GET /all  GET /flags  GET /sdk/latest-all  GET /status\n"
        "publisher:     /api/v1/environments/...  (see /openapi.json)\n"
        "process:       GET /livez  GET /readyz  GET /metrics\n"
    )
    return web.Response(text=text)


def build_dev_app(
    relay_settings: RelaySettings,
    publisher_settings: PublisherSettings,
    log: EmbeddedLog,
    store: Store,
) -> web.Application:
    """The relay and the publisher over ``log`` and ``store``, as one aiohttp application.

    Whoever serves it must ``drain()`` the hub before stopping the runner: streams are
    detached from aiohttp once set up (the relay's lean path, ``relay.stream``).
    """
    metrics = RelayMetrics()
    hub = Hub(relay_settings, metrics)
    hub.detach = True  # aiohttp frees its per-request objects: ~2 KB per idle stream, not ~12
    relay_app = build_relay_app(relay_settings, log.source(), metrics=metrics, hub=hub)
    observe_relay(relay_app[STATE_KEY], hub, metrics)
    publisher_app = build_publisher_app(publisher_settings, store, log)
    root = web.Application(
        handler_args={
            "max_line_size": relay_settings.max_request_line,
            "max_field_size": relay_settings.max_header_size,
        }
    )
    root[_RELAY_APP] = relay_app
    root[_PUBLISHER_APP] = publisher_app
    root[_HUB] = hub
    root[_RELAY_METRICS] = metrics
    # aiohttp tries rule-matched sub-apps (in registration order) before the root's own
    # routes, so the relay's catch-all rule leaves out the paths answered here.
    own = {"/": _index, "/livez": _livez, "/readyz": _readyz, "/metrics": _metrics}
    for path, handler in own.items():
        root.router.add_get(path, handler)
    _mount(root, publisher_app, _PathRule(("/api/",), exact=("/openapi.json",)))
    _mount(root, relay_app, _PathRule(("/",), exclude=tuple(own)))
    return root


# --- seed data ---------------------------------------------------------------------------


# The demo flags are visible to browser and mobile SDKs too (examples/client-side.html).
_EVERY_SDK = {"usingEnvironmentId": True, "usingMobileKey": True}


def _bool_flag(key: str, *, on: bool, **extra: Any) -> dict[str, Any]:
    flag: dict[str, Any] = {
        "key": key,
        "on": on,
        "variations": [True, False],
        "fallthrough": {"variation": 0},
        "offVariation": 1,
        "clientSideAvailability": _EVERY_SDK,
    }
    flag.update(extra)
    return flag


SEED_SEGMENTS: tuple[dict[str, Any], ...] = (
    {"key": "beta-users", "included": ["alice", "bob"], "excluded": [], "rules": []},
)

SEED_FLAGS: tuple[dict[str, Any], ...] = (
    _bool_flag(TOGGLE_FLAG, on=False),
    _bool_flag("dark-mode", on=True),
    _bool_flag(
        "search-v2",
        on=True,
        # Members of the beta-users segment get the new search; everyone else does not.
        fallthrough={"variation": 1},
        rules=[
            {
                "id": "beta",
                "variation": 0,
                "clauses": [
                    {
                        "contextKind": "user",
                        "attribute": "key",
                        "op": "segmentMatch",
                        "values": ["beta-users"],
                        "negate": False,
                    }
                ],
            }
        ],
    ),
    {
        "key": "banner-text",
        "on": True,
        "variations": ["Welcome to flagstream", "Spring sale: 20% off"],
        "fallthrough": {"variation": 0},
        "offVariation": 0,
        "clientSideAvailability": _EVERY_SDK,
    },
)


class SeedError(RuntimeError):
    """The publisher refused the seed data (a bug: the seed must always be valid)."""


async def seed(session: aiohttp.ClientSession, url: str, admin_token: str) -> str:
    """Create the demo environment, its segment and flags via the API; return its SDK key."""
    client = _SeedClient(session, url, admin_token)
    sdk_key = await client.create_environment()
    await client.put_missing_items()
    return sdk_key


class _SeedClient:
    """The publisher API calls of the seed (resumable: items are written only if missing)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, admin_token: str) -> None:
        self.session = session
        self.api = f"{url}/api/v1/environments"
        self.headers = {
            "Authorization": f"Bearer {admin_token}",
            "X-Change-Comment": "flagstream dev seed",
        }

    async def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...]) -> Any:
        async with self.session.request(
            method, self.api + path, json=body, headers=self.headers
        ) as resp:
            payload = await resp.json(content_type=None)
            if resp.status not in ok:
                raise SeedError(f"{method} {path or '/'}: {resp.status} {payload}")
            return payload if resp.status < 300 else None

    async def environment_exists(self) -> bool:
        return await self.call("GET", f"/{DEMO_ENV}", ok=(200, 404)) is not None

    async def create_environment(self) -> str:
        created = await self.call(
            "POST", "", {"key": DEMO_ENV, "name": "Demo environment"}, ok=(200, 201)
        )
        return str(created["sdkKey"])

    async def put_missing_items(self) -> None:
        for kind, items in (("segments", SEED_SEGMENTS), ("flags", SEED_FLAGS)):
            for item in items:
                path = f"/{DEMO_ENV}/{kind}/{item['key']}"
                if await self.call("GET", path, ok=(200, 404)) is None:
                    await self.call("PUT", path, item, ok=(200, 201))


# --- running -----------------------------------------------------------------------------


@dataclass
class DevServer:
    """A running ``flagstream dev``: where it listens and the credentials it created."""

    url: str
    host: str
    port: int
    admin_token: str
    sdk_key: str | None  # None when started with seed_demo=False (or its key file was lost)
    log: EmbeddedLog
    store: Store
    app: web.Application
    hub: Hub
    data_dir: Path | None = None  # None: ephemeral (in memory)
    token_saved: bool = False  # the admin token was generated and kept in data_dir
    client_side_id: str | None = None  # of the demo environment (browser SDKs)

    @property
    def relay_app(self) -> web.Application:
        return self.app[_RELAY_APP]

    @property
    def publisher_app(self) -> web.Application:
        return self.app[_PUBLISHER_APP]


def _listen_hint(exc: OSError, host: str) -> str:
    """What to do about a failed bind: only a port in use suggests another instance."""
    if exc.errno == errno.EADDRINUSE:
        return "(is another flagstream dev running? choose another --port)"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"(--host {host!r} is not an address of this machine; use e.g. 127.0.0.1)"
    if exc.errno == errno.EACCES:
        return "(this port needs privileges; choose a --port above 1023)"
    return "(check --host and --port)"


class DevStartError(Exception):
    """A start-up failure with a one-line message for the user (e.g. port in use)."""


@dataclass
class _Backends:
    """The store and log ``running`` serves, and what it needs to close them."""

    store: Store
    log: EmbeddedLog
    embedded: Embedded | None = None

    async def close(self) -> None:
        await self.store.close()
        if self.embedded is not None:
            await self.embedded.close()


async def _open_backends(
    data_dir: Path | None, partitions: int, publisher_settings: PublisherSettings
) -> _Backends:
    audit_max = publisher_settings.audit_max_entries
    if data_dir is None:
        return _Backends(MemoryStore(audit_max_entries=audit_max), MemoryLog(partitions=partitions))
    embedded = await open_embedded(data_dir, partitions=partitions, audit_max_entries=audit_max)
    return _Backends(embedded.store, embedded.log, embedded)


def _admin_token(given: str | None, embedded: Embedded | None) -> tuple[str, bool]:
    """The admin token to use and whether it is the one kept in the data directory."""
    if given:
        return given, False
    if embedded is None:
        return secrets.token_urlsafe(24), False
    kept = embedded.datadir.read_secret(ADMIN_TOKEN_FILE)
    if kept is None:
        kept = secrets.token_urlsafe(24)
        embedded.datadir.write_secret(ADMIN_TOKEN_FILE, kept)
    return kept, True


async def _seed_once(url: str, token: str, embedded: Embedded | None) -> str | None:
    """Seed the demo data unless this data directory already has it; the demo SDK key."""
    async with aiohttp.ClientSession() as session:
        if embedded is None:
            return await seed(session, url, token)
        datadir = embedded.datadir
        if await embedded.get_meta(_SEEDED) == "1":
            return datadir.read_secret(DEMO_KEY_FILE)
        # Resumable: a first start that stopped half-way through the seed goes on from there.
        client = _SeedClient(session, url, token)
        if await client.environment_exists():
            sdk_key = datadir.read_secret(DEMO_KEY_FILE)
        else:
            sdk_key = await client.create_environment()
            datadir.write_secret(DEMO_KEY_FILE, sdk_key)
        await client.put_missing_items()
        await embedded.set_meta(_SEEDED, "1")
        return sdk_key


@contextlib.asynccontextmanager
async def running(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    admin_token: str | None = None,
    seed_demo: bool = True,
    relay_overrides: dict[str, Any] | None = None,
    publisher_overrides: dict[str, Any] | None = None,
    partitions: int = 6,
    data_dir: Path | None = None,
) -> AsyncIterator[DevServer]:
    """Serve the embedded mode until the block exits; ``port=0`` picks a free port.

    ``data_dir=None`` keeps everything in memory (``--ephemeral``); a directory keeps the
    data there (``DataDirError`` if it cannot be used). Settings come from the
    ``FLAGSTREAM_*`` environment like the real services', with ``host``/``port`` and the
    overrides on top (tests use them for short timeouts).
    """
    relay_settings = RelaySettings(
        **{"host": host, "port": port, "workers": 1, **(relay_overrides or {})}
    )
    # Validated with a placeholder first: the token may come from the data directory.
    probe = PublisherSettings(
        **{"admin_token": admin_token or "x" * 32, **(publisher_overrides or {})}
    )
    backends = await _open_backends(data_dir, partitions, probe)
    try:
        token, token_saved = _admin_token(admin_token, backends.embedded)
        publisher_settings = PublisherSettings(
            **{"admin_token": token, **(publisher_overrides or {})}
        )
        app = build_dev_app(relay_settings, publisher_settings, backends.log, backends.store)
        hub = app[_HUB]
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = _guarded_site(runner, host, port, hub)
            try:
                await site.start()
            except OSError as exc:
                raise DevStartError(
                    f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                    f"{_listen_hint(exc, host)}"
                ) from None
            bound_host, bound_port = runner.addresses[0][:2]
            url = f"http://{_url_host(bound_host)}:{bound_port}"
            sdk_key = await _seed_once(url, token, backends.embedded) if seed_demo else None
            # The relay reads the seed from the log within milliseconds; wait so the printed
            # curl line gets the flags, not a 503.
            state = app[_RELAY_APP][STATE_KEY]
            await asyncio.wait_for(state.ready_event.wait(), 30)
            demo = await backends.store.get_environment(DEMO_ENV) if seed_demo else None
            yield DevServer(
                client_side_id=demo.client_side_id if demo is not None else None,
                url=url,
                host=str(bound_host),
                port=int(bound_port),
                admin_token=token,
                sdk_key=sdk_key,
                log=backends.log,
                store=backends.store,
                app=app,
                hub=hub,
                data_dir=data_dir,
                token_saved=token_saved,
            )
        finally:
            # Close the SSE streams first (detached: the hub owns them; their clients
            # reconnect), then stop the apps (forwarder, follower), then the backends.
            with contextlib.suppress(Exception):
                await hub.drain(0.0)
            await runner.cleanup()
    finally:
        await backends.close()


def _guarded_site(runner: web.AppRunner, host: str, port: int, hub: Hub) -> web.BaseSite:
    """Accepts with back-off on EMFILE and a connection cap derived from the open-files
    limit, raised to its hard maximum first (``flagstream.fdlimit``). Streams are detached
    from aiohttp (the hub owns them, as in a relay worker), so the cap counts both."""
    from flagstream.fdlimit import GuardedSite, aiohttp_connections, raise_nofile_limit

    raise_nofile_limit()
    server = runner.server
    assert server is not None
    return GuardedSite(
        runner,
        host=host,
        port=port,
        open_connections=lambda: aiohttp_connections(server) + hub.connection_count(),
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def banner(server: DevServer, *, token_from_env: bool) -> str:
    """What ``flagstream dev`` prints at start: where things are and what to type next."""
    url = server.url
    key = server.sdk_key or "sdk-..."
    if token_from_env:
        token_note = "from FLAGSTREAM_ADMIN_TOKEN"
    elif server.token_saved and server.data_dir is not None:
        token_note = f"kept in {server.data_dir / ADMIN_TOKEN_FILE}"
    else:
        token_note = "generated; set FLAGSTREAM_ADMIN_TOKEN to choose one"
    if server.data_dir is None:
        first = "flagstream dev: publisher + relay in one process, in memory (nothing is saved)"
    else:
        first = (
            f"flagstream dev: publisher + relay in one process, data in {server.data_dir} "
            "(kept across restarts; --ephemeral keeps nothing)"
        )
    admin = admin_command(server, TOGGLE_FLAG)
    return "\n".join(
        [
            first,
            "",
            f"  relay for SDKs   {url}   (/all, /flags, /sdk/latest-all, /status)",
            f"  publisher API    {url}/api/v1   (OpenAPI: {url}/openapi.json)",
            f"  admin token      {server.admin_token}   ({token_note})",
            f'  SDK key          {key}   (environment "{DEMO_ENV}")',
            f"  client-side id   {server.client_side_id or '-'}   (browser SDKs: "
            "examples/client-side.html)",
            "  demo flags       " + ", ".join(f["key"] for f in SEED_FLAGS),
            "",
            "Watch the live stream (in another terminal):",
            f"  curl -N -H 'Authorization: {key}' {url}/all",
            "",
            f"Toggle {TOGGLE_FLAG} and see the patch arrive on the stream:",
            f"  {admin}",
            "",
            "Ctrl-C stops.",
        ]
    )


def admin_command(server: DevServer, flag: str) -> str:
    """The ``flagstream admin`` command line that toggles ``flag`` on this server."""
    # ``--token=VALUE``: a generated token starts with "-" one time in 64, and argparse takes
    # ``--token -abc`` for a missing value followed by an unknown option.
    return shlex.join(
        [
            flagstream_command(),
            "admin",
            f"--url={server.url}",
            f"--token={server.admin_token}",
            "flag",
            "toggle",
            DEMO_ENV,
            flag,
        ]
    )


def flagstream_command() -> str:
    """How the user can type ``flagstream``: the bare name if it is on PATH, else the path of
    the script next to this interpreter (a virtual environment that is not activated)."""
    beside = Path(sys.executable).with_name("flagstream")
    on_path = shutil.which("flagstream")
    if on_path is not None and (not beside.exists() or Path(on_path).resolve() == beside.resolve()):
        return "flagstream"
    if beside.exists():
        relative = os.path.relpath(beside)
        return relative if not relative.startswith("..") else str(beside)
    return "flagstream"


# --- command line ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagstream dev",
        description="Publisher and relay in one process over an embedded store and log, "
        "seeded with a demo environment on the first start. No Kafka or Redis needed; the "
        "data is kept in a directory (--data-dir) unless --ephemeral.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port for both APIs (%(default)s)"
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the components (%(default)s)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir",
        dest="data_dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the data in DIR (env FLAGSTREAM_DEV_DATA_DIR; default ./.flagstream)",
    )
    where.add_argument(
        "--ephemeral",
        dest="ephemeral",
        action="store_true",
        default=None,
        help="keep nothing: in-memory store and log (env FLAGSTREAM_DEV_EPHEMERAL)",
    )
    return parser


def _format_validation(exc: ValidationError) -> list[str]:
    """One line per bad field, named by the environment variable that set it."""
    from flagstream.configdoc import env_names

    classes: dict[str, type[Any]] = {
        "RelaySettings": RelaySettings,
        "PublisherSettings": PublisherSettings,
        "DevSettings": DevSettings,
    }
    cls = classes.get(exc.title)
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        if cls is not None and where in cls.model_fields:
            where = " / ".join(env_names(cls, where))
        message = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"flagstream dev: invalid {where}: {message}")
    return lines


def dev_settings(args: argparse.Namespace) -> DevSettings:
    """``FLAGSTREAM_DEV_*`` with the command line on top."""
    flags = {name: getattr(args, name) for name in DevSettings.model_fields}
    return DevSettings(**{name: value for name, value in flags.items() if value is not None})


async def _serve(args: argparse.Namespace, stop: Callable[[], Awaitable[object]]) -> int:
    env_token = os.environ.get("FLAGSTREAM_ADMIN_TOKEN") or None
    settings = dev_settings(args)
    async with running(
        host=args.host,
        port=args.port,
        admin_token=env_token,
        data_dir=None if settings.ephemeral else settings.data_dir,
    ) as server:
        print(banner(server, token_from_env=env_token is not None), flush=True)
        await stop()
        print("\nflagstream dev: stopping", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not 0 <= args.port <= 65535:
        print("flagstream dev: --port must be between 0 and 65535", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )

    async def run() -> int:
        loop = asyncio.get_running_loop()
        stop_event = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_event.set)
        try:
            return await _serve(args, stop_event.wait)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(run())
    except ValidationError as exc:
        for line in _format_validation(exc):
            print(line, file=sys.stderr)
        return 2
    except (DevStartError, DataDirError) as exc:
        print(f"flagstream dev: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
