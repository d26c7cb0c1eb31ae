import re
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.sse import (
    SSEComment,
    SSEEvent,
    SSEParser,
    encode_comment,
    encode_event,
    encode_retry,
)

pytestmark = pytest.mark.unit

# Bounded so the whole protocol suite stays fast on a shared machine; raise locally to dig.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Out = list[SSEEvent | SSEComment]


def parse_all(stream: bytes, chunk_size: int | None = None) -> tuple[Out, SSEParser]:
    parser = SSEParser()
    out: Out = []
    if chunk_size is None:
        out += parser.feed(stream)
    else:
        for i in range(0, len(stream), chunk_size):
            out += parser.feed(stream[i : i + chunk_size])
    return out, parser


def ev(
    data: str, event: str = "message", id: str | None = None, retry: int | None = None
) -> SSEEvent:
    return SSEEvent(event=event, data=data, id=id, retry=retry)


# --- encoder ---------------------------------------------------------------------------------


def test_encode_single_line_event() -> None:
    assert encode_event(b'{"a":1}', event="put", id="e:1") == (
        b'event: put\nid: e:1\ndata: {"a":1}\n\n'
    )
    assert encode_event(b"x") == b"data: x\n\n"


def test_encode_multi_line_data() -> None:
    assert encode_event(b"a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert encode_event(b"a\n") == b"data: a\ndata: \n\n"


def test_encode_empty_data_is_still_dispatched() -> None:
    frame = encode_event(b"")
    assert frame == b"data: \n\n"
    assert parse_all(frame)[0] == [ev("")]


@pytest.mark.parametrize("event", ["", "a\nb", "a\r"])
def test_bad_event_name(event: str) -> None:
    with pytest.raises(ValueError, match="event"):
        encode_event(b"x", event=event)


@pytest.mark.parametrize("id", ["a\nb", "a\rb", "a\x00b"])
def test_bad_id(id: str) -> None:
    with pytest.raises(ValueError, match="id"):
        encode_event(b"x", id=id)


def test_comment_and_retry() -> None:
    assert encode_comment() == b":\n"
    assert encode_comment("keepalive") == b": keepalive\n"
    with pytest.raises(ValueError, match="comment"):
        encode_comment("a\nb")
    assert encode_retry(1500) == b"retry: 1500\n\n"
    with pytest.raises(ValueError, match="retry"):
        encode_retry(-1)


# --- parser: WHATWG examples and rules -------------------------------------------------------


def test_spec_example_multiline() -> None:
    out, _ = parse_all(b"data: YHOO\ndata: +2\ndata: 10\n\n")
    assert out == [ev("YHOO\n+2\n10")]


def test_spec_example_ids_and_comment() -> None:
    stream = (
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n"
    )
    out, parser = parse_all(stream)
    assert out == [
        SSEComment("test stream"),
        ev("first event", id="1"),
        ev("second event", id=""),
        ev(" third event", id=""),
    ]
    assert parser.last_event_id == ""


def test_spec_example_empty_data_and_unterminated() -> None:
    out, _ = parse_all(b"data\n\ndata\ndata\n\ndata:")
    assert out == [ev(""), ev("\n")]


def test_spec_example_space_after_colon_optional() -> None:
    out, _ = parse_all(b"data:test\n\ndata: test\n\n")
    assert out == [ev("test"), ev("test")]


def test_blank_line_without_data_dispatches_nothing_and_resets_event_type() -> None:
    out, _ = parse_all(b"event: put\n\ndata: x\n\n")
    assert out == [ev("x")]


def test_event_type_and_id_persistence() -> None:
    out, parser = parse_all(b"event: patch\nid: 7\ndata: a\n\ndata: b\n\n")
    assert out == [ev("a", "patch", "7"), ev("b", "message", "7")]
    assert parser.last_event_id == "7"


def test_empty_event_field_means_message() -> None:
    out, _ = parse_all(b"event:\ndata: x\n\n")
    assert out == [ev("x")]


def test_id_with_nul_is_ignored() -> None:
    out, parser = parse_all(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert out == [ev("a", id="1"), ev("b", id="1")]
    assert parser.last_event_id == "1"


def test_id_is_set_even_without_dispatch() -> None:
    _, parser = parse_all(b"id: 9\n\n")
    assert parser.last_event_id == "9"


def test_last_event_id_only_committed_by_the_blank_line() -> None:
    parser = SSEParser()
    parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n")
    # The connection could drop here: event 2 was not received, so resume from 1.
    assert parser.last_event_id == "1"
    assert parser.feed(b"\n") == [ev("b", id="2")]
    assert parser.last_event_id == "2"


def test_retry_rules() -> None:
    out, parser = parse_all(
        b"retry: 1000\n\nretry: 10a\ndata: x\n\nretry:\nretry: 2000\ndata: y\n\n"
    )
    assert out == [ev("x"), ev("y", retry=2000)]
    assert parser.retry == 2000
    _, parser = parse_all("retry: ١٢\n\n".encode())  # Arabic-Indic digits are not ASCII digits
    assert parser.retry is None


def test_unknown_fields_ignored_and_field_without_colon() -> None:
    out, _ = parse_all(b"foo: bar\nbaz\ndata\n\n")
    assert out == [ev("")]


def test_only_one_leading_space_stripped_and_colons_in_value() -> None:
    out, _ = parse_all(b"data:   a: b:c\n\n")
    assert out == [ev("  a: b:c")]


def test_comment_text() -> None:
    out, _ = parse_all(b":\n:x\n:  two\n")
    assert out == [SSEComment(""), SSEComment("x"), SSEComment(" two")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_endings(eol: bytes) -> None:
    stream = b"event: put" + eol + b"data: a" + eol + b"data: b" + eol + eol
    for size in (None, 1, 2, 3):
        assert parse_all(stream, size)[0] == [ev("a\nb", "put")]


def test_cr_then_lf_in_next_chunk_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []  # an empty chunk keeps the pending CR state
    assert parser.feed(b"\n\r") == [ev("a")]
    assert parser.feed(b"\ndata: b\n\n") == [ev("b")]


def test_cr_followed_by_partial_line_in_same_chunk() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\rdata: b") == []
    # The CR was not the end of the buffer: an LF now starts a new (blank) line.
    assert parser.feed(b"\n\n") == [ev("a\nb")]


def test_lone_cr_chunk_boundaries() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\r") == [ev("a")]
    assert parser.feed(b"\n") == []  # second half of the CRLF started by the last CR


def test_leading_bom_is_stripped_once() -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    for size in (None, 1, 2):
        assert parse_all(stream, size)[0] == [ev("x")]
    # A second BOM is part of the field name "\ufeffdata", an unknown field.
    assert parse_all(b"\xef\xbb\xbf" + stream)[0] == []


def test_partial_bom_that_is_not_a_bom() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"\xbb") == []
    assert parser.feed(b"Xdata: y\n\ndata: z\n\n") == [ev("z")]


def test_bom_only_at_start() -> None:
    out, _ = parse_all(b"data: a\n\n\xef\xbb\xbfdata: b\n\n")
    assert out == [ev("a")]


def test_invalid_utf8_is_replaced() -> None:
    out, _ = parse_all(b"data: \xff\xfe ok\n\n")
    assert out == [ev("\ufffd\ufffd ok")]


def test_utf8_split_across_chunks() -> None:
    stream = "data: héllo €𝄞\n\n".encode()
    assert parse_all(stream, 1)[0] == [ev("héllo €𝄞")]


def test_max_line_bytes() -> None:
    parser = SSEParser(max_line_bytes=8)
    assert parser.feed(b"data: 12\n\n") == [ev("12")]  # complete lines are not limited
    assert parser.feed(b"data: 1") == []
    with pytest.raises(ProtocolError, match="too long"):
        parser.feed(b"23456")


def test_unlimited_by_default() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: " + b"x" * 100_000) == []
    assert parser.feed(b"\n\n") == [ev("x" * 100_000)]


# --- property: encoder -> parser under arbitrary chunking ------------------------------------

line_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20)
data_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


@dataclass(frozen=True)
class Event:
    data: str
    event: str | None
    id: str | None


@dataclass(frozen=True)
class Comment:
    text: str


@dataclass(frozen=True)
class Retry:
    ms: int


frames = st.one_of(
    st.builds(
        Event,
        data=data_text,
        event=st.none() | line_text.filter(bool),
        id=st.none() | line_text.filter(lambda s: "\x00" not in s),
    ),
    st.builds(Comment, text=line_text),
    st.builds(Retry, ms=st.integers(min_value=0, max_value=10**12)),
)


def encode(frame: Event | Comment | Retry) -> bytes:
    if isinstance(frame, Event):
        return encode_event(frame.data.encode(), event=frame.event, id=frame.id)
    if isinstance(frame, Comment):
        return encode_comment(frame.text)
    return encode_retry(frame.ms)


def expected(frame_list: list[Event | Comment | Retry]) -> tuple[Out, str | None, int | None]:
    out: Out = []
    last_id: str | None = None
    retry: int | None = None
    for f in frame_list:
        if isinstance(f, Event):
            if f.id is not None:
                last_id = f.id
            data = "\n".join(re.split(r"\r\n|\r|\n", f.data))
            out.append(SSEEvent(f.event or "message", data, last_id, None))
        elif isinstance(f, Comment):
            out.append(SSEComment(f.text))
        else:
            retry = f.ms
    return out, last_id, retry


@FAST
@given(
    frame_list=st.lists(frames, max_size=12),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_encoder_to_parser_any_chunking(
    frame_list: list[Event | Comment | Retry], eol: bytes, bom: bool, cuts: list[int]
) -> None:
    stream = b"".join(encode(f) for f in frame_list)
    # Encoded frames contain no raw CR, so any line ending convention can be substituted.
    stream = stream.replace(b"\n", eol)
    if bom:
        stream = b"\xef\xbb\xbf" + stream
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    parser = SSEParser()
    out: Out = []
    for chunk in chunks:
        out += parser.feed(chunk)
    want, last_id, retry = expected(frame_list)
    assert out == want
    assert parser.last_event_id == last_id
    assert parser.retry == retry


@FAST
@given(chunks=st.lists(st.binary(max_size=30), max_size=20))
def test_parser_is_chunking_invariant_on_arbitrary_bytes(chunks: list[bytes]) -> None:
    whole, _ = parse_all(b"".join(chunks))
    parser = SSEParser()
    pieces: Out = []
    for chunk in chunks:
        pieces += parser.feed(chunk)
    assert pieces == whole
