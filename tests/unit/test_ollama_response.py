"""Upstream OpenAI answers → Ollama's JSON and NDJSON (response.py, stream.py), no server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelswap.ollama.response import (
    Timing,
    chat_response,
    created_at,
    done_reason,
    embed_response,
    embeddings_response,
    error_message,
    generate_response,
    load_response,
    tool_arguments,
    usage_fields,
)
from modelswap.ollama.stream import SSEDecoder, StreamTranslator, ndjson

TIMING = Timing(total_ns=5_000_000, load_ns=1_000_000)
WALL = 1_700_000_000.5
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
TIMINGS = {"prompt_n": 11, "prompt_ms": 2.5, "predicted_n": 7, "predicted_ms": 70.0}


def test_created_at_is_rfc3339_utc() -> None:
    assert created_at(WALL) == "2023-11-14T22:13:20.500000Z"


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "stop"), ("length", "length"), ("tool_calls", "stop"), (None, "stop")],
)
def test_done_reason(finish: Any, reason: str) -> None:
    assert done_reason(finish) == reason


@pytest.mark.parametrize(
    ("usage", "timings", "fields"),
    [
        (None, None, {}),
        (
            USAGE,
            TIMINGS,
            {
                "prompt_eval_count": 11,
                "prompt_eval_duration": 2_500_000,
                "eval_count": 7,
                "eval_duration": 70_000_000,
            },
        ),
        (USAGE, None, {"prompt_eval_count": 11, "eval_count": 7}),
        (
            None,
            TIMINGS,
            {
                "prompt_eval_count": 11,
                "prompt_eval_duration": 2_500_000,
                "eval_count": 7,
                "eval_duration": 70_000_000,
            },
        ),
    ],
)
def test_counts_and_durations(usage: Any, timings: Any, fields: dict[str, int]) -> None:
    assert usage_fields(usage, timings) == fields


@pytest.mark.parametrize(
    ("text", "arguments"),
    [('{"a": 1}', {"a": 1}), ("", {}), ("not json", {}), ("[1]", {}), ({"b": 2}, {"b": 2})],
)
def test_tool_arguments(text: Any, arguments: dict[str, Any]) -> None:
    assert tool_arguments(text) == arguments


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": USAGE,
        "timings": TIMINGS,
    }


def test_chat_response() -> None:
    payload = completion({"role": "assistant", "content": "hi", "reasoning_content": "hmm"})
    assert chat_response(payload, "qwen3:latest", None, TIMING, WALL) == {
        "model": "qwen3:latest",
        "created_at": created_at(WALL),
        "message": {"role": "assistant", "content": "hi", "thinking": "hmm"},
        "done": True,
        "done_reason": "stop",
        "total_duration": 5_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": 11,
        "prompt_eval_duration": 2_500_000,
        "eval_count": 7,
        "eval_duration": 70_000_000,
    }


def test_chat_response_without_thinking_when_think_is_false() -> None:
    payload = completion({"role": "assistant", "content": "hi", "reasoning_content": "hmm"})
    assert "thinking" not in chat_response(payload, "m", False, TIMING, WALL)["message"]


def test_chat_response_with_tool_calls() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    payload = completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    out = chat_response(payload, "m", None, TIMING, WALL)
    assert out["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"index": 0, "name": "f", "arguments": {"x": 1}}}],
    }
    assert out["done_reason"] == "stop"


def test_generate_response_from_chat_and_from_completions() -> None:
    chat = completion({"role": "assistant", "content": "text", "reasoning_content": "r"}, "length")
    out = generate_response(chat, "m", True, TIMING, WALL)
    assert (out["response"], out["thinking"], out["done_reason"]) == ("text", "r", "length")
    raw = {"choices": [{"text": "raw text", "finish_reason": "stop"}], "usage": USAGE}
    out = generate_response(raw, "m", None, TIMING, WALL)
    assert out["response"] == "raw text"
    assert out["eval_count"] == 7


def test_embeddings_in_index_order() -> None:
    payload = {
        "data": [{"index": 1, "embedding": [0.2]}, {"index": 0, "embedding": [0.1]}],
        "usage": {"prompt_tokens": 3},
    }
    assert embed_response(payload, "e", TIMING) == {
        "model": "e",
        "embeddings": [[0.1], [0.2]],
        "total_duration": 5_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": 3,
    }
    assert embeddings_response(payload) == {"embedding": [0.1]}
    assert embeddings_response({}) == {"embedding": []}


@pytest.mark.parametrize(
    ("kind", "unload", "expected"),
    [
        ("chat", False, {"message": {"role": "assistant", "content": ""}, "done_reason": "load"}),
        ("generate", True, {"response": "", "done_reason": "unload"}),
    ],
)
def test_load_and_unload_answers(kind: str, unload: bool, expected: dict[str, Any]) -> None:
    out = load_response(kind, "m", WALL, unload=unload)
    assert out["done"] is True
    assert {key: out[key] for key in expected} == expected
    assert load_response("embed", "m", WALL, unload=False) == {"model": "m", "embeddings": []}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": {"code": 400, "message": "bad things", "type": "x"}}', "bad things"),
        (b'{"error": "plain"}', "plain"),
        (b'{"message": "msg"}', "msg"),
        (b"upstream text", "upstream text"),
        (b"", "upstream answered 503"),
    ],
)
def test_error_messages(body: bytes, message: str) -> None:
    assert error_message(body, 503) == message


# --- streams -----------------------------------------------------------------------------


def sse(*events: Any) -> bytes:
    return b"".join(
        b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e).encode()) + b"\n\n"
        for e in events
    )


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_sse_decoder_survives_any_split(size: int) -> None:
    data = sse({"a": 1}, "[DONE]").replace(b"\n\n", b"\r\n\r\n", 1) + b"event: x\ndata: {}\n\n"
    decoder = SSEDecoder()
    payloads: list[str] = []
    for i in range(0, len(data), size):
        payloads += decoder.feed(data[i : i + size])
    payloads += decoder.close()
    assert payloads == ['{"a": 1}', "[DONE]", "{}"]


def test_sse_decoder_keeps_an_unterminated_last_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n") == []
    assert decoder.close() == ["1"]


def translate(kind: str, think: Any, *events: Any) -> list[dict[str, Any]]:
    translator = StreamTranslator(kind, "m", think)
    out: list[dict[str, Any]] = []
    for payload in SSEDecoder().feed(sse(*events)):
        out += translator.payload(payload, WALL)
    return out + translator.finish(TIMING, WALL)


def test_chat_stream() -> None:
    out = translate(
        "chat",
        None,
        chunk({"role": "assistant", "reasoning_content": "think"}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        {"choices": [], "usage": USAGE, "timings": TIMINGS},
        "[DONE]",
    )
    assert [o["message"] for o in out] == [
        {"role": "assistant", "content": "", "thinking": "think"},
        {"role": "assistant", "content": "Hel"},
        {"role": "assistant", "content": "lo"},
        {"role": "assistant", "content": ""},
    ]
    assert [o["done"] for o in out] == [False, False, False, True]
    assert out[-1]["done_reason"] == "stop"
    assert out[-1]["eval_count"] == 7
    assert out[-1]["eval_duration"] == 70_000_000
    assert out[-1]["total_duration"] == 5_000_000


def test_chat_stream_drops_thinking_when_think_is_false() -> None:
    out = translate("chat", False, chunk({"reasoning_content": "t"}), chunk({"content": "x"}))
    assert [o["message"]["content"] for o in out] == ["x", ""]


def test_stream_collects_tool_call_pieces_into_one_object() -> None:
    first = {"index": 0, "id": "c1", "function": {"name": "weather", "arguments": '{"ci'}}
    out = translate(
        "chat",
        None,
        chunk({"tool_calls": [first]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"name": "time", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
    )
    assert out[0]["message"]["tool_calls"] == [
        {"function": {"index": 0, "name": "weather", "arguments": {"city": "Oslo"}}},
        {"function": {"index": 1, "name": "time", "arguments": {}}},
    ]
    assert out[0]["done"] is False
    assert out[1]["done"] is True
    assert out[1]["done_reason"] == "stop"


def test_generate_stream_from_chat_and_from_completions() -> None:
    out = translate("generate", True, chunk({"reasoning_content": "r"}), chunk({"content": "a"}))
    assert [(o["response"], o.get("thinking")) for o in out] == [("", "r"), ("a", None), ("", None)]
    raw = translate("generate", None, {"choices": [{"text": "t", "finish_reason": "length"}]})
    assert [o["response"] for o in raw] == ["t", ""]
    assert raw[-1]["done_reason"] == "length"


def test_an_upstream_error_event_ends_the_stream_with_an_error_line() -> None:
    out = translate("chat", None, chunk({"content": "a"}), {"error": {"message": "boom"}})
    assert out[-1] == {"error": "boom"}
    assert all("done_reason" not in o for o in out)


def test_ndjson_is_one_compact_line_per_object() -> None:
    assert ndjson([{"a": 1}, {"b": [1, 2]}]) == b'{"a":1}\n{"b":[1,2]}\n'


@given(
    pieces=st.lists(st.text(max_size=8), max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=20),
)
def test_streamed_text_survives_any_chunking(pieces: list[str], cuts: list[int]) -> None:
    """However the upstream splits its text and its bytes, the NDJSON says the same."""
    data = sse(*[chunk({"content": p}) for p in pieces], chunk({}, "stop"), "[DONE]")
    decoder, translator = SSEDecoder(), StreamTranslator("chat", "m", None)
    out: list[dict[str, Any]] = []
    at = 0
    for cut in [*cuts, len(data)]:
        for payload in decoder.feed(data[at : at + cut]):
            out += translator.payload(payload, WALL)
        at += cut
    for payload in decoder.close():
        out += translator.payload(payload, WALL)
    out += translator.finish(TIMING, WALL)
    assert "".join(o["message"]["content"] for o in out) == "".join(pieces)
    assert [o["done"] for o in out].count(True) == 1 and out[-1]["done"]
