"""What client-side and mobile SDKs see of an environment: evaluated flags with versions.

Rules (``protocol.clientside`` defines the formats and the version rules):

1. One ``EnvView`` per environment and position, built on first use after a change and
   dropped at the next one: it holds each flag's version (dependency offset + 1), and per
   audience (``client`` = JS, ``mobile``, ``server`` = SDK-key evalx) the flags that audience
   may see, split into constants (their evaluated JSON joined once per view and reasons
   setting) and flags to evaluate per context. Building it is O(flags); requests only read.
2. Per request, only the flags that can depend on the context are evaluated, each through
   the compiled environment's runner (its reusable evaluation scope: nothing is allocated
   per flag); each result's JSON, restamped with its version, is built once per result
   object and view (results are pre-built objects of the compiled flag) and reused by every
   later request.
3. Full payloads are cached per view by (context fingerprint, audience, reasons), at most
   4 MiB of them, so a reconnect herd of one context costs one evaluation.
4. Catch-up after ``Last-Event-ID`` X (same epoch): a ``patch`` for every visible flag whose
   dependency offset is > X (something it reads changed since X: its result may have), a
   ``delete`` for every flag deleted, or no longer visible, since X; never a ``put``.
"""

from __future__ import annotations

from typing import Final

from protocol import clientside
from protocol.evaluation import CompiledEnvironment, CompiledFlag, Context, EvaluationResult
from protocol.evaluation.compiler import Runner
from protocol.evaluation.environment import SdkKind
from protocol.position import Position
from relay.state import Environment, State

__all__ = ["ClientViews", "EnvView"]

# Full payloads kept per view (rule 3), by total size: distinct contexts must not pile up.
_PAYLOAD_CACHE_BYTES: Final = 4 * 1024 * 1024
_RESULT_CACHE_MAX: Final = 65_536


def visible(flag: CompiledFlag, sdk: SdkKind) -> bool:
    """``clientSideAvailability``: JS sees ``usingEnvironmentId``, mobile ``usingMobileKey``."""
    if sdk == "client":
        return flag.client_side
    if sdk == "mobile":
        return flag.mobile
    return True


class _Audience:
    """The flags one audience sees in one view (rule 1)."""

    __slots__ = ("blobs", "dynamic")

    def __init__(self, env: CompiledEnvironment, versions: dict[str, int], sdk: SdkKind) -> None:
        constants: list[tuple[EvaluationResult, int, int | None]] = []
        self.dynamic: list[tuple[Runner, int]] = []
        for key, flag in env.flags.items():
            if not visible(flag, sdk):
                continue
            if flag.constant is not None:
                constants.append((flag.constant, versions[key], flag.version))
            else:
                run = env.runner(key)
                assert run is not None  # every flag of the environment has one
                self.dynamic.append((run, versions[key]))
        self.blobs = tuple(
            b",".join(clientside.restamp(r.fragment(wr), fv, v) for r, v, fv in constants)
            for wr in (False, True)
        )


