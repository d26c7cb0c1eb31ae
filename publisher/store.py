"""The publisher's system of record: the ``Store`` protocol and the records it holds.

Rules every implementation (Redis: ``redis_store``, in-memory: ``memory_store``) keeps:

- **Atomic writes.** ``write_item`` and ``write_environment`` are compare-and-set steps: they
  succeed only if the stored version still equals ``expected_version`` (0 = absent), and then
  store the new state, append ONE outbox entry and ONE audit entry, all or nothing. A failed
  precondition changes nothing. This is how ``If-Match`` and version bumps are enforced: the
  caller reads version *v*, builds the item with version *v+1* and asks the store to commit it
  only if the version is still *v*.
- **Many writes in one step.** ``write_items`` applies a sequence of such item writes in one
  atomic step of the store, in order, each checked against the state the writes before it
  left. ``atomic=False`` (group commit): each write succeeds or fails on its own, exactly as
  if ``write_item`` had been called for each in that order with nothing in between.
  ``atomic=True`` (bulk): every precondition is checked first, and either all writes are
  applied or none.
- **Policy revision.** An ``ItemWrite`` may carry ``policy_revision``: the revision of its
  environment's governance policy (``publisher.governance.policy``) that allowed it (0 = no
  policy was ever stored). ``write_items`` then applies it only if that is still the stored
  revision, checked in the same atomic step as its version (else ``PolicyChanged``, nothing
  written): a direct write can never commit under a policy that has changed since its guard
  looked. ``None`` = not checked (writes made by governance itself, tests).
- **One format per record.** The outbox record of a write is built by ``outbox_record`` and
  its audit entry by ``audit_entry``, both here; no other code shapes either.
- **Versions never go back.** A delete stores a tombstone (``deleted: true``) with a new
  version, so a later PUT continues the sequence.
- **Outbox order.** Entries are appended in commit order and read back oldest first; their
  ids are strings that compare in that order within one store (a later append never gets a
  smaller id, even after removals). An entry is removed only by ``outbox_remove`` and only by
  the holder of the current forwarder lease (fencing token).
- **Lease.** ``acquire_lease`` gives at most one owner at a time; a new term (a different
  owner, or the same owner after expiry) gets a strictly larger fencing token.
- **Secrets.** Only hashes of tokens and SDK credentials are ever stored.
- **Availability.** Every method raises ``StoreUnavailable`` (and nothing else unexpected)
  when the backing service cannot be reached; the caller answers 503 and retries later.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from protocol import jsoncodec
from protocol.envelope import Envelope, encode_envelope
from protocol.environment import EnvironmentRecord
from protocol.keys import ItemKind, Kind, record_key

__all__ = [
    "EnvironmentExists",
    "ItemKind",
    "ItemWrite",
    "KafkaRecord",
    "OutboxEntry",
    "PolicyChanged",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TokenRecord",
    "UnknownEnvironment",
    "VersionConflict",
    "WriteOutcome",
    "audit_entry",
    "check_writes",
    "outbox_record",
]


class StoreError(Exception):
    """Base class of the store's expected failures."""


class StoreUnavailable(StoreError):
    """The backing service cannot be reached; nothing was (knowingly) changed."""


class UnknownEnvironment(StoreError):
    """The environment of an item write does not exist."""


class EnvironmentExists(StoreError):
    """``write_environment`` with ``expected_version=0`` for an existing environment."""


