"""Pure builders for the JSON shapes the fake upstream answers with.

Kept apart from the HTTP code so the shapes can be read (and unit-tested) as
plain data: every function here takes what it needs as arguments and returns
dicts or bytes. Nothing reads a clock except through the ``created`` argument,
and nothing does I/O.

The shapes follow what the real servers send closely enough that the official
``openai`` and ``anthropic`` SDKs parse them, and that the proxy's usage
parser (spec server.md §16) finds ``usage`` and llama-server ``timings``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any

JsonDict = dict[str, Any]
Frame = tuple[str | None, JsonDict]  # one SSE event: (``event:`` name or None, data)

# Deterministic speeds so metric tests can assert exact rates.
PROMPT_PER_SECOND = 1000.0
PREDICTED_PER_SECOND = 100.0

# A valid 1x1 transparent PNG: what /v1/images/generations returns.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


_METADATA_KEYS = frozenset({"role", "type", "name", "id", "tool_call_id", "cache_control"})


def split_text(text: str, parts: int) -> list[str]:
    """Split ``text`` into ``parts`` pieces that join back to exactly ``text``.

    One piece per SSE chunk, so stream tests can check both the chunk count and
    the reassembled text. Pieces may be empty when ``parts > len(text)``.
    """
    parts = max(parts, 1)
    n = len(text)
    return [text[i * n // parts : (i + 1) * n // parts] for i in range(parts)]


def count_words(value: Any) -> int:
    """A stand-in tokenizer: whitespace words in the strings inside ``value``.

    Dict keys that are metadata rather than text (``role``, ``type``…) are
    skipped, so ``[{"role": "user", "content": "hi"}]`` is 1 token.
    Deterministic and cheap; at least 1 so rates never divide by zero.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item.split())
        elif isinstance(item, dict):
            stack.extend(v for k, v in item.items() if k not in _METADATA_KEYS)
        elif isinstance(item, list):
            stack.extend(item)
    return max(total, 1)


def usage_openai(prompt_n: int, completion_n: int) -> JsonDict:
    return {
        "prompt_tokens": prompt_n,
        "completion_tokens": completion_n,
        "total_tokens": prompt_n + completion_n,
    }


def timings(prompt_n: int, predicted_n: int) -> JsonDict:
    """llama-server's ``timings`` block with fixed per-second rates."""
    prompt_ms = prompt_n * 1000.0 / PROMPT_PER_SECOND
    predicted_ms = predicted_n * 1000.0 / PREDICTED_PER_SECOND
    return {
        "cache_n": 0,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": 1000.0 / PROMPT_PER_SECOND,
        "prompt_per_second": PROMPT_PER_SECOND,
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": 1000.0 / PREDICTED_PER_SECOND,
        "predicted_per_second": PREDICTED_PER_SECOND,
    }


# --- OpenAI chat / completions ---------------------------------------------------


def chat_completion(
    rid: str,
    model: str,
    created: int,
    text: str,
    prompt_n: int,
    completion_n: int,
    extras: JsonDict | None = None,
) -> JsonDict:
    extras = extras or {}
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fake-upstream",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, **extras},
                "logprobs": None,
                "finish_reason": "tool_calls" if "tool_calls" in extras else "stop",
            }
        ],
        "usage": usage_openai(prompt_n, completion_n),
        "timings": timings(prompt_n, completion_n),
    }


def chat_extras(body: JsonDict, model: str, text: str) -> tuple[str, JsonDict]:
    """What a chat request asks beyond plain text: ``(content, extra message fields)``.

    ``response_format`` json → the content is a JSON object; ``tools`` (unless
    the last message is a tool result) → one call of the first tool, with the
    model id as argument; ``chat_template_kwargs.enable_thinking`` →
    ``reasoning_content``. The stream sends the extras as their own deltas.
    """
    extras: JsonDict = {}
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        text = json.dumps({"model_id": model, "text": text})
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and kwargs.get("enable_thinking") is True:
        extras["reasoning_content"] = f"thinking as {model}"
    tools, messages = body.get("tools"), body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else {}
    if isinstance(tools, list) and tools and isinstance(last, dict) and last.get("role") != "tool":
        name = (
            str((tools[0].get("function") or {}).get("name", ""))
            if isinstance(tools[0], dict)
            else ""
        )
        arguments = json.dumps({"model_id": model})
        call = {
            "id": "call_fake",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        extras["tool_calls"] = [call]
        text = ""
    return text, extras


def chat_chunk(rid: str, model: str, created: int, delta: JsonDict, finish: str | None) -> JsonDict:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fake-upstream",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def text_completion(
    rid: str, model: str, created: int, text: str, prompt_n: int, completion_n: int
) -> JsonDict:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage_openai(prompt_n, completion_n),
        "timings": timings(prompt_n, completion_n),
    }


