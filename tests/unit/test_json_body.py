"""JSON bodies past the parser's limits (issue 13 item 1): every case's exact answer, pure.

What llama-swap does was settled black-box (the real binary in front of a
recording upstream); docs/architecture.md lists it beside what we do. Each row
here is one case: the model we route by (or the exact 404 message) and whether
the body is forwarded byte for byte.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelswap.errors import ModelNotFoundError
from modelswap.observability.activity_store import ActivityStore
from modelswap.observability.captures import TRIM_MIN_CHARS, CaptureRing, trim_base64
from modelswap.observability.recorder import Recorder
from modelswap.observability.records import RequestRecord
from modelswap.observability.usage import extract_error_message, parse_body
from modelswap.server.extract import ModelRequest, extract_model, json_text, json_truthy
from modelswap.server.filters import FilterPlan, RewriteError, apply_filters
from modelswap.server.json_body import (
    SCAN_TOKEN_LIMIT,
    JSONBodyError,
    RawJSON,
    compact_text,
    encode_json,
    parse_json_body,
)
from modelswap.server.rewrite import replace_model

JSON = "application/json"
NO_MODEL = "no model id could be identified"


def arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


def objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def mixed(depth: int) -> str:
    """Objects in arrays, keys and values full of brackets and escaped quotes."""
    return '{"k]":"}{[\\"","v":[' * depth + "1" + "]}" * depth


DEEP = arrays(20_000)
HUGE_INT = "9" * 100_000


def extract(body: bytes) -> ModelRequest:
    return extract_model("POST", JSON, "", body)


def problem(body: bytes) -> str:
    with pytest.raises(ModelNotFoundError) as caught:
        extract(body).require_model()
    assert caught.value.status == 404
    return caught.value.message


# --- forwarded: the model is found, the body goes out exactly as sent ------------------

FORWARDED: list[tuple[str, bytes, str, bool]] = [
    # (case, body, model routed by, stream)
    ("deep arrays after the model", f'{{"model":"m1","x":{DEEP}}}'.encode(), "m1", False),
    ("deep arrays before the model", f'{{"x":{DEEP},"model":"m1"}}'.encode(), "m1", False),
    ("100k levels of arrays", f'{{"model":"m1","x":{arrays(100_000)}}}'.encode(), "m1", False),
    ("100k levels of objects", f'{{"model":"m1","x":{objects(100_000)}}}'.encode(), "m1", False),
    (
        "mixed deep nesting, strings with brackets inside",
        ('{"model":"m1","x":' + mixed(3_000) + "}").encode(),
        "m1",
        False,
    ),
    ("deep and streamed", f'{{"stream":true,"x":{DEEP},"model":"m1"}}'.encode(), "m1", True),
    ("a 100,000-digit integer", f'{{"model":"m1","x":{HUGE_INT}}}'.encode(), "m1", False),
    (
        "a huge integer nested",
        f'{{"model":"m1","x":[1,{{"n":-{HUGE_INT}}}]}}'.encode(),
        "m1",
        False,
    ),
    ("a huge integer as stream", f'{{"model":"m1","stream":{HUGE_INT}}}'.encode(), "m1", True),
    ("a huge integer as model", f'{{"model":{HUGE_INT}}}'.encode(), HUGE_INT, False),
    ("1e999999 (inf)", b'{"model":"m1","x":1e999999,"y":-1e999999}', "m1", False),
    ("100,000 fraction digits", b'{"model":"m1","x":0.' + b"9" * 100_000 + b"}", "m1", False),
    ("NaN and Infinity", b'{"model":"m1","x":NaN,"y":[Infinity,-Infinity]}', "m1", False),
    ("NaN as stream", b'{"model":"m1","stream":NaN}', "m1", True),
    ("duplicate model: the last wins", b'{"model":"nope","model":"m1"}', "m1", False),
    (
        "duplicate stream: the last wins",
        b'{"model":"m1","stream":true,"stream":false}',
        "m1",
        False,
    ),
    ("a UTF-8 BOM", b'\xef\xbb\xbf{"model":"m1"}', "m1", False),
    (
        "a BOM before deep nesting",
        b'\xef\xbb\xbf{"model":"m1","x":' + DEEP.encode() + b"}",
        "m1",
        False,
    ),
    ("a 10 MB string", b'{"model":"m1","x":"' + b"a" * 10_000_000 + b'"}', "m1", False),
    ("a lone surrogate escape", b'{"model":"m1","x":"\\ud800"}', "m1", False),
    ("deep nesting as the model", f'{{"model":{DEEP}}}'.encode(), DEEP, False),
]


@pytest.mark.parametrize(
    ("case", "body", "model", "stream"), FORWARDED, ids=[c[0] for c in FORWARDED]
)
def test_found_and_forwarded_as_sent(case: str, body: bytes, model: str, stream: bool) -> None:
    request = extract(body)
    assert (request.require_model(), request.stream) == (model, stream)
    assert request.data is body  # nothing rewritten: the very bytes received go out
    assert request.json is not None


# --- refused: 404 with llama-swap's message and the reason ---------------------------

REFUSED: list[tuple[str, bytes, str]] = [
    ("deep arrays, no object", DEEP.encode(), "JSON body is not an object"),
    ("deep objects, no model", objects(20_000).encode(), ""),
    ("deep inside, no top-level model", f'{{"x":{DEEP}}}'.encode(), ""),
    (
        "the model inside deep arrays",
        ("[" * 20_000 + '{"model":"m1"}' + "]" * 20_000).encode(),
        "JSON body is not an object",
    ),
    ("a huge integer alone", HUGE_INT.encode(), "JSON body is not an object"),
    (
        "deep, never closed",
        ('{"model":"m1","x":' + "[" * 20_000).encode(),
        "invalid JSON body: Unterminated array or object starting at: line 1 column 19 (char 18)",
    ),
    (
        "deep, a string never closed",
        ('{"model":"m1","x":' + "[" * 20_000 + '"abc').encode(),
        "invalid JSON body: Unterminated string starting at: line 1 column 20019 (char 20018)",
    ),
    (
        "deep, then a missing comma",
        f'{{"model":"m1","x":{DEEP} "y":1}}'.encode(),
        "invalid JSON body: Expecting ',' delimiter: line 1 column 40020 (char 40019)",
    ),
    (
        "deep, then a bad key",
        f'{{"model":"m1","x":{DEEP},y:1}}'.encode(),
        "invalid JSON body: Expecting property name enclosed in double quotes: "
        "line 1 column 40020 (char 40019)",
    ),
    (
        "deep, then trailing data",
        f'{{"model":"m1","x":{DEEP}}} x'.encode(),
        "invalid JSON body: Extra data: line 1 column 40020 (char 40019)",
    ),
    (
        "a syntax error before the deep part",
        f'{{"model" "m1","x":{DEEP}}}'.encode(),
        "invalid JSON body: Expecting ':' delimiter: line 1 column 10 (char 9)",
    ),
    (
        "too many tokens past the depth limit",
        ('{"model":"m1","x":[' + arrays(1_200) + ",[]" * (SCAN_TOKEN_LIMIT // 2) + "]}").encode(),
        f"JSON body nested too deeply to check (over {SCAN_TOKEN_LIMIT} tokens in values past "
        "the parser's depth limit)",
    ),
    (
        "UTF-16 with a BOM",
        '{"model":"m1"}'.encode("utf-16"),
        "invalid JSON body: encoded as UTF-16, not UTF-8",
    ),
    (
        "UTF-16-LE",
        '{"model":"m1"}'.encode("utf-16-le"),
        "invalid JSON body: encoded as UTF-16-LE, not UTF-8",
    ),
    (
        "UTF-16-BE",
        '{"model":"m1"}'.encode("utf-16-be"),
        "invalid JSON body: encoded as UTF-16-BE, not UTF-8",
    ),
    (
        "UTF-32 with a BOM",
        '{"model":"m1"}'.encode("utf-32"),
        "invalid JSON body: encoded as UTF-32, not UTF-8",
    ),
    (
        "UTF-32-BE",
        '{"model":"m1"}'.encode("utf-32-be"),
        "invalid JSON body: encoded as UTF-32-BE, not UTF-8",
    ),
    (
        "two UTF-8 BOMs",
        b'\xef\xbb\xbf\xef\xbb\xbf{"model":"m1"}',
        "invalid JSON body: Unexpected UTF-8 BOM (decode using utf-8-sig): "
        "line 1 column 1 (char 0)",
    ),
    (
        "invalid UTF-8",
        b'{"model":"m1\xc3\x28"}',
        "invalid JSON body: 'utf-8' codec can't decode byte 0xc3 in position 12: "
        "invalid continuation byte",
    ),
]


@pytest.mark.parametrize(("case", "body", "reason"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_the_reason(case: str, body: bytes, reason: str) -> None:
    assert problem(body) == (f"{NO_MODEL}: {reason}" if reason else NO_MODEL)


def test_the_limits_are_real_here() -> None:
    """The cases above must go past the C parser's limits, or they would prove nothing."""
    with pytest.raises(RecursionError):
        json.loads(DEEP)
    with pytest.raises(ValueError, match="integer string conversion"):
        json.loads(HUGE_INT)
    assert sys.get_int_max_str_digits() < len(HUGE_INT)
    assert json.loads(mixed(3))["k]"] == '}{["'  # the shape is valid JSON


