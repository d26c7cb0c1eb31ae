"""Error types raised by the protocol package.

Every function of ``protocol`` that parses untrusted input raises one of these (or returns
``None`` where documented), never an unexpected exception, so callers can count and skip a
bad record or answer a clear 4xx.
"""

from __future__ import annotations

__all__ = ["EnvelopeError", "ProtocolError", "ValidationError"]


class ProtocolError(Exception):
    """Base class of every error the protocol package raises on bad input."""


class ValidationError(ProtocolError):
    """A flag, segment, key or environment record is invalid.

    ``path`` names the offending field in JSON-path-like notation (``rules[2].clauses[0].op``;
    ``""`` for the document root) and ``reason`` says why, so an API can answer
    ``{"detail": str(err)}`` and the operator knows what to fix.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class EnvelopeError(ProtocolError):
    """A Kafka record (key or value) cannot be decoded: malformed or unknown schema."""
