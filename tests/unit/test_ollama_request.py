"""Ollama requests → OpenAI bodies (modelswap.ollama.request), table-driven, no server."""

from __future__ import annotations

import base64
import math
from typing import Any

import pytest

from modelswap.ollama.request import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    FOREVER,
    OllamaRequestError,
    chat_call,
    chat_messages,
    embed_call,
    embeddings_call,
    generate_call,
    image_url,
    map_options,
    model_field,
    parse_body,
    parse_keep_alive,
    response_format,
    streaming,
    think_fields,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 20).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 20).decode()
WEBP = base64.b64encode(b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 20).decode()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        (0, 0.0),
        ("0", 0.0),
        ("0s", 0.0),
        (300, 300.0),
        (1.5, 1.5),
        ("300", 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        (-1, FOREVER),
        ("-1m", FOREVER),
        ("-1", FOREVER),
    ],
)
def test_keep_alive_durations(value: Any, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", True, [1], {"m": 5}, "nan"])
def test_keep_alive_rejects_what_is_not_a_duration(value: Any) -> None:
    with pytest.raises(OllamaRequestError, match="keep_alive: invalid duration"):
        parse_keep_alive(value)


@pytest.mark.parametrize(
    ("options", "fields", "ignored"),
    [
        (None, {}, ()),
        ({}, {}, ()),
        (
            {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "seed": 7, "repeat_penalty": 1.1},
            {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "seed": 7, "repeat_penalty": 1.1},
            (),
        ),
        ({"num_predict": 64}, {"max_tokens": 64}, ()),
        ({"num_predict": -1}, {}, ()),  # unlimited: no max_tokens
        ({"num_predict": -2}, {}, ()),  # fill the context: no max_tokens
        ({"num_keep": 5}, {"n_keep": 5}, ()),
        ({"stop": ["\n", "END"]}, {"stop": ["\n", "END"]}, ()),
        ({"stop": "END"}, {"stop": ["END"]}, ()),
        ({"min_p": 0.05, "mirostat": 2}, {"min_p": 0.05, "mirostat": 2}, ()),  # passed through
        (
            {"num_ctx": 8192, "num_gpu": 99, "temperature": 1},
            {"temperature": 1},
            ("num_ctx", "num_gpu"),
        ),
        ({"seed": None}, {}, ()),
    ],
)
def test_options(options: Any, fields: dict[str, Any], ignored: tuple[str, ...]) -> None:
    assert map_options(options) == (fields, ignored)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([1], "options: expected an object"),
        ({"num_predict": "10"}, "options.num_predict: expected an integer"),
        ({"stop": [1]}, "options.stop: expected a list of strings"),
    ],
)
def test_bad_options(options: Any, message: str) -> None:
    with pytest.raises(OllamaRequestError, match=message):
        map_options(options)


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("json", {"type": "json_object"}),
        (SCHEMA, {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}}),
    ],
)
def test_format(value: Any, expected: Any) -> None:
    assert response_format(value) == expected


def test_format_rejects_other_values() -> None:
    with pytest.raises(OllamaRequestError, match='format: expected "json" or a JSON schema'):
        response_format("yaml")


@pytest.mark.parametrize(
    ("value", "fields"),
    [
        (None, {}),
        (True, {"chat_template_kwargs": {"enable_thinking": True}}),
        (False, {"chat_template_kwargs": {"enable_thinking": False}}),
        ("high", {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "high"}),
    ],
)
def test_think(value: Any, fields: dict[str, Any]) -> None:
    assert think_fields(value) == fields


def test_think_rejects_unknown_levels() -> None:
    with pytest.raises(OllamaRequestError, match="think: expected true, false"):
        think_fields("extreme")


@pytest.mark.parametrize(
    ("data", "mime"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp")],
)
def test_images_become_data_urls_with_their_type(data: str, mime: str) -> None:
    assert image_url(data) == {
        "type": "image_url",
        "image_url": {"url": f"data:{mime};base64,{data}"},
    }


def test_data_url_images_pass_as_they_are() -> None:
    url = "data:image/png;base64," + PNG
    assert image_url(url)["image_url"]["url"] == url


@pytest.mark.parametrize("data", ["", "***not base64***", 5])
def test_bad_images(data: Any) -> None:
    with pytest.raises(OllamaRequestError, match="images"):
        image_url(data)


def test_messages_with_images_tool_calls_and_results() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is this?", "images": [PNG]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "time", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "12:00", "tool_name": "time"},
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]
    assert chat_messages(messages) == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        },
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "content": "12:00", "tool_call_id": "call_1"},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_0"},
    ]