def test_raw_members_keep_their_source_text() -> None:
    body = f'{{"a":1,"x":{DEEP},"n":{HUGE_INT},"b":[NaN]}}'.encode()
    document = parse_json_body(body)
    assert list(document) == ["a", "x", "n", "b"]
    assert document["x"] == RawJSON(DEEP) and document["x"].is_container
    assert document["n"] == RawJSON(HUGE_INT) and not document["n"].is_container
    assert encode_json(document) == body  # compact already: identical


@pytest.mark.parametrize(
    ("raw", "truthy"),
    [
        (HUGE_INT, True),
        ("-" + HUGE_INT, True),
        ("0", False),
        ("-0.0e5", False),
        ("0.01", True),
        (DEEP, False),
        ("{}", False),
    ],
)
def test_raw_stream_values_follow_the_truthiness_rule(raw: str, truthy: bool) -> None:
    assert RawJSON(raw).truthy is truthy
    assert json_truthy(RawJSON(raw)) is truthy
    assert json_text(RawJSON(raw)) == raw  # gjson's String() of a raw value: its text


def test_json_body_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an object"):
        parse_json_body(DEEP.encode())
    assert issubclass(JSONBodyError, ValueError)


# --- rewriting: a raw member goes back out verbatim ----------------------------------


def test_rewriting_the_model_keeps_deep_and_huge_members_verbatim() -> None:
    body = f'{{"model":"m1","x":{DEEP},"n":{HUGE_INT},"s":"\\ud800"}}'.encode()
    rewritten = replace_model(extract(body), "other")
    assert rewritten.model == "other"
    assert rewritten.data == body.replace(b'"m1"', b'"other"')


