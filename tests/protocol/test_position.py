import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.position import EPOCH_LENGTH, Position, make_epoch, parse_position

pytestmark = pytest.mark.unit

# Bounded so the whole protocol suite stays fast on a shared machine; raise locally to dig.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_format_and_parse() -> None:
    pos = Position("0123456789ab", 42)
    assert str(pos) == "0123456789ab:42"
    assert parse_position("0123456789ab:42") == pos
    assert parse_position("e:-1") == Position("e", -1)
    assert parse_position("e:0") == Position("e", 0)
    assert parse_position(f"e:{2**63 - 1}") == Position("e", 2**63 - 1)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        ":",
        "abc",
        "abc:",
        ":12",
        "abc:-2",
        "abc:01",
        "abc:1.5",
        "abc: 1",
        "abc:1 ",
        "a:b:1",
        "é:1",
        "abc:١٢",  # non-ASCII digits
        f"e:{2**63}",
        "e:99999999999999999999",
        "x" * 65 + ":1",
        "e:" + "1" * 200,
        "e:1\n",
    ],
)
def test_malformed_is_none(text: str | None) -> None:
    assert parse_position(text) is None


def test_non_string_is_none() -> None:
    assert parse_position(12) is None  # type: ignore[arg-type]


@FAST
@given(st.text(max_size=100))
def test_parse_never_raises(text: str) -> None:
    pos = parse_position(text)
    if pos is not None:
        assert str(pos) == text


@FAST
@given(
    epoch=st.text(alphabet="0123456789abcdef", min_size=1, max_size=64),
    offset=st.integers(min_value=-1, max_value=2**63 - 1),
)
def test_round_trip(epoch: str, offset: int) -> None:
    pos = Position(epoch, offset)
    assert parse_position(str(pos)) == pos


def test_covers() -> None:
    assert Position("a", 5).covers(Position("a", 5))
    assert Position("a", 6).covers(Position("a", 5))
    assert not Position("a", 4).covers(Position("a", 5))
    assert not Position("b", 9).covers(Position("a", 5))


def test_make_epoch() -> None:
    epoch = make_epoch("3Ks4cW1LS9y8m4bTqZWfPA", 6)
    assert len(epoch) == EPOCH_LENGTH
    assert all(c in "0123456789abcdef" for c in epoch)
    assert epoch == make_epoch("3Ks4cW1LS9y8m4bTqZWfPA", 6)
    assert epoch != make_epoch("3Ks4cW1LS9y8m4bTqZWfPA", 12)
    assert epoch != make_epoch("other-topic-id", 6)
    assert parse_position(f"{epoch}:7") == Position(epoch, 7)
