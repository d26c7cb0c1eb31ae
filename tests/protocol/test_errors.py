import pytest

from protocol.errors import EnvelopeError, ProtocolError, ValidationError

pytestmark = pytest.mark.unit


def test_validation_error_carries_path_and_reason() -> None:
    err = ValidationError("rules[2].clauses[0].op", "unknown operator 'x'")
    assert err.path == "rules[2].clauses[0].op"
    assert err.reason == "unknown operator 'x'"
    assert str(err) == "rules[2].clauses[0].op: unknown operator 'x'"
    assert isinstance(err, ProtocolError)


def test_root_path_is_empty() -> None:
    assert str(ValidationError("", "must be an object")) == ": must be an object"


def test_envelope_error_is_a_protocol_error() -> None:
    assert issubclass(EnvelopeError, ProtocolError)
    assert not issubclass(EnvelopeError, ValidationError)