def test_filters_on_a_deep_body() -> None:
    body = f'{{"model":"m1","x":{DEEP},"temperature":1}}'.encode()
    plan = FilterPlan("upstream", ("temperature",), (("top_p", 0.5),))
    filtered = apply_filters(extract(body), plan)
    assert filtered.model == "m1"  # routing unchanged (useModelName edits the body only)
    assert filtered.data == f'{{"model":"upstream","x":{DEEP},"top_p":0.5}}'.encode()
    assert (
        apply_filters(extract(body), FilterPlan(strip=("x",))).data
        == b'{"model":"m1","temperature":1}'
    )


@pytest.mark.parametrize(
    "plan",
    [FilterPlan(strip=("x.0",)), FilterPlan(set_params=(("x.0", 1),))],
    ids=["strip", "set"],
)
def test_a_filter_path_into_a_raw_member_is_a_400_not_a_silent_skip(plan: FilterPlan) -> None:
    body = f'{{"model":"m1","x":{DEEP}}}'.encode()
    with pytest.raises(RewriteError) as caught:
        apply_filters(extract(body), plan)
    assert caught.value.status == 400
    assert caught.value.message == "cannot edit x.0 in the request: it is nested too deeply"


def test_a_filter_through_a_raw_number_replaces_it_like_any_scalar() -> None:
    body = f'{{"model":"m1","n":{HUGE_INT}}}'.encode()
    filtered = apply_filters(extract(body), FilterPlan(set_params=(("n.k", 1),)))
    assert filtered.data == b'{"model":"m1","n":{"k":1}}'


def test_a_lone_surrogate_is_written_back_escaped() -> None:
    """Found by the fuzzer: a rewrite used to fail to encode it (a 500)."""
    body = b'{"model":"m1","x":"\\ud800 \\udfff","y":"\xed\xa0\x80"}'
    data = apply_filters(extract(body), FilterPlan("upstream")).data
    assert data == b'{"model":"upstream","x":"\\ud800 \\udfff","y":"\\ud800"}'
    assert json.loads(data)["x"] == "\ud800 \udfff"