class VersionConflict(StoreError):
    """The stored version is not ``expected_version``; ``current`` is what is stored (0=absent)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current version is {current}")
        self.current = current


class PolicyChanged(StoreError):
    """The environment's policy revision is not the one the write carried; ``current`` is."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current policy revision is {current}")
        self.current = current


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A record to write to the topic: its environment chooses the partition."""

    env: str
    key: bytes  # protocol.keys.record_key
    value: bytes  # protocol.envelope.encode_envelope


def outbox_record(
    kind: Kind,
    env: str,
    key: str,
    version: int,
    actor: str,
    item: bytes,
    *,
    deleted: bool,
    now_ms: int,
) -> KafkaRecord:
    """The record of one committed state: ``item`` (JSON, already encoded) in its envelope."""
    value = encode_envelope(
        Envelope(
            kind=kind,
            env=env,
            key=key,
            version=version,
            published_ms=now_ms,
            actor=actor,
            item=item,
            deleted=deleted,
        )
    )
    return KafkaRecord(env=env, key=record_key(env, kind, key), value=value)


# Audit entry ids: 128 random bits like a uuid4, from a generator seeded by the OS once, not a
# system call per write (ids need to be unique, not secret).
_ids = random.Random(os.urandom(32))


def audit_entry(
    *,
    actor: str,
    action: str,
    kind: str,
    key: str,
    version: int,
    before: bytes | None,
    after: bytes | None,
    comment: str | None,
    now_ms: int,
    request_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """One audit line: who, when, what; ``before``/``after`` are the items' JSON, pre-encoded.

    The item JSON is spliced in as it is (it was encoded once, for the store and the Kafka
    record), not parsed and encoded again. ``request_id`` ties the entries of one bulk request
    (or one change request, trigger, rollout plan) together (absent for single writes).
    ``extra`` adds fields after ``comment`` (governance: a bypass of required approvals, a
    critical environment, who approved an applied change request, ...); it cannot replace
    the fields above.
    """
    head: dict[str, Any] = {
        "id": f"{_ids.getrandbits(128):032x}",
        "timeMs": now_ms,
        "actor": actor,
        "action": action,
        "kind": kind,
        "key": key,
        "version": version,
        "comment": comment,
    }
    if request_id is not None:
        head["requestId"] = request_id
    if extra:
        head.update({k: v for k, v in extra.items() if k not in head})
    text = jsoncodec.dumps(head)
    return b"".join(
        (
            text[:-1],
            b',"before":',
            b"null" if before is None else before,
            b',"after":',
            b"null" if after is None else after,
            b"}",
        )
    )


@dataclass(frozen=True, slots=True)
class ItemWrite:
    """One compare-and-set write of an item, with its outbox record and audit entry (see
    ``Store.write_item`` for the meaning of each field, and the module docstring for
    ``policy_revision``)."""

    env: str
    kind: ItemKind
    key: str
    item: bytes
    version: int
    expected_version: int
    outbox: KafkaRecord
    audit: bytes
    policy_revision: int | None = None


# What ``Store.write_items`` reports for each write: its outbox entry id, or why it failed.
WriteOutcome = str | VersionConflict | UnknownEnvironment | PolicyChanged


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One record waiting in the outbox to be written to Kafka."""

    id: str
    record: KafkaRecord
    enqueued_ms: int  # when the write committed (for the forward latency metric)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token as stored: its secret only as a SHA-256 hex digest."""

    id: str
    name: str
    secret_sha256: str
    scopes: tuple[str, ...]  # subset of publisher.auth.SCOPES
    environments: tuple[str, ...] | None  # None = every environment
    created_ms: int
    created_by: str

    def to_json(self) -> bytes:
        """The stored JSON (the Redis store's field names: ``sha256`` for the digest)."""
        return json.dumps(
            {
                "id": self.id,
                "name": self.name,
                "sha256": self.secret_sha256,
                "scopes": list(self.scopes),
                "environments": None if self.environments is None else list(self.environments),
                "created_ms": self.created_ms,
                "created_by": self.created_by,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TokenRecord:
        """Decode ``to_json``'s output; also reads ``secret_sha256``, the digest's name in
        rows the embedded SQLite store wrote before it used ``to_json``."""
        d = json.loads(raw)
        envs = d["environments"]
        return cls(
            id=d["id"],
            name=d["name"],
            secret_sha256=d["sha256"] if "sha256" in d else d["secret_sha256"],
            scopes=tuple(d["scopes"]),
            environments=None if envs is None else tuple(envs),
            created_ms=int(d["created_ms"]),
            created_by=d["created_by"],
        )


class Store(Protocol):
    """Durable state of the publisher: environments, items, audit log, outbox, tokens, lease.

    See the module docstring for the atomicity, ordering and fencing guarantees.
    """

    async def ping(self) -> None:
        """Return if the store is reachable, else raise StoreUnavailable."""

    async def close(self) -> None:
        """Release connections."""

    # -- environments ------------------------------------------------------------------
    async def get_environment(self, env: str) -> EnvironmentRecord | None: ...

    async def list_environments(self) -> list[EnvironmentRecord]:
        """All environments, ordered by key."""

    async def write_environment(
        self,
        record: EnvironmentRecord,
        *,
        expected_version: int,
        outbox: KafkaRecord,
        audit: bytes,
        now_ms: int,
    ) -> str:
        """Store ``record`` if the stored version is ``expected_version`` (0 = create).

        Appends ``outbox`` and ``audit`` in the same atomic step.
        Returns the outbox entry id. Raises EnvironmentExists / VersionConflict.
        """

    # -- items -------------------------------------------------------------------------
    async def get_item(self, env: str, kind: ItemKind, key: str) -> bytes | None:
        """The item's stored JSON (tombstones included), or None if it never existed."""

    async def get_items(self, env: str, kind: ItemKind, keys: Sequence[str]) -> list[bytes | None]:
        """``get_item`` of every key, in the order of ``keys``, read at one point in time
        (Redis: one HMGET): what a bulk write reads, whatever the environment's size."""

    async def list_items(self, env: str, kind: ItemKind) -> dict[str, bytes]:
        """Every item of a kind in an environment (tombstones included), JSON by key."""

    async def write_item(
        self,
        env: str,
        kind: ItemKind,
        key: str,
        item: bytes,
        *,
        version: int,
        expected_version: int,
        outbox: KafkaRecord,
        audit: bytes,
        now_ms: int,
    ) -> str:
        """Store ``item`` (JSON carrying ``version``) if the stored version is ``expected_version``.

        ``version`` must be ``expected_version + 1``. Appends ``outbox`` and ``audit`` in the
        same atomic step and returns the outbox entry id. Raises UnknownEnvironment or
        VersionConflict, in which case nothing changed.
        """

    async def write_items(
        self, writes: Sequence[ItemWrite], *, atomic: bool, now_ms: int
    ) -> list[WriteOutcome]:
        """Apply ``writes`` in order in ONE atomic step; one outcome per write, in order.

        Each write is checked like ``write_item`` (environment exists, its ``policy_revision``
        if it has one is the environment's, stored version equals ``expected_version``,
        ``version == expected_version + 1``) against the state left by
        the writes before it in the sequence, so two writes of one key in one call behave as
        two calls in a row. A successful write stores its item and appends its outbox entry
        and audit entry, in sequence order (outbox ids increase along the sequence).

        - ``atomic=False`` (group commit): a failed write changes nothing and does not affect
          the others; its outcome is the ``UnknownEnvironment``, ``PolicyChanged`` or
          ``VersionConflict``.
        - ``atomic=True`` (bulk): if any write fails, NOTHING is applied, and the outcomes name
          every failure (writes that would have succeeded get an empty string id).

        Idempotent like ``write_item``: a retried call whose first attempt landed returns
        that attempt's outcomes. Raises only ``StoreUnavailable``.
        """

    # -- audit -------------------------------------------------------------------------
    async def read_audit(self, env: str, limit: int) -> list[bytes]:
        """The newest ``limit`` audit entries of an environment, newest first."""

    # -- outbox ------------------------------------------------------------------------
    async def outbox_read(self, count: int, *, after: str | None = None) -> list[OutboxEntry]:
        """The oldest ``count`` entries, oldest first (not removed); with ``after``, the oldest
        whose id is greater than ``after`` (an entry id this store gave, removed or not)."""

    async def outbox_remove(self, ids: list[str], *, owner: str, fence: int) -> int:
        """Remove entries if ``owner`` still holds the lease with ``fence``; return how many."""

    async def outbox_depth(self) -> int: ...

    async def outbox_append(self, records: Sequence[KafkaRecord], *, now_ms: int) -> list[str]:
        """Append ``records`` to the outbox in order, atomically, changing no state; their ids.

        For republishing the current state into a recreated topic: the entries go after every
        entry already there, so they are forwarded after them (see ``publisher.republish``).
        """

    async def outbox_contains(self, entry_id: str) -> bool:
        """True while the entry has not been acknowledged by Kafka and removed."""

    # -- forwarder lease ---------------------------------------------------------------
    async def acquire_lease(self, owner: str, ttl_ms: int) -> int | None:
        """Take or renew the forwarder lease; return the term's fencing token, None if taken."""

    async def release_lease(self, owner: str) -> None: ...

    # -- tokens ------------------------------------------------------------------------
    async def create_token(self, token: TokenRecord) -> None: ...

    async def list_tokens(self) -> list[TokenRecord]:
        """All tokens, oldest first."""

    async def delete_token(self, token_id: str) -> bool:
        """Revoke a token; False if there was none with that id."""

    async def find_token(self, secret_sha256: str) -> TokenRecord | None:
        """The token whose secret hashes to ``secret_sha256`` (caller compares in constant time)."""


def check_writes(
    writes: Sequence[ItemWrite],
    *,
    env_exists: Callable[[str], bool],
    policy_revision: Callable[[str], int],
    stored_version: Callable[[str, ItemKind, str], int],
) -> list[VersionConflict | UnknownEnvironment | PolicyChanged | None]:
    """The check pass of ``Store.write_items`` for a store that checks outside the backend:
    each write's failure (None: it may be applied), checked against the state the writes
    before it would leave. The lookups read the stored state (0: no policy, no item); each
    environment's existence and policy revision is looked up once."""
    pending: dict[tuple[str, str, str], int] = {}
    envs: dict[str, bool] = {}
    policies: dict[str, int] = {}
    failures: list[VersionConflict | UnknownEnvironment | PolicyChanged | None] = []
    for w in writes:
        exists = envs.get(w.env)
        if exists is None:
            exists = envs[w.env] = env_exists(w.env)
        if not exists:
            failures.append(UnknownEnvironment(w.env))
            continue
        if w.policy_revision is not None:
            policy = policies.get(w.env)
            if policy is None:
                policy = policies[w.env] = policy_revision(w.env)
            if policy != w.policy_revision:
                failures.append(PolicyChanged(policy))
                continue
        current = pending.get((w.env, w.kind, w.key))
        if current is None:
            current = stored_version(w.env, w.kind, w.key)
        if current != w.expected_version or w.version != w.expected_version + 1:
            failures.append(VersionConflict(current))
            continue
        failures.append(None)
        pending[(w.env, w.kind, w.key)] = w.version
    return failures