class EnvView:
    """One environment at one position, as client SDKs see it (see the module rules)."""

    __slots__ = (
        "_audiences",
        "_payload_bytes",
        "_payloads",
        "_results",
        "env",
        "offset",
        "versions",
    )

    def __init__(self, env: CompiledEnvironment, environment: Environment) -> None:
        self.env = env
        self.offset = environment.offset
        items = environment.items

        def offset_of(kind: str, key: str) -> int:
            item = items.get((kind, key))
            return -1 if item is None else item.offset

        deps = clientside.dependency_offsets(env.flags, env.segments, offset_of)
        self.versions = {key: offset + 1 for key, offset in deps.items()}
        self._audiences: dict[SdkKind, _Audience] = {}
        self._results: dict[int, tuple[EvaluationResult, bytes, bytes]] = {}
        self._payloads: dict[tuple[str, SdkKind, bool], bytes] = {}
        self._payload_bytes = 0

    def audience(self, sdk: SdkKind) -> _Audience:
        found = self._audiences.get(sdk)
        if found is None:
            found = self._audiences[sdk] = _Audience(self.env, self.versions, sdk)
        return found

    def fragment(self, result: EvaluationResult, version: int, with_reasons: bool) -> bytes:
        """``"key":{...}`` of ``result`` with ``version`` (rule 2: built once per result)."""
        cached = self._results.get(id(result))
        if cached is None or cached[0] is not result:
            if len(self._results) >= _RESULT_CACHE_MAX:
                self._results.clear()  # results made per call (big segments) must not pile up
            fv = result.version
            cached = (
                result,
                clientside.restamp(result.fragment(False), fv, version),
                clientside.restamp(result.fragment(True), fv, version),
            )
            self._results[id(result)] = cached
        return cached[2] if with_reasons else cached[1]

    def all_flags(self, context: Context, sdk: SdkKind, with_reasons: bool) -> bytes:
        """The evalx JSON object of every flag ``sdk`` may see, for ``context``."""
        cache_key = (context.fingerprint, sdk, with_reasons)
        body = self._payloads.get(cache_key)
        if body is not None:
            return body
        audience = self.audience(sdk)
        cache = self._results
        parts: list[bytes] = []
        append = parts.append
        # Rule 2, inlined (this loop is the per-request cost): the cached, restamped JSON of
        # each result object, built on the first request that got that result.
        for run, version in audience.dynamic:
            result = run(context)
            cached = cache.get(id(result))
            if cached is None or cached[0] is not result:
                append(self.fragment(result, version, with_reasons))
            else:
                append(cached[2] if with_reasons else cached[1])
        blob = audience.blobs[with_reasons]
        if blob:
            parts.append(blob)
        body = b"{" + b",".join(parts) + b"}"
        if self._payload_bytes + len(body) > _PAYLOAD_CACHE_BYTES:
            self._payloads.clear()
            self._payload_bytes = 0
        self._payloads[cache_key] = body
        self._payload_bytes += len(body)
        return body

    def catchup(
        self,
        context: Context,
        sdk: SdkKind,
        with_reasons: bool,
        environment: Environment,
        after: int,
        epoch: str,
    ) -> bytes:
        """Rule 4: the events a stream resuming from offset ``after`` needs, in offset order."""
        events: list[tuple[int, bytes]] = []
        env = self.env
        flags = env.flags
        for key, version in self.versions.items():
            if version - 1 <= after:
                continue
            flag = flags[key]
            pos = str(Position(epoch, version - 1))
            if visible(flag, sdk):
                result = env.evaluate(key, context)
                data = clientside.restamp(result.patch(with_reasons), result.version, version)
                events.append((version, clientside.patch_event(data, pos)))
            else:
                events.append((version, clientside.delete_event(key, version, pos)))
        for item in environment.changes_after(after):
            if item.kind == "flag" and item.deleted:
                pos = str(Position(epoch, item.offset))
                version = item.offset + 1
                events.append((version, clientside.delete_event(item.key, version, pos)))
        events.sort(key=_first)
        return b"".join(event for _, event in events)


def _first(pair: tuple[int, bytes]) -> int:
    return pair[0]


class ClientViews:
    """The current ``EnvView`` of every environment of one relay's state (rule 1)."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._views: dict[str, EnvView] = {}

    def view(self, env_key: str) -> EnvView | None:
        """The view of ``env_key`` at its current position (None: no flag or segment yet)."""
        state = self._state
        compiled = state.evaluation.environment(env_key)
        environment = state.environments.get(env_key)
        if compiled is None or environment is None:
            return None
        view = self._views.get(env_key)
        if view is None or view.offset != environment.offset or view.env is not compiled:
            view = self._views[env_key] = EnvView(compiled, environment)
        return view

    def clear(self) -> None:
        self._views.clear()