def test_documents_deeper_than_dumps_recurses_are_encoded_iteratively() -> None:
    deep: Any = 1
    for _ in range(5_000):
        deep = {"a": [deep]}
    with pytest.raises(RecursionError):
        json.dumps(deep)
    text = compact_text({"model": "m1", "x": deep})
    assert text == '{"model":"m1","x":' + '{"a":[' * 5_000 + "1" + "]}" * 5_000 + "}"
    assert json_text(deep).startswith('{"a":[{"a":[')


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=5), st.integers(0, 5))
def test_member_by_member_parse_matches_the_c_parser(members: dict[str, Any], at: int) -> None:
    """A deep member anywhere: every other member reads and re-encodes as ``json`` would."""
    items = list(members.items())
    items.insert(min(at, len(items)), ("\x00deep", RawJSON(DEEP)))
    expected = (
        "{"
        + ",".join(
            json.dumps(k, ensure_ascii=False)
            + ":"
            + (
                v.text
                if isinstance(v, RawJSON)
                else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
            )
            for k, v in items
        )
        + "}"
    )
    document = parse_json_body(expected.encode("utf-8", "surrogatepass"))
    assert isinstance(document, dict)
    assert document["\x00deep"] == RawJSON(DEEP)
    assert compact_text(document) == expected


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(JSON_VALUES)
def test_the_iterative_encoder_writes_what_dumps_writes(value: Any) -> None:
    from modelswap.server.json_body import _encode_iteratively

    assert _encode_iteratively(value) == json.dumps(
        value, ensure_ascii=False, separators=(",", ":")
    )


# --- response bodies in the recorder thread ----------------------------------------


def test_deep_response_bodies_never_fail_usage_parsing() -> None:
    deep = f'{{"usage":{{"prompt_tokens":1}},"x":{DEEP}}}'.encode()
    assert parse_body(200, JSON, deep).duration_ms == 0  # parsed as "no figures", no raise
    sse = b"data: " + deep + b"\n\ndata: [DONE]\n\n"
    assert parse_body(200, "text/event-stream", sse).duration_ms == 0
    assert extract_error_message(f'{{"error":{DEEP}}}'.encode()) == ""
    assert parse_body(500, JSON, DEEP.encode()).error_msg == "500 Internal Server Error"


def test_deep_bodies_are_captured_as_sent() -> None:
    base64 = "A" * TRIM_MIN_CHARS
    body = f'{{"image":"{base64}","x":{DEEP}}}'.encode()
    assert trim_base64(body) is body
    sse = b"data: " + body + b"\n\n"
    assert trim_base64(sse) is sse
    # Near the limit the parse may succeed and the (recursive) walk fail: never a raise.
    for depth in range(850, 1000, 10):
        near = ('{"image":"' + base64 + '","x":' + arrays(depth) + "}").encode()
        out = trim_base64(near)
        assert out is near or out.startswith(b'{"image":"<base64, ')


async def test_the_recorder_stores_deep_bodies_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A RecursionError in the writer thread used to fail its whole batch of rows."""
    store, ring = ActivityStore(None, 100), CaptureRing(64 * 1024 * 1024)
    recorder = Recorder(store, captures=ring)
    deep = f'{{"image":"{"A" * TRIM_MIN_CHARS}","x":{DEEP}}}'.encode()
    records = [
        RequestRecord(
            request_id=n,
            model="m1",
            method="POST",
            req_path="/v1/chat/completions",
            started_wall=0.0,
            ended_wall=0.0,
            duration_ms=1.0,
            status=status,
            resp_content_type=ctype,
            req_body=deep,
            resp_body=b"data: " + deep + b"\n\n" if ctype == "text/event-stream" else deep,
        )
        for n, (status, ctype) in enumerate(
            [(200, JSON), (200, "text/event-stream"), (400, JSON), (200, JSON)], 1
        )
    ]
    with caplog.at_level(logging.WARNING):
        recorder.start()
        for record in records:
            recorder.submit(record)
        await recorder.wait_flushed()
        await recorder.close()
    assert recorder.statistics().failed == 0
    assert [e["id"] for e in store.entries([1, 2, 3, 4])] == [1, 2, 3, 4]
    assert ring.get(1) is not None and ring.get(2) is not None
    assert caplog.records == []
    store.close()


def test_a_capture_keeps_paths_and_headers_that_are_not_utf8() -> None:
    """Found by the fuzzer's log check: such a capture failed to encode (a logged traceback)."""
    ring = CaptureRing(1 << 20)
    path, value = "/upstream/m1/\udcf6x", "caf\udce9 \u00e9"
    record = RequestRecord(
        request_id=1,
        model="m1",
        method="POST",
        req_path=path,
        started_wall=0.0,
        ended_wall=0.0,
        duration_ms=1.0,
        status=200,
        resp_content_type=JSON,
        req_headers={"X-Odd": value},
        req_body=b"{}",
        resp_headers={"X-Back": value},
        resp_body=b"{}",
    )
    assert ring.store(1, record)
    capture = ring.get(1)
    assert capture is not None
    assert (capture["req_path"], capture["req_headers"]["X-Odd"]) == (path, value)
    assert capture["resp_headers"]["X-Back"] == value
    json.dumps(capture)  # what GET /api/captures/<id> sends: escaped, never an error
