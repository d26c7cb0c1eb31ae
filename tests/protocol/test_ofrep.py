"""protocol.ofrep: OFREP requests, answers, ETags, notices and tokens (pure, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.evaluation import CompiledEnvironment, Reason, parse_context
from protocol.evaluation.result import make_result
from protocol.ofrep import (
    FlagInfo,
    OfrepError,
    bulk_body,
    bulk_etag,
    encode_evaluation,
    encode_failure,
    etag_matches,
    event_streams_json,
    flag_info,
    map_context,
    notice_event,
    notice_token,
    ofrep_reason,
    parse_request,
    token_environment,
)
from protocol.sse import SSEEvent, SSEParser

pytestmark = pytest.mark.unit


def error(body: bytes) -> tuple[str, str]:
    with pytest.raises(OfrepError) as info:
        parse_request(body)
    return info.value.code, info.value.details


# --- requests and contexts ---------------------------------------------------------------------


def test_request_errors() -> None:
    assert error(b"{") == ("PARSE_ERROR", "the request body is not valid JSON")
    assert error(b"[" * 100_000)[0] == "PARSE_ERROR"  # too deep for the parser
    assert error(b"[]")[0] == "PARSE_ERROR"
    assert error(b'{"context": 1}') == ("INVALID_CONTEXT", '"context" must be a JSON object')
    assert error(b"{}")[0] == "TARGETING_KEY_MISSING"
    assert error(b'{"context": null}')[0] == "TARGETING_KEY_MISSING"


def test_request_bodies_decode_as_json_loads_would() -> None:
    # The UTF-8 fast path and json.loads' own encoding detection read the same bodies.
    body = {"context": {"targetingKey": "u\u00e9", "odd": "\ud800"}}
    text = json.dumps(body)
    for raw in (
        text.encode(),
        text.encode("utf-8", "surrogatepass"),
        text.encode("utf-16-le", "surrogatepass"),
        text.encode("utf-16", "surrogatepass"),  # with its byte-order mark
        b"\xef\xbb\xbf" + text.encode(),  # UTF-8 byte-order mark
    ):
        context = parse_request(raw)
        user = context.individual("user")
        assert user is not None and user.key == "u\u00e9"
        assert user.attributes["odd"] == "\ud800"
    assert error(b'{"context": "\xff"}')[0] == "PARSE_ERROR"  # not UTF-8
    assert error(b"{\0")[0] == "PARSE_ERROR"


def test_single_context_mapping() -> None:
    context = parse_request(
        json.dumps(
            {
                "context": {
                    "targetingKey": "u1",
                    "key": "ignored",
                    "email": "a@b.c",
                    "name": "Ann",
                    "anonymous": True,
                    "privateAttributes": ["email"],
                }
            }
        ).encode()
    )
    assert context.kind == "user" and context.key == "u1"
    single = context.individual("user")
    assert single is not None
    assert single.attributes["email"] == "a@b.c" and single.name == "Ann" and single.anonymous
    assert single.private_attributes == ("email",)
    assert map_context({"key": "k2"}).key == "k2"  # key when there is no targetingKey
    org = map_context({"kind": "org", "targetingKey": "acme", "tier": 3})
    assert (org.kind, org.key, org.fully_qualified_key) == ("org", "acme", "org:acme")


def test_multi_context_mapping() -> None:
    context = map_context(
        {
            "kind": "multi",
            "targetingKey": "ignored at the top of a multi context",
            "user": {"targetingKey": "u1", "plan": "pro"},
            "org": {"key": "acme"},
        }
    )
    assert context.multiple
    assert context.fully_qualified_key == "org:acme:user:u1"
    user = context.individual("user")
    assert user is not None and user.attributes["plan"] == "pro"


@pytest.mark.parametrize(
    ("context", "code", "details"),
    [
        ({}, "TARGETING_KEY_MISSING", "targetingKey is missing"),
        ({"targetingKey": ""}, "TARGETING_KEY_MISSING", "targetingKey is missing"),
        ({"targetingKey": None, "key": None}, "TARGETING_KEY_MISSING", "targetingKey is missing"),
        ({"targetingKey": 5}, "INVALID_CONTEXT", "targetingKey must be a string"),
        ({"targetingKey": "a", "kind": 3}, "INVALID_CONTEXT", 'context "kind" must be a string'),
        ({"targetingKey": "a", "kind": "kind"}, "INVALID_CONTEXT", "not a valid context kind"),
        ({"targetingKey": "a", "name": 1}, "INVALID_CONTEXT", '"name" must be a string'),
        ({"kind": "multi", "user": 1}, "INVALID_CONTEXT", '"user" must be an object'),
        ({"kind": "multi"}, "INVALID_CONTEXT", "at least one kind"),
        ({"kind": "multi", "user": {}}, "TARGETING_KEY_MISSING", "user.targetingKey is missing"),
        (
            {"targetingKey": "a", "privateAttributes": "email"},
            "INVALID_CONTEXT",
            "privateAttributes",
        ),
    ],
)
def test_context_errors(context: dict[str, Any], code: str, details: str) -> None:
    with pytest.raises(OfrepError) as info:
        map_context(context)
    assert info.value.code == code
    assert details in info.value.details
    assert str(info.value) == info.value.details


# --- flags and answers -------------------------------------------------------------------------


def test_flag_info() -> None:
    assert flag_info("not a flag") == FlagInfo()
    assert flag_info({}) == FlagInfo()
    info = flag_info(
        {
            "variationNames": ["on", 3, ""],
            "rules": [{"variation": 0}, "junk", {"rollout": {"variations": []}}],
            "fallthrough": {"rollout": {"variations": []}},
        }
    )
    assert info == FlagInfo(("on", "", ""), frozenset({2}), True)
    assert [info.variant(i) for i in range(4)] == ["on", "1", "2", "3"]
    assert flag_info({"rules": "junk", "fallthrough": 0}) == FlagInfo()


def test_reasons() -> None:
    plain, split = FlagInfo(), FlagInfo((), frozenset({1}), True)
    assert ofrep_reason(Reason("OFF"), plain) == "DISABLED"
    assert ofrep_reason(Reason("PREREQUISITE_FAILED", prerequisite_key="p"), plain) == "DISABLED"
    assert ofrep_reason(Reason("TARGET_MATCH"), plain) == "TARGETING_MATCH"
    assert ofrep_reason(Reason("RULE_MATCH", rule_index=0), split) == "TARGETING_MATCH"
    assert ofrep_reason(Reason("RULE_MATCH", rule_index=1), split) == "SPLIT"
    assert ofrep_reason(Reason("FALLTHROUGH"), plain) == "STATIC"
    assert ofrep_reason(Reason("FALLTHROUGH"), split) == "SPLIT"


PLAIN = FlagInfo()


def answer(result: Any, info: FlagInfo = PLAIN) -> tuple[int, Any]:
    status, body = encode_evaluation(result, info)
    return status, json.loads(body)


def test_answers_from_engine_results() -> None:
    env = CompiledEnvironment.from_items(
        {
            "f": {
                "key": "f",
                "version": 4,
                "on": True,
                "variations": ["a", "b"],
                "variationNames": ["alpha", "beta"],
                "fallthrough": {"variation": 1},
                "rules": [
                    {
                        "id": "r1",
                        "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
                        "rollout": {
                            "kind": "experiment",
                            "variations": [{"variation": 0, "weight": 100_000}],
                        },
                    }
                ],
            },
            "off": {"key": "off", "version": 1, "on": False, "variations": [1, 2]},
            "bad": {"key": "bad", "version": 1, "variations": "x"},
        }
    )
    raw = {"variationNames": ["alpha", "beta"], "rules": [{"rollout": {}}]}
    pro = parse_context({"key": "u", "custom": {"plan": "pro"}})
    assert answer(env.evaluate("f", pro), flag_info(raw)) == (
        200,
        {
            "key": "f",
            "value": "a",
            "reason": "SPLIT",
            "variant": "alpha",
            "metadata": {
                "reasonKind": "RULE_MATCH",
                "flagVersion": 4,
                "variationIndex": 0,
                "ruleIndex": 0,
                "ruleId": "r1",
                "inExperiment": True,
            },
        },
    )
    free = parse_context({"key": "u"})
    assert answer(env.evaluate("f", free))[1]["reason"] == "STATIC"
    assert answer(env.evaluate("off", free)) == (
        200,
        {
            "key": "off",
            "reason": "DISABLED",
            "variant": "default",
            "metadata": {"reasonKind": "OFF", "flagVersion": 1},
        },
    )
    status, body = answer(env.evaluate("bad", free))
    assert status == 400
    assert body == {
        "key": "bad",
        "errorCode": "GENERAL",
        "errorDetails": "flag 'bad' could not be evaluated (MALFORMED_FLAG)",
    }
    assert answer(env.evaluate("nope", free)) == (
        404,
        {"key": "nope", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "flag 'nope' was not found"},
    )


def test_answer_with_prerequisite_and_without_version() -> None:
    failed = make_result("f", 0, 1, Reason("PREREQUISITE_FAILED", prerequisite_key="p"), None)
    assert answer(failed)[1] == {
        "key": "f",
        "value": 0,
        "reason": "DISABLED",
        "variant": "1",
        "metadata": {
            "reasonKind": "PREREQUISITE_FAILED",
            "variationIndex": 1,
            "prerequisiteKey": "p",
        },
    }


def test_failures_and_bulk_body() -> None:
    assert json.loads(encode_failure("PARSE_ERROR", "bad")) == {
        "errorCode": "PARSE_ERROR",
        "errorDetails": "bad",
    }
    assert json.loads(encode_failure("GENERAL", "x", key="k"))["key"] == "k"
    url = "http://relay/ofrep/v1/notices?token=t"
    streams = event_streams_json(url, 60)
    assert json.loads(bulk_body([b'{"key":"a"}', b'{"key":"b"}'], streams)) == {
        "flags": [{"key": "a"}, {"key": "b"}],
        "eventStreams": [{"type": "sse", "url": url, "inactivityDelaySec": 60}],
    }
    assert json.loads(bulk_body([], streams))["flags"] == []


def test_etags() -> None:
    etag = bulk_etag("e:1", "server", b"{}", b"[]")
    assert etag.startswith('W/"') and etag.endswith('"') and len(etag) == 28
    assert etag == bulk_etag("e:1", "server", b"{}", b"[]")
    others = {
        bulk_etag("e:2", "server", b"{}", b"[]"),
        bulk_etag("e:1", "client", b"{}", b"[]"),
        bulk_etag("e:1", "server", b"{ }", b"[]"),
        bulk_etag("e:1", "server", b"{}", b"[1]"),
        bulk_etag("e:1", "server", b"{}[", b"]"),  # the body's length separates it
    }
    assert etag not in others and len(others) == 5
    assert not etag_matches(None, etag)
    assert not etag_matches("", etag)
    assert etag_matches("*", etag)
    assert etag_matches(etag, etag)
    assert etag_matches(etag.removeprefix("W/"), etag)
    assert etag_matches(f'"other", {etag}', etag)
    assert not etag_matches('"other", W/"x"', etag)


# --- notices and tokens --------------------------------------------------------------------------


def test_notice_event_is_one_message_with_its_position() -> None:
    events = SSEParser().feed(notice_event("abc:12"))
    assert events == [
        SSEEvent("message", '{"type":"refetchEvaluation","etag":"abc:12"}', "abc:12", None)
    ]


def test_tokens() -> None:
    token = notice_token("prod", ["h2", "h1"])
    assert token == notice_token("prod", ["h1", "h2"])  # order of the hashes does not matter
    assert token != notice_token("prod", ["h1"])  # a rotated key changes it
    assert token != notice_token("prod2", ["h1", "h2"])
    assert token_environment(token) == "prod"
    assert token_environment(notice_token("é/x", [])) == "é/x"
    for bad in (None, "", "nodot", "a.b.c", "%%%.mac", "_w.mac", ".mac", "a+b/.mac"):
        assert token_environment(bad) is None, bad
