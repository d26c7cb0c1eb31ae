"""Where governance keeps its records: the ``GovernanceStore`` protocol.

Records (policies, change requests, triggers, rollout plans) are opaque JSON bytes in a
*collection*, keyed by environment and id, each with a ``revision``. Implementations: Redis
(``governance.redis_store``, production), SQLite (``flagstream.embedded.governance``,
``flagstream dev`` and one-box deployments) and in-memory (``governance.memory_store``, the
reference for the semantics, ``flagstream dev --ephemeral`` and the state-machine tests).
Each sits next to the publisher's ``Store`` of the same backend and writes into *its* audit
log and outbox, so governance steps and item writes form one timeline.

Guarantees every implementation keeps:

- **Compare-and-set on revision.** ``update`` and ``commit_write`` store a record only if its
  stored revision equals ``expected_revision`` (0 = absent); otherwise they raise
  ``StaleRecord`` and change nothing. Concurrent reviewers, editors and schedulers therefore
  never lose each other's steps: the loser re-reads and decides again.
- **One atomic step with the item write.** ``commit_write`` stores the record *and* performs
  the item write exactly as ``Store.write_items`` does for a direct write (environment check,
  policy revision check, version compare-and-set, item, ONE outbox entry, ONE audit entry),
  all or nothing: Redis runs it as one Lua script built from the same fragments as the
  direct write's, so a replica or an AOF replay sees it as one unit and a crash (SIGKILL) of
  the caller at any moment leaves either both or neither; SQLite runs it as one transaction.
- **The policy is a record too.** The policy of environment E is the record
  (``policy``, E, E); its revision is the one ``Store.write_items`` compares with an
  ``ItemWrite.policy_revision`` (``publisher.store``), so it is stored where the ``Store``
  reads it in its atomic step.
- **Exactly once for scheduled work.** Removing a record from the schedule is part of the same
  atomic step that moves it to its next state (``schedule_at_ms=None``). A due change request
  is applied by ``commit_write`` whose revision check fails for every second attempt (another
  publisher, a retry after a crash), so it is applied at most once; and as it stays in the
  schedule until that step commits, at least once.
- **Fencing.** ``commit_write(..., lease_owner=X)`` commits only while X holds the forwarder
  lease (checked inside the atomic step; else ``NotLeaseHolder``): a deposed scheduler writes
  nothing.
- **Schedule order.** ``due`` returns due records by time, then by ``seq`` (creation order), so
  changes of one flag due at the same moment apply in the order they were created.
- **Audit.** Every ``update`` appends its audit entry to the environment's audit log in the
  same atomic step; ``commit_write`` appends the write's entry.
- **Secrets.** Trigger secrets are indexed only by their SHA-256 digest.
- **Idempotent retries.** A call the client retries after a lost connection whose first
  attempt committed does not commit twice nor report its own success as a conflict.
- **Availability.** Every method raises ``StoreUnavailable`` when the backend cannot be reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Protocol, cast

from publisher.store import ItemWrite, StoreError

__all__ = [
    "COLLECTIONS",
    "Collection",
    "GovernanceStore",
    "NotLeaseHolder",
    "RecordUpdate",
    "ScheduledRef",
    "SecretIndex",
    "StaleRecord",
    "check_one_environment",
    "parse_member",
    "schedule_member",
]

Collection = Literal["policy", "change-request", "trigger", "rollout"]
COLLECTIONS: Final = ("policy", "change-request", "trigger", "rollout")


class StaleRecord(StoreError):
    """The record's stored revision is not the expected one; ``current`` is (0 = absent)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current revision is {current}")
        self.current = current


class NotLeaseHolder(StoreError):
    """``commit_write`` with a ``lease_owner`` that does not hold the forwarder lease."""


@dataclass(frozen=True, slots=True)
class SecretIndex:
    """Add or remove a trigger's secret digest -> (env, id) entry with the record."""

    sha256: str
    add: bool


@dataclass(frozen=True, slots=True)
class RecordUpdate:
    """One record to store with compare-and-set on its revision, and its place in the schedule."""

    collection: Collection
    env: str
    id: str
    value: bytes
    expected_revision: int  # 0 = create
    revision: int  # the stored revision afterwards (expected_revision + 1)
    seq: int  # creation order, for the schedule's tie-break
    schedule_at_ms: int | None = None  # None: not (or no longer) in the schedule
    secret: SecretIndex | None = None


@dataclass(frozen=True, slots=True)
class ScheduledRef:
    """A record whose scheduled time has come."""

    collection: Collection
    env: str
    id: str
    at_ms: int


def schedule_member(collection: str, env: str, record_id: str, seq: int) -> str:
    """The schedule's member for a record: sorts by ``seq`` among records due at the same time."""
    return f"{seq:012d}|{collection}|{env}|{record_id}"


def parse_member(member: str, at_ms: int) -> ScheduledRef:
    _seq, collection, env, record_id = member.split("|", 3)
    if collection not in COLLECTIONS:
        raise ValueError(f"not a schedule member: {member!r}")
    return ScheduledRef(cast(Collection, collection), env, record_id, at_ms)


def check_one_environment(update: RecordUpdate, write: ItemWrite) -> None:
    """``commit_write``'s precondition: the record and its item write share an environment."""
    if update.env != write.env:
        raise ValueError("a record and the item it writes belong to one environment")


class GovernanceStore(Protocol):
    """Durable governance records next to a publisher ``Store`` (see the module docstring)."""

    async def get(self, collection: Collection, env: str, record_id: str) -> bytes | None: ...

    async def list_records(self, collection: Collection, env: str) -> list[bytes]:
        """Every record of a collection in an environment (any order)."""

    async def next_seq(self) -> int:
        """A number greater than every one returned before (ids and schedule order)."""

    async def update(self, update: RecordUpdate, *, audit: bytes | None) -> None:
        """Store ``update`` if the revision matches (else StaleRecord) and append ``audit``."""

    async def commit_write(
        self, update: RecordUpdate, write: ItemWrite, *, now_ms: int, lease_owner: str | None
    ) -> str:
        """``update`` and ``write`` in one atomic step; the outbox entry id.

        ``write`` is checked and applied as one write of ``Store.write_items`` (its
        ``policy_revision`` included). Raises StaleRecord, NotLeaseHolder, or the item
        write's UnknownEnvironment / PolicyChanged / VersionConflict — in every case having
        changed nothing.
        """

    async def due(self, now_ms: int, limit: int) -> list[ScheduledRef]:
        """Up to ``limit`` scheduled records due at ``now_ms``, by time then ``seq``."""

    async def find_secret(self, sha256: str) -> tuple[str, str] | None:
        """The (env, trigger id) whose secret has this digest (caller compares in const time)."""

    async def take_rate(self, bucket: str, limit: int, window_ms: int, now_ms: int) -> int:
        """Count one call in ``bucket``'s fixed window; 0 if within ``limit``, else the
        milliseconds until the window ends."""
