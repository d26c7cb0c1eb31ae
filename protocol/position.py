"""Stream positions: ``{epoch}:{offset}``, the SSE ``id`` of every event a relay sends.

- ``epoch`` identifies the topic incarnation and partition layout (``make_epoch``): offsets
  from a recreated topic or a repartitioned one are meaningless, so such a position must be
  answered with a full ``put``.
- ``offset`` is the Kafka offset, within the environment's partition, of the last record the
  client has seen. ``-1`` means "nothing yet" (an empty partition).
- Positions compare only within one epoch (``Position.covers``); across epochs they are
  unordered.
- ``parse_position`` is total: anything malformed is ``None`` (the relay then sends a full
  ``put``), it never raises — the input is an untrusted ``Last-Event-ID`` header.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

__all__ = ["EPOCH_LENGTH", "Position", "make_epoch", "parse_position"]

EPOCH_LENGTH: Final = 12
# Epoch: what make_epoch produces, but accept any short token so a future epoch scheme can be
# parsed (and then rejected as "unknown epoch" by the relay, not as garbage).
_POSITION_RE: Final = re.compile(r"([0-9A-Za-z_-]{1,64}):(-1|0|[1-9][0-9]{0,18})")
_MAX_OFFSET: Final = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Position:
    """A point in one environment's stream: an epoch and a Kafka offset."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    def covers(self, other: Position) -> bool:
        """True if ``self`` is at or past ``other`` in the same epoch."""
        return self.epoch == other.epoch and self.offset >= other.offset


def parse_position(text: str | None) -> Position | None:
    """Parse ``"{epoch}:{offset}"``; ``None`` for anything malformed. Never raises."""
    if not isinstance(text, str) or len(text) > 128:
        return None
    m = _POSITION_RE.fullmatch(text)
    if m is None:
        return None
    offset = int(m.group(2))
    if offset > _MAX_OFFSET:
        return None
    return Position(m.group(1), offset)


def make_epoch(topic_id: str, partitions: int) -> str:
    """A short stable id (12 lowercase hex chars) of a topic incarnation and partition count.

    ``topic_id`` should be Kafka's topic UUID (new on every re-creation); the partition count
    is included because adding partitions moves environments to other partitions.
    """
    digest = hashlib.sha256(f"{topic_id}/{partitions}".encode()).hexdigest()
    return digest[:EPOCH_LENGTH]
