"""Token parsing, scopes and the bootstrap admin principal (no I/O)."""

from __future__ import annotations

import pytest

from publisher.auth import (
    Principal,
    new_token_secret,
    parse_bearer,
    principal_for,
    token_sha256,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc ", "abc"),
        (None, None),
        ("", None),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("abc", None),
    ],
)
def test_parse_bearer(header: str | None, token: str | None) -> None:
    assert parse_bearer(header) == token


def test_scopes() -> None:
    reader = Principal("r", "1", frozenset({"read"}), None)
    writer = Principal("w", "2", frozenset({"write"}), frozenset({"prod"}))
    admin = Principal("a", None, frozenset({"admin"}), None)
    assert reader.may("read", "any") and not reader.may("write", "any")
    assert not reader.may("admin")
    assert writer.may("write", "prod") and writer.may("read", "prod")
    assert not writer.may("write", "stage") and not writer.may("read", "stage")
    assert writer.may("read")  # listing: filtered per environment by the caller
    assert admin.may("admin") and admin.may("write", "x")


def test_admin_principal_and_secrets() -> None:
    secret = new_token_secret()
    assert secret.startswith("fst_") and len(secret) > 40 and new_token_secret() != secret
    digest = token_sha256(secret)
    assert len(digest) == 64 and secret not in digest
    admin = principal_for(digest, digest)
    assert admin is not None and admin.may("admin")
    assert principal_for(token_sha256("other"), digest) is None
    assert principal_for(digest, None) is None
