"""SDK key lookup by hash: header forms, rotation with expiry, replacement, removal."""

from __future__ import annotations

import pytest

from protocol.environment import CredentialHash, EnvironmentRecord, hash_secret
from relay.credentials import CredentialIndex, sdk_key_from_header

pytestmark = pytest.mark.unit


def record(env: str, version: int, *keys: tuple[str, int | None]) -> EnvironmentRecord:
    return EnvironmentRecord(
        key=env,
        name=env,
        version=version,
        sdk_keys=tuple(CredentialHash(hash_secret(k), exp) for k, exp in keys),
        mobile_keys=(CredentialHash(hash_secret("mob-1"), None),),
        client_side_id="abc",
    )


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("sdk-1", "sdk-1"),
        ("  sdk-1 ", "sdk-1"),
        ("Bearer sdk-1", "sdk-1"),
        ("bearer   sdk-1", "sdk-1"),
        ("api_key sdk-1", "sdk-1"),
        ("", None),
        (None, None),
        ("Bearer ", None),
    ],
)
def test_sdk_key_from_header(header: str | None, key: str | None) -> None:
    assert sdk_key_from_header(header) == key


def test_resolve_rotation_replacement_and_removal() -> None:
    index = CredentialIndex()
    index.update(record("prod", 1, ("sdk-a", None)))
    index.update(record("test", 1, ("sdk-t", None)))
    assert index.resolve("sdk-a") == "prod" and index.resolve("sdk-t") == "test"
    assert index.resolve("mob-1") is None  # mobile keys do not open server-side endpoints
    assert index.resolve(None) is None and index.resolve("") is None

    index.update(record("prod", 2, ("sdk-b", None), ("sdk-a", 1_000)))
    assert index.resolve("sdk-a", now_ms=999) == "prod"
    assert index.resolve("sdk-a", now_ms=1_000) is None
    assert index.resolve("sdk-b", now_ms=10**13) == "prod"

    index.update(record("prod", 3, ("sdk-c", None)))  # old keys dropped at once
    assert index.resolve("sdk-a", now_ms=0) is None and index.resolve("sdk-b") is None
    assert index.resolve("sdk-c") == "prod"

    index.remove("prod")
    assert index.resolve("sdk-c") is None and index.resolve("sdk-t") == "test"
    assert len(index) == 1


def test_update_from_json_rejects_a_record_of_another_environment() -> None:
    from protocol.errors import ValidationError

    index = CredentialIndex()
    with pytest.raises(ValidationError):
        index.update_from_json("prod", record("other", 1, ("sdk-x", None)).to_json())
    with pytest.raises(ValidationError):
        index.update_from_json("prod", b"not json")
    assert index.resolve("sdk-x") is None


def test_mobile_keys_client_side_ids_and_listeners() -> None:
    index = CredentialIndex()
    seen: list[tuple[int, int | None]] = []
    index.listeners.append(
        lambda new, old: seen.append((new.version, old.version if old else None))
    )

    def boom(new: EnvironmentRecord, old: EnvironmentRecord | None) -> None:
        raise RuntimeError("a listener bug")

    index.listeners.append(boom)  # logged, never raised into the consumer
    index.update(record("prod", 1, ("sdk-1", None)))
    assert index.resolve_mobile("mob-1") == "prod"
    assert index.resolve_mobile("mob-2") is None and index.resolve_mobile(None) is None
    found = index.resolve_client_side_id("abc")
    assert found is not None and found.key == "prod"
    assert index.resolve_client_side_id("nope") is None
    expiring = EnvironmentRecord(
        key="prod",
        name="prod",
        version=2,
        sdk_keys=(),
        mobile_keys=(CredentialHash(hash_secret("mob-9"), 1000),),
        client_side_id="def",
    )
    index.update(expiring)
    assert index.resolve_mobile("mob-1") is None  # replaced
    assert index.resolve_mobile("mob-9", now_ms=999) == "prod"
    assert index.resolve_mobile("mob-9", now_ms=1000) is None
    assert index.resolve_mobile("mob-9") is None  # long expired now
    assert index.resolve_client_side_id("abc") is None
    assert seen == [(1, None), (2, 1)]
    index.remove("prod")
    assert index.resolve_client_side_id("def") is None