def text_chunk(rid: str, model: str, created: int, text: str, finish: str | None) -> JsonDict:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def models_list(model: str, created: int) -> JsonDict:
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": created, "owned_by": "fake-upstream"}],
    }


# --- embeddings and rerank ------------------------------------------------------


def embedding_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit-range vector derived from sha256 of the text.

    Same text → same vector, across runs and processes, so tests can compare.
    """
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend(round(b / 127.5 - 1.0, 6) for b in digest)
        counter += 1
    return out[:dims]


def encode_vector(vector: list[float], encoding_format: str) -> list[float] | str:
    """``base64`` is float32 little-endian, as OpenAI sends (and the SDK asks for)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embeddings(model: str, inputs: list[str], dims: int, encoding_format: str) -> JsonDict:
    prompt_n = sum(count_words(t) for t in inputs)
    return {
        "object": "list",
        "model": model,
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": encode_vector(embedding_vector(t, dims), encoding_format),
            }
            for i, t in enumerate(inputs)
        ],
        "usage": {"prompt_tokens": prompt_n, "total_tokens": prompt_n},
    }


def rerank(model: str, query: str, documents: list[str], top_n: int | None) -> JsonDict:
    """Score = share of query words found in the document; ties keep input order."""
    words = set(query.lower().split())
    scored = []
    for i, doc in enumerate(documents):
        hits = len(words & set(doc.lower().split()))
        scored.append((hits / len(words) if words else 0.0, i, doc))
    scored.sort(key=lambda s: (-s[0], s[1]))
    if top_n is not None:
        scored = scored[:top_n]
    prompt_n = count_words(query) + sum(count_words(d) for d in documents)
    return {
        "object": "list",
        "model": model,
        "usage": {"prompt_tokens": prompt_n, "total_tokens": prompt_n},
        "results": [
            {"index": i, "relevance_score": score, "document": {"text": doc}}
            for score, i, doc in scored
        ],
    }


# --- Anthropic messages ---------------------------------------------------------