def test_a_tool_result_without_a_name_answers_the_oldest_open_call() -> None:
    messages = [
        {"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": {}}}]},
        {"role": "tool", "content": "x"},
        {"role": "tool", "content": "y"},
    ]
    ids = [m.get("tool_call_id") for m in chat_messages(messages)]
    assert ids == [None, "call_0", "call_1"]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("hi", "messages: expected a list"),
        (["hi"], r"messages\[0\]: expected an object with a role"),
        ([{"role": "user", "content": 5}], r"messages\[0\].content: expected a string"),
        ([{"role": "user", "images": "x"}], r"messages\[0\].images: expected a list"),
        ([{"role": "assistant", "tool_calls": [{}]}], r"each needs function.name"),
    ],
)
def test_bad_messages(messages: Any, message: str) -> None:
    with pytest.raises(OllamaRequestError, match=message):
        chat_messages(messages)


def test_chat_call_streams_by_default_and_asks_for_usage() -> None:
    call = chat_call(
        {
            "model": "qwen3:latest",
            "messages": [{"role": "user", "content": "hi"}],
            "options": {"num_predict": 10, "num_ctx": 4096},
            "format": "json",
            "think": False,
            "tools": [{"type": "function", "function": {"name": "f"}}],
        },
        "qwen3",
    )
    assert call.path == CHAT_PATH
    assert call.stream
    assert not call.load_only
    assert call.ignored == ("num_ctx",)
    assert call.think is False
    assert call.body == {
        "model": "qwen3",
        "max_tokens": 10,
        "response_format": {"type": "json_object"},
        "chat_template_kwargs": {"enable_thinking": False},
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }


def test_chat_without_messages_only_loads() -> None:
    call = chat_call({"model": "m", "stream": False}, "m")
    assert call.load_only
    assert call.body["stream"] is False
    assert "stream_options" not in call.body


def test_generate_uses_chat_with_system_and_images() -> None:
    call = generate_call(
        {"model": "m", "prompt": "describe", "system": "sys", "images": [JPEG], "stream": False},
        "m",
    )
    assert call.path == CHAT_PATH
    assert call.kind == "generate"
    assert call.body["messages"] == [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
            ],
        },
    ]


def test_raw_generate_uses_completions_and_ignores_templates() -> None:
    call = generate_call(
        {"model": "m", "prompt": "<s>x", "raw": True, "template": "{{ .Prompt }}", "context": [1]},
        "m",
    )
    assert call.path == COMPLETIONS_PATH
    assert call.body["prompt"] == "<s>x"
    assert "messages" not in call.body
    assert call.ignored == ("template", "context")


def test_generate_with_an_empty_prompt_only_loads() -> None:
    assert generate_call({"model": "m"}, "m").load_only
    assert not generate_call({"model": "m", "images": [PNG]}, "m").load_only


@pytest.mark.parametrize(
    ("value", "inputs"),
    [("one", ["one"]), (["a", "b"], ["a", "b"]), ([], [])],
)
def test_embed(value: Any, inputs: list[str]) -> None:
    call = embed_call({"model": "e", "input": value, "dimensions": 4, "truncate": True}, "e")
    assert call.path == EMBEDDINGS_PATH
    assert not call.stream
    assert call.load_only == (not inputs)
    assert call.body == {"model": "e", "input": inputs, "encoding_format": "float", "dimensions": 4}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": 5}, "input: expected a string or a list of strings"),
        ({"input": "x", "dimensions": 0}, "dimensions: expected a positive integer"),
    ],
)
def test_bad_embed(body: dict[str, Any], message: str) -> None:
    with pytest.raises(OllamaRequestError, match=message):
        embed_call(body, "e")


def test_legacy_embeddings() -> None:
    call = embeddings_call({"model": "e", "prompt": "hi"}, "e")
    assert call.kind == "embeddings"
    assert call.body["input"] == ["hi"]
    assert embeddings_call({"model": "e"}, "e").load_only


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "missing request body"),
        (b"{bad", "invalid JSON body"),
        (b"[1]", "expected an object"),
        (b"[" * 100000, "invalid JSON body"),
    ],
)
def test_bodies_that_are_not_objects(data: bytes, message: str) -> None:
    with pytest.raises(OllamaRequestError, match=message):
        parse_body(data)


def test_model_field_and_stream_flag() -> None:
    assert model_field({"model": "a"}) == "a"
    assert model_field({"name": "b"}) == "b"  # older clients
    with pytest.raises(OllamaRequestError, match="model is required"):
        model_field({})
    assert streaming({}) is True
    assert streaming({"stream": False}) is False
    assert streaming({"stream": None}) is True  # Go's nil *bool: the default
    assert math.isinf(FOREVER)
