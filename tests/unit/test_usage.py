"""Token/rate parsing of finished requests (server spec §16; scenarios 64, 66, 67, 68)."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from modelswap.observability import usage as usage_module
from modelswap.observability.records import RequestRecord
from modelswap.observability.usage import (
    DecompressError,
    Usage,
    decompress,
    extract_error_message,
    parse_body,
    parse_record,
    status_text,
)

SSE = "text/event-stream"
JSON = "application/json"


def sse(*events: Any, done: bool = True) -> bytes:
    """An SSE body: one ``data:`` line per event (dicts as JSON), then ``[DONE]``."""
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def delta(text: str) -> dict[str, Any]:
    return {"choices": [{"delta": {"content": text}}]}


def figures(u: Usage) -> tuple[Any, ...]:
    """(input, output, cached, draft, draft accepted, prompt rate, gen rate, duration)."""
    return (
        u.input_tokens,
        u.output_tokens,
        u.cache_tokens,
        u.draft_tokens,
        u.draft_acc_tokens,
        round(u.prompt_per_second, 2),
        round(u.tokens_per_second, 2),
        u.duration_ms,
    )


TIMINGS = {
    "prompt_n": 20,
    "predicted_n": 50,
    "cache_n": 8,
    "prompt_per_second": 100.0,
    "predicted_per_second": 40.0,
    "prompt_ms": 200.0,
    "predicted_ms": 1250.0,
}
VLLM_USAGE = {
    "prompt_tokens": 42,
    "completion_tokens": 128,
    "prompt_tokens_details": {"cached_tokens": 20},
}
VLLM_METRICS = {"time_to_first_token_ms": 85.2, "mean_itl_ms": 9.1, "generation_time_ms": 1240.5}

# Scenario 64, plus the cases around each rule.
CASES: list[tuple[str, str, str, bytes, float, tuple[Any, ...]]] = [
    (
        "usage 12/7 with prompt_tokens_details.cached_tokens 4",
        JSON,
        "/v1/chat/completions",
        json.dumps(
            {
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 4},
                }
            }
        ).encode(),
        850,
        (12, 7, 4, -1, -1, -1, -1, 850),
    ),
    (
        "llama-server timings override usage; duration = prompt_ms + predicted_ms > wall",
        JSON,
        "/v1/chat/completions",
        json.dumps(
            {"usage": {"prompt_tokens": 1, "completion_tokens": 1}, "timings": TIMINGS}
        ).encode(),
        900,
        (20, 50, 8, -1, -1, 100.0, 40.0, 1450),
    ),
    (
        "timings: a longer wall clock wins",
        JSON,
        "/completion",
        json.dumps({"timings": TIMINGS}).encode(),
        2000.7,
        (20, 50, 8, -1, -1, 100.0, 40.0, 2000),
    ),
    (
        "SSE usage 15/33 in the last chunk",
        SSE,
        "/v1/chat/completions",
        sse(
            delta("he"),
            delta("llo"),
            {"choices": [], "usage": {"prompt_tokens": 15, "completion_tokens": 33}},
        ),
        10,
        (15, 33, -1, -1, -1, -1, -1, 10),
    ),
    (
        "vLLM stream with usage and metrics, no cached count",
        SSE,
        "/v1/chat/completions",
        sse(
            delta("x"),
            {
                "choices": [],
                "usage": {"prompt_tokens": 14, "completion_tokens": 152},
                "metrics": {"time_to_first_token_ms": 70, "mean_itl_ms": 10},
            },
        ),
        10,
        (14, 152, -1, -1, -1, 200.0, 100.0, 10),
    ),
    (
        "vLLM JSON: prompt rate (42-20)/0.0852, gen rate 1000/9.1",
        JSON,
        "/v1/chat/completions",
        json.dumps({"usage": VLLM_USAGE, "metrics": VLLM_METRICS}).encode(),
        10,
        (42, 128, 20, -1, -1, round(22 / 0.0852, 2), 109.89, 10),
    ),
    (
        "vLLM speculative decoding 20/14",
        JSON,
        "/v1/chat/completions",
        json.dumps(
            {
                "usage": VLLM_USAGE,
                "metrics": {
                    **VLLM_METRICS,
                    "speculative_decoding": {
                        "num_draft_tokens": 20,
                        "num_accepted_draft_tokens": 14,
                    },
                },
            }
        ).encode(),
        10,
        (42, 128, 20, 20, 14, round(22 / 0.0852, 2), 109.89, 10),
    ),
    (
        "partial speculative object → draft unknown",
        JSON,
        "/v1/chat/completions",
        json.dumps(
            {"usage": VLLM_USAGE, "metrics": {"speculative_decoding": {"num_draft_tokens": 20}}}
        ).encode(),
        10,
        (42, 128, 20, -1, -1, -1, -1, 10),
    ),
    (
        "timings draft 30/12 not overwritten by an empty speculative object",
        JSON,
        "/v1/chat/completions",
        json.dumps(
            {
                "timings": {**TIMINGS, "draft_n": 30, "draft_n_accepted": 12},
                "metrics": {"speculative_decoding": {}},
            }
        ).encode(),
        10,
        (20, 50, 8, 30, 12, 100.0, 40.0, 1450),
    ),
    (
        "timings with only draft_n → draft unknown",
        JSON,
        "/v1/chat/completions",
        json.dumps({"timings": {**TIMINGS, "draft_n": 30}}).encode(),
        10,
        (20, 50, 8, -1, -1, 100.0, 40.0, 1450),
    ),
    (
        "data: [DONE] only → minimal record",
        SSE,
        "/v1/chat/completions",
        b"data: [DONE]\n\n",
        33,
        (0, 0, 0, 0, 0, 0, 0, 33),
    ),
    (
        "/infill array: timings from its last element",
        JSON,
        "/infill",
        json.dumps(
            [{"content": "a"}, {"content": "b", "timings": {"prompt_n": 5, "predicted_n": 9}}]
        ).encode(),
        10,
        (5, 9, -1, -1, -1, 0, 0, 10),
    ),
    (
        "an array on another path finds nothing",
        JSON,
        "/v1/embeddings",
        json.dumps([{"timings": {"prompt_n": 5}}]).encode(),
        10,
        (0, 0, 0, 0, 0, 0, 0, 10),
    ),
    (
        "Anthropic stream: message.usage then a later output count",
        SSE,
        "/v1/messages",
        sse(
            {
                "type": "message_start",
                "message": {
                    "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 3}
                },
            },
            {"type": "content_block_delta", "delta": {"text": "hi"}},
            {"type": "message_delta", "usage": {"output_tokens": 40}},
            done=False,
        ),
        10,
        (25, 40, 3, -1, -1, -1, -1, 10),
    ),
    (
        "Responses API stream: response.usage with input_tokens_details",
        SSE,
        "/v1/responses",
        sse(
            {
                "type": "response.completed",
                "response": {
                    "usage": {
                        "input_tokens": 9,
                        "output_tokens": 4,
                        "input_tokens_details": {"cached_tokens": 2},
                    }
                },
            }
        ),
        10,
        (9, 4, 2, -1, -1, -1, -1, 10),
    ),
    (
        "later zero counts do not erase earlier ones; a present cached value replaces",
        SSE,
        "/v1/chat/completions",
        sse(
            {
                "usage": {
                    "prompt_tokens": 11,
                    "completion_tokens": 5,
                    "prompt_tokens_details": {"cached_tokens": 7},
                }
            },
            {
                "usage": {
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "prompt_tokens_details": {"cached_tokens": 0},
                }
            },
        ),
        10,
        (11, 5, 0, -1, -1, -1, -1, 10),
    ),
    (
        "SSE: the last timings win, CRLF lines and 'data:' without a space",
        SSE,
        "/completion",
        b'data:{"timings":{"prompt_n":1,"predicted_n":1}}\r\n\r\n'
        b'data:  {"timings":{"prompt_n":3,"predicted_n":4,"predicted_per_second":8}}\r\n\r\n',
        10,
        (3, 4, -1, -1, -1, 0, 8.0, 10),
    ),
    (
        "SSE: invalid JSON, non-data lines and empty usage objects are skipped",
        SSE,
        "/v1/chat/completions",
        b'event: usage\n: comment usage\ndata: {"usage": \ndata: {"usage": {}}\n'
        b'data: {"usage":{"prompt_tokens":2,"completion_tokens":3}}\n',
        10,
        (2, 3, -1, -1, -1, -1, -1, 10),
    ),
    (
        "SSE: a key written with \\u escapes is still found",
        SSE,
        "/v1/chat/completions",
        b'data: {"\\u0075sage": {"prompt_tokens": 6, "completion_tokens": 2}}\n',
        10,
        (6, 2, -1, -1, -1, -1, -1, 10),
    ),
    (
        "SSE: only usage:{} → nothing found",
        SSE,
        "/v1/chat/completions",
        sse({"usage": {}}),
        10,
        (0, 0, 0, 0, 0, 0, 0, 10),
    ),
    (
        "non-stream usage:{} counts as found (unknown rates)",
        JSON,
        "/v1/chat/completions",
        b'{"usage": {}}',
        10,
        (0, 0, -1, -1, -1, -1, -1, 10),
    ),
    (
        "invalid JSON → minimal record",
        JSON,
        "/v1/chat/completions",
        b'{"usage": {"prompt_tokens": 1',
        10,
        (0, 0, 0, 0, 0, 0, 0, 10),
    ),
    (
        "NaN is not JSON",
        JSON,
        "/v1/chat/completions",
        b'{"usage": {"prompt_tokens": NaN}}',
        10,
        (0, 0, 0, 0, 0, 0, 0, 10),
    ),
    (
        "200 with an empty body → minimal record",
        JSON,
        "/v1/chat/completions",
        b"",
        12,
        (0, 0, 0, 0, 0, 0, 0, 12),
    ),
]


@pytest.mark.parametrize(
    ("content_type", "path", "body", "wall", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_parse_body(
    content_type: str, path: str, body: bytes, wall: float, expected: tuple[Any, ...]
) -> None:
    parsed = parse_body(200, content_type, body, req_path=path, wall_ms=wall)
    assert figures(parsed) == expected
    assert parsed.error_msg == ""


# --- errors (scenarios 66, 67) ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error":{"message":"rate limited"}}', "rate limited"),
        (b'{"error":"bad request"}', "bad request"),
        (b'{"message":"nope"}', "nope"),
        (b'{"detail":"oops"}', "oops"),
        (b'{"error":{"code":42}}', ""),
        (b'{"usage":{}}', ""),
        (b"not-json", ""),
        (b'{"error":{"message":""},"detail":"second"}', "second"),
        (b'["error"]', ""),
        (json.dumps({"error": "x" * 501}).encode(), "x" * 500 + "..."),
        (json.dumps({"error": "x" * 500}).encode(), "x" * 500),
    ],
)
def test_extract_error_message(body: bytes, message: str) -> None:
    assert extract_error_message(body) == message


@pytest.mark.parametrize(
    ("status", "body", "encoding", "message"),
    [
        (502, b'{"error":{"message":"model unavailable"}}', "", "model unavailable"),
        (502, b"<html>bad gateway</html>", "", "502 Bad Gateway"),
        (500, b'{"error":"boom"}', "", "boom"),
        (500, gzip.compress(b'{"error":"zipped"}'), "gzip", "zipped"),
        (201, b'{"id": 1}', "", "201 Created"),
        (414, b"", "", "414 Request URI Too Long"),
        (599, b"", "", "HTTP 599"),
    ],
)
def test_non_200_is_an_error_row_with_no_tokens(
    status: int, body: bytes, encoding: str, message: str
) -> None:
    parsed = parse_body(
        status, JSON, body, encoding=encoding, req_path="/v1/chat/completions", wall_ms=7
    )
    assert parsed == Usage(duration_ms=7, error_msg=message)


def test_non_200_with_undecodable_body_says_so() -> None:
    parsed = parse_body(503, JSON, b"not gzip", encoding="gzip", wall_ms=1)
    assert parsed.error_msg.startswith("response decode failed: ")
    assert figures(parsed) == (0, 0, 0, 0, 0, 0, 0, 1)


def test_200_with_bogus_gzip_records_the_failure() -> None:
    parsed = parse_body(200, JSON, b"definitely not gzip", encoding="gzip", wall_ms=3)
    assert parsed.error_msg.startswith("response decompression failed: ")
    assert parsed.decompression_failed
    assert figures(parsed) == (0, 0, 0, 0, 0, 0, 0, 3)


def test_status_text_uses_go_reason_phrases() -> None:
    assert status_text(418) == "418 I'm a teapot"
    assert status_text(502) == "502 Bad Gateway"
    assert status_text(299) == "HTTP 299"


# --- decompression (scenario 68) --------------------------------------------------------

PLAIN = b'{"usage":{"prompt_tokens":1,"completion_tokens":2}}'


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoded", "encoding"),
    [
        (PLAIN, ""),
        (PLAIN, "identity"),
        (gzip.compress(PLAIN), "gzip"),
        (gzip.compress(PLAIN), " GZIP "),
        (zlib.compress(PLAIN), "deflate"),
        (_raw_deflate(PLAIN), "deflate"),
    ],
)
def test_decompress(encoded: bytes, encoding: str) -> None:
    assert decompress(encoded, encoding) == PLAIN
    parsed = parse_body(200, JSON, encoded, encoding=encoding)
    assert (parsed.input_tokens, parsed.output_tokens) == (1, 2)


def test_unknown_encoding_passes_through() -> None:
    assert decompress(b"\x8b\x00opaque", "br") == b"\x8b\x00opaque"


@pytest.mark.parametrize(
    ("encoded", "encoding"),
    [(b"junk", "gzip"), (gzip.compress(PLAIN)[:-8], "gzip"), (b"junk", "deflate")],
)
def test_decompress_failure(encoded: bytes, encoding: str) -> None:
    with pytest.raises(DecompressError):
        decompress(encoded, encoding)


# --- whole records -------------------------------------------------------------------


def record(**kw: Any) -> RequestRecord:
    defaults: dict[str, Any] = {
        "request_id": 1,
        "model": "m1",
        "method": "POST",
        "req_path": "/v1/chat/completions",
        "started_wall": 1000.0,
        "ended_wall": 1001.0,
        "duration_ms": 1000.4,
        "status": 200,
        "resp_content_type": SSE,
    }
    return RequestRecord(**{**defaults, **kw})


def test_record_reads_content_encoding_case_insensitively() -> None:
    body = gzip.compress(sse({"usage": {"prompt_tokens": 4, "completion_tokens": 5}}))
    for headers in ({"content-encoding": "gzip"}, CIMultiDict({"Content-Encoding": "gzip"})):
        parsed = parse_record(record(resp_headers=headers, resp_body=body))
        assert figures(parsed) == (4, 5, -1, -1, -1, -1, -1, 1000)


def test_a_tail_is_scanned_from_its_first_complete_line() -> None:
    whole = sse(
        *[delta("x" * 50) for _ in range(20)],
        {"usage": {"prompt_tokens": 8, "completion_tokens": 9}},
    )
    tail = whole[-300:]
    assert not tail.startswith(b"data:")
    parsed = parse_record(record(resp_body=None, resp_tail=tail))
    assert figures(parsed)[:3] == (8, 9, -1)
    # A cut first line that happens to hold a usage-looking fragment is ignored.
    cut = b'"prompt_tokens": 99}}\n' + sse({"usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    assert parse_record(record(resp_body=None, resp_tail=cut)).input_tokens == 1


def test_a_tail_of_json_or_compressed_data_is_a_minimal_record() -> None:
    body = json.dumps({"usage": {"prompt_tokens": 8}}).encode()
    assert parse_record(record(resp_content_type=JSON, resp_body=None, resp_tail=body)) == Usage(
        duration_ms=1000
    )
    zipped = parse_record(
        record(resp_body=None, resp_tail=b"\x1f\x8b...", resp_headers={"Content-Encoding": "gzip"})
    )
    assert zipped == Usage(duration_ms=1000)


def test_a_long_error_body_kept_only_as_a_tail_falls_back_to_the_status() -> None:
    parsed = parse_record(record(status=500, resp_body=None, resp_tail=b'or": "x"}'))
    assert parsed.error_msg == "500 Internal Server Error"


# --- the fast SSE scan finds exactly what a line-by-line scan finds -----------------------

_KEYS = st.sampled_from(["usage", "timings", "metrics", "choices", "\\u0075sage", "message"])
_EVENT_VALUES = st.dictionaries(
    st.sampled_from(
        [
            "prompt_tokens",
            "completion_tokens",
            "input_tokens",
            "output_tokens",
            "prompt_n",
            "predicted_n",
            "predicted_per_second",
            "mean_itl_ms",
            "time_to_first_token_ms",
            "cache_n",
            "content",
        ]
    ),
    st.integers(min_value=0, max_value=500),
    max_size=4,
)
_LINE = st.one_of(
    st.builds(
        lambda key, value, sep: f'data:{sep}{{"{key}": {json.dumps(value)}}}',
        _KEYS,
        _EVENT_VALUES,
        st.sampled_from(["", " ", "  "]),
    ),
    st.sampled_from(["", "data: [DONE]", ": usage comment", "event: metrics", "data: {bad usage"]),
)


def _naive_lines(body: bytes) -> Any:
    return iter(body.split(b"\n"))


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, max_size=12), st.sampled_from(["\n", "\r\n", "\n\n"]))
def test_fast_scan_matches_a_line_by_line_scan(lines: list[str], newline: str) -> None:
    body = newline.join(lines).encode()
    fast = parse_body(200, SSE, body, wall_ms=5)
    with mock.patch.object(usage_module, "_candidate_lines", _naive_lines):
        slow = parse_body(200, SSE, body, wall_ms=5)
    assert fast == slow


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Numbers as gjson reads them: floats truncate, numeric strings count, junk is 0.
        (
            b'{"usage":{"prompt_tokens":12.9,"completion_tokens":"7","prompt_tokens_details":'
            b'{"cached_tokens":"x"}}}',
            (12, 7, 0, -1, -1, -1, -1, 1),
        ),
        # Absurd sizes are clamped and infinities dropped, so the row can always be stored.
        (
            b'{"usage":{"prompt_tokens":1' + b"0" * 30 + b',"completion_tokens":1e400}}',
            (2**53, 0, -1, -1, -1, -1, -1, 1),
        ),
        # A tiny divisor overflows a rate to infinity: unknown instead.
        (
            b'{"usage":{"prompt_tokens":5},"metrics":{"time_to_first_token_ms":1e-320,'
            b'"mean_itl_ms":1e-320}}',
            (5, 0, -1, -1, -1, -1, -1, 1),
        ),
    ],
)
def test_odd_numbers_never_break_a_row(body: bytes, expected: tuple[Any, ...]) -> None:
    parsed = parse_body(200, JSON, body, wall_ms=1)
    assert figures(parsed) == expected
    json.dumps(parsed.prompt_per_second, allow_nan=False)
