"""The invariants a chaos run checks, as pure functions over what it observed.

Rules (docs/reliability.md explains each):
1. **No loss.** Every acknowledged write (200/201/202, with the version the publisher gave
   it) is present, at that version or a later one, in every *view* that covers its
   environment: Redis (the publisher's state), the compacted topic (the last record of each
   key: what compaction keeps and what a relay bootstrapping later reads), each relay
   worker's polling answer, each SSE stream and each SDK. ``lost`` counts acknowledged
   writes missing from at least one view; ``lost_by_view`` says where.
2. **Monotonic.** No observer was ever shown an older version of a flag than it held
   (``Regression``s, found while the events arrived).
3. **Convergence.** Every view equals the publisher's final state (for the environments it
   covers). An observer's convergence time is from ``t0`` (the later of the last fault's
   recovery and the last write) to its last change; one that never converged fails.
4. **Bounded.** The largest relay process RSS stays under the bound.
5. **No secrets in logs.** No SDK key, mobile key or API token appears in any log.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from loadtest.chaos.observers import Regression
from loadtest.chaos.writers import AckedWrite

__all__ = ["Verdict", "View", "check_views", "convergence_times", "find_secrets"]

ItemId = tuple[str, str]


@dataclass(frozen=True)
class View:
    """What one observer (or store) holds at the end: versions of the flags it covers."""

    name: str
    envs: frozenset[str]
    versions: Mapping[ItemId, int]
    last_change: float | None = None  # monotonic time of its last change (None: unknown)


@dataclass
class Verdict:
    lost: int = 0
    lost_by_view: dict[str, int] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)
    not_converged: list[str] = field(default_factory=list)
    converged_examples: list[str] = field(default_factory=list)


def check_views(
    acked: Iterable[AckedWrite], final: Mapping[ItemId, int], views: Iterable[View]
) -> Verdict:
    """Rules 1 and 3 (equality) for every view."""
    verdict = Verdict()
    newest: dict[ItemId, AckedWrite] = {}
    for write in acked:
        item = (write.env, write.key)
        if item not in newest or write.version > newest[item].version:
            newest[item] = write
    lost_items: set[ItemId] = set()
    for view in views:
        missing = 0
        for item, write in newest.items():
            if item[0] not in view.envs:
                continue
            held = view.versions.get(item, 0)
            if held < write.version:
                missing += 1
                lost_items.add(item)
                if len(verdict.lost_examples) < 20:
                    verdict.lost_examples.append(
                        f"{view.name}: {item[0]}/{item[1]} holds v{held}, "
                        f"v{write.version} was acknowledged ({write.status})"
                    )
        if missing:
            verdict.lost_by_view[view.name] = missing
        expected = {item: v for item, v in final.items() if item[0] in view.envs}
        held_items = {item: v for item, v in view.versions.items() if item[0] in view.envs}
        if held_items != expected:
            diff = sorted(
                f"{i[0]}/{i[1]}: v{held_items.get(i, 0)} != v{expected.get(i, 0)}"
                for i in set(held_items) | set(expected)
                if held_items.get(i, 0) != expected.get(i, 0)
            )
            verdict.not_converged.append(f"{view.name} ({len(diff)}: {', '.join(diff[:3])})")
    # An acknowledged write is lost if *some* view misses it; count each write once, by its
    # newest acknowledged version (an older acknowledged version is covered by a newer one).
    verdict.lost = sum(
        1 for w in acked if (w.env, w.key) in lost_items and w is newest[(w.env, w.key)]
    )
    return verdict


def convergence_times(views: Iterable[View], t0: float) -> list[float]:
    """Seconds from ``t0`` to each view's last change (0 if it had converged before)."""
    return [max(0.0, view.last_change - t0) for view in views if view.last_change is not None]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def find_secrets(texts: Mapping[str, str], secrets: Iterable[str]) -> list[str]:
    """``"file: secret…"`` for every secret found in a text (secrets shown by prefix only)."""
    found = []
    wanted = [s for s in secrets if len(s) >= 8]
    for name, text in texts.items():
        for secret in wanted:
            if secret in text:
                found.append(f"{name}: {secret[:6]}…")
    return found


def regressions_summary(regressions: list[Regression]) -> list[str]:
    return [
        f"{r.observer} {r.env}/{r.key}: held v{r.held}, shown v{r.shown} ({r.event})"
        for r in regressions[:20]
    ]
