import contextlib
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.environment import (
    CredentialHash,
    EnvironmentRecord,
    hash_secret,
    new_client_side_id,
    new_mobile_key,
    new_sdk_key,
)
from protocol.errors import ValidationError

pytestmark = pytest.mark.unit

# Bounded so the whole protocol suite stays fast on a shared machine; raise locally to dig.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SDK_KEY = "sdk-11111111-2222-3333-4444-555555555555"
OLD_KEY = "sdk-00000000-2222-3333-4444-555555555555"
MOBILE_KEY = "mob-11111111-2222-3333-4444-555555555555"


def record() -> EnvironmentRecord:
    return EnvironmentRecord(
        key="prod",
        name="Production",
        version=3,
        sdk_keys=(CredentialHash(hash_secret(SDK_KEY)), CredentialHash(hash_secret(OLD_KEY), 1000)),
        mobile_keys=(CredentialHash(hash_secret(MOBILE_KEY), None),),
        client_side_id="0123456789abcdef01234567",
    )


def test_hash_secret_is_sha256_hex() -> None:
    assert hash_secret("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    hash_secret("\udcff")  # a lone surrogate from a surrogateescape'd header does not raise


def test_new_credentials() -> None:
    uuid_re = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert re.fullmatch("sdk-" + uuid_re, new_sdk_key())
    assert re.fullmatch("mob-" + uuid_re, new_mobile_key())
    assert re.fullmatch(r"[0-9a-f]{24}", new_client_side_id())
    assert new_sdk_key() != new_sdk_key()


def test_json_round_trip_and_format() -> None:
    rec = record()
    raw = rec.to_json()
    assert EnvironmentRecord.from_json(raw) == rec
    obj = json.loads(raw)
    assert obj["sdkKeys"][1] == {"sha256": hash_secret(OLD_KEY), "expiresMs": 1000}
    assert SDK_KEY not in raw.decode()  # secrets never shipped, only hashes


def test_accepts_sdk_key_with_expiry() -> None:
    rec = record()
    assert rec.accepts_sdk_key(hash_secret(SDK_KEY), now_ms=5000)
    assert rec.accepts_sdk_key(hash_secret(OLD_KEY), now_ms=999)
    assert not rec.accepts_sdk_key(hash_secret(OLD_KEY), now_ms=1000)
    assert not rec.accepts_sdk_key(hash_secret("sdk-unknown"), now_ms=0)
    assert not rec.accepts_sdk_key(hash_secret(MOBILE_KEY), now_ms=0)
    assert not rec.accepts_sdk_key("é not a hash", now_ms=0)
    assert rec.accepts_mobile_key(hash_secret(MOBILE_KEY), now_ms=10**15)
    assert not rec.accepts_mobile_key(hash_secret(SDK_KEY), now_ms=0)


def good() -> dict[str, Any]:
    return json.loads(record().to_json())  # type: ignore[no-any-return]


BAD = [
    ("key", "a b", "key"),
    ("name", "", "name"),
    ("name", 5, "name"),
    ("name", "x" * 257, "name"),
    ("version", 0, "version"),
    ("version", True, "version"),
    ("clientSideId", None, "clientSideId"),
    ("clientSideId", "a/b", "clientSideId"),
    ("sdkKeys", None, "sdkKeys"),
    ("mobileKeys", {}, "mobileKeys"),
]


@pytest.mark.parametrize(("field", "value", "path"), BAD)
def test_invalid_records(field: str, value: object, path: str) -> None:
    obj = good()
    obj[field] = value
    with pytest.raises(ValidationError) as exc:
        EnvironmentRecord.from_json(json.dumps(obj).encode())
    assert exc.value.path == path


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ("abc", "sdkKeys[0]"),
        ({"sha256": "ABC"}, "sdkKeys[0].sha256"),
        ({"sha256": "A" * 64}, "sdkKeys[0].sha256"),
        ({"sha256": "a" * 64, "expiresMs": "soon"}, "sdkKeys[0].expiresMs"),
        ({"sha256": "a" * 64, "expiresMs": 1.5}, "sdkKeys[0].expiresMs"),
    ],
)
def test_invalid_credentials(entry: object, path: str) -> None:
    obj = good()
    obj["sdkKeys"] = [entry]
    with pytest.raises(ValidationError) as exc:
        EnvironmentRecord.from_dict(obj)
    assert exc.value.path == path


def test_credential_without_expiry_field() -> None:
    obj = good()
    obj["sdkKeys"] = [{"sha256": "a" * 64}]
    assert EnvironmentRecord.from_dict(obj).sdk_keys == (CredentialHash("a" * 64, None),)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", b"[]", b"null", b"[" * 100_000])
def test_garbage_raises_validation_error(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        EnvironmentRecord.from_json(raw)


@FAST
@given(st.binary(max_size=100))
def test_from_json_raises_only_validation_error(raw: bytes) -> None:
    with contextlib.suppress(ValidationError):
        EnvironmentRecord.from_json(raw)