def anthropic_message(
    rid: str, model: str, text: str | None, input_n: int, output_n: int
) -> JsonDict:
    """A full message; ``text=None`` gives the empty shell used in message_start."""
    return {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [] if text is None else [{"type": "text", "text": text}],
        "stop_reason": None if text is None else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_n,
            "output_tokens": output_n,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def anthropic_stream_events(rid: str, model: str, pieces: list[str], input_n: int) -> list[Frame]:
    """The event sequence of a streamed message, as ``(event name, data)`` pairs."""
    events: list[Frame] = [
        (
            "message_start",
            {"type": "message_start", "message": anthropic_message(rid, model, None, input_n, 1)},
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for piece in pieces:
        delta = {"type": "text_delta", "text": piece}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


# --- llama-server native ---------------------------------------------------------


def llama_completion(
    model: str, content: str, prompt_n: int, predicted_n: int, *, stop: bool
) -> JsonDict:
    """llama-server ``/completion`` answer; the final one carries ``timings``."""
    body: JsonDict = {"content": content, "id_slot": 0, "stop": stop, "model": model}
    if stop:
        body.update(
            stop_type="eos",
            tokens_evaluated=prompt_n,
            tokens_predicted=predicted_n,
            timings=timings(prompt_n, predicted_n),
        )
    return body


def props(model: str) -> JsonDict:
    return {
        "default_generation_settings": {"n_ctx": 4096, "model": model},
        "total_slots": 1,
        "model_path": f"/models/{model}.gguf",
        "chat_template": "{{ messages }}",
        "build_info": "fake-upstream",
    }


# --- OpenAI Responses -------------------------------------------------------------


def response_object(
    rid: str, model: str, created: int, text: str | None, input_n: int, output_n: int
) -> JsonDict:
    """A Responses API object; ``text=None`` is the in-progress shell."""
    output: list[JsonDict] = []
    if text is not None:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        output.append(
            {
                "type": "message",
                "id": f"msg_{rid}",
                "status": "completed",
                "role": "assistant",
                "content": content,
            }
        )
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": "in_progress" if text is None else "completed",
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None
        if text is None
        else {
            "input_tokens": input_n,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_n,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_n + output_n,
        },
    }


def speech_bytes(text: str, model: str) -> bytes:
    """Not real audio: an ID3 tag followed by the input, so tests can see what was spoken."""
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + f"{model}:{text}".encode()


# --- stream event sequences --------------------------------------------------------
# Each returns frames; the server adds the who-served-what fields and the
# optional ``[DONE]`` terminator.


def chat_stream(
    rid: str,
    model: str,
    created: int,
    pieces: list[str],
    prompt_n: int,
    include_usage: bool,
    extras: JsonDict | None = None,
) -> list[Frame]:
    """Content chunks, a finish chunk, then (``include_usage``) a usage chunk with
    no choices. llama-server puts ``timings`` on whichever chunk comes last.
    ``extras`` (:func:`chat_extras`): reasoning first, a tool call's arguments in
    two pieces last, as servers stream them."""
    extras = extras or {}
    frames: list[Frame] = []
    if "reasoning_content" in extras:
        delta = {"role": "assistant", "reasoning_content": extras["reasoning_content"]}
        frames.append((None, chat_chunk(rid, model, created, delta, None)))
    for i, piece in enumerate(pieces):
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        frames.append((None, chat_chunk(rid, model, created, delta, None)))
    for call in extras.get("tool_calls", ()):
        start, rest = split_text(call["function"]["arguments"], 2)
        first = {
            **call,
            "index": 0,
            "function": {"name": call["function"]["name"], "arguments": start},
        }
        for delta in (
            {"tool_calls": [first]},
            {"tool_calls": [{"index": 0, "function": {"arguments": rest}}]},
        ):
            frames.append((None, chat_chunk(rid, model, created, delta, None)))
    finish = "tool_calls" if "tool_calls" in extras else "stop"
    frames.append((None, chat_chunk(rid, model, created, {}, finish)))
    if include_usage:
        tail = chat_chunk(rid, model, created, {}, None)
        frames.append((None, {**tail, "choices": [], "usage": usage_openai(prompt_n, len(pieces))}))
    frames[-1][1]["timings"] = timings(prompt_n, len(pieces))
    return frames


def completion_stream(
    rid: str, model: str, created: int, pieces: list[str], prompt_n: int, include_usage: bool
) -> list[Frame]:
    frames: list[Frame] = [(None, text_chunk(rid, model, created, p, None)) for p in pieces]
    frames.append((None, text_chunk(rid, model, created, "", "stop")))
    if include_usage:
        tail = text_chunk(rid, model, created, "", None)
        frames.append((None, {**tail, "choices": [], "usage": usage_openai(prompt_n, len(pieces))}))
    frames[-1][1]["timings"] = timings(prompt_n, len(pieces))
    return frames


def llama_stream(model: str, pieces: list[str], prompt_n: int) -> list[Frame]:
    """llama-server native stream: no ``[DONE]``; the last frame has ``stop: true``."""
    n = len(pieces)
    frames: list[Frame] = [
        (None, llama_completion(model, p, prompt_n, n, stop=False)) for p in pieces
    ]
    frames.append((None, llama_completion(model, "", prompt_n, n, stop=True)))
    return frames


def responses_stream(
    rid: str, model: str, created: int, pieces: list[str], input_n: int
) -> list[Frame]:
    """created → output_text.delta × n → completed (whose ``response.usage`` counts)."""
    shell = response_object(rid, model, created, None, input_n, 0)
    final = response_object(rid, model, created, "".join(pieces), input_n, len(pieces))
    frames: list[Frame] = [("response.created", {"type": "response.created", "response": shell})]
    for piece in pieces:
        delta = {
            "type": "response.output_text.delta",
            "item_id": f"msg_{rid}",
            "output_index": 0,
            "content_index": 0,
            "delta": piece,
        }
        frames.append(("response.output_text.delta", delta))
    frames.append(("response.completed", {"type": "response.completed", "response": final}))
    for seq, (_, data) in enumerate(frames):
        data["sequence_number"] = seq
    return frames
