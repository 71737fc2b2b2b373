"""The upstream's complete OpenAI answers → Ollama's JSON (pure).

Ollama reports durations in nanoseconds and counts in tokens:

* ``total_duration`` and ``load_duration`` are what modelswap measured for
  the request (:class:`Timing`): from its arrival to the end of the answer,
  and the model load it waited for (0 when the model was ready);
* ``prompt_eval_count`` / ``eval_count`` come from ``usage`` (or, failing
  that, llama-server's ``timings``); ``prompt_eval_duration`` /
  ``eval_duration`` from ``timings`` (absent upstream: left out).

``done_reason`` is the OpenAI ``finish_reason`` where Ollama has the same word
(``stop``, ``length``); a tool call ends with ``stop``, as Ollama's does.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Timing:
    """What the route measured, in nanoseconds."""

    total_ns: int = 0
    load_ns: int = 0


def created_at(wall: float) -> str:
    """Ollama's ``created_at``: an RFC 3339 UTC timestamp."""
    stamp = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    return stamp.isoformat().replace("+00:00", "Z")


def done_reason(finish_reason: Any) -> str:
    if finish_reason in (None, "", "tool_calls", "function_call"):
        return "stop"
    return str(finish_reason)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def usage_fields(usage: Any, timings: Any) -> JsonDict:
    """Token counts and model-side durations from ``usage`` / ``timings``."""
    usage = usage if isinstance(usage, dict) else {}
    timings = timings if isinstance(timings, dict) else {}
    fields: JsonDict = {}
    prompt = _int(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = _int(timings.get("prompt_n"))
    if prompt is not None:
        fields["prompt_eval_count"] = prompt
    prompt_ms = timings.get("prompt_ms")
    if _int(prompt_ms) is not None:
        fields["prompt_eval_duration"] = int(prompt_ms * 1_000_000)
    completion = _int(usage.get("completion_tokens"))
    if completion is None:
        completion = _int(timings.get("predicted_n"))
    if completion is not None:
        fields["eval_count"] = completion
    predicted_ms = timings.get("predicted_ms")
    if _int(predicted_ms) is not None:
        fields["eval_duration"] = int(predicted_ms * 1_000_000)
    return fields


def done_fields(reason: str, timing: Timing, usage: Any, timings: Any) -> JsonDict:
    """The fields of Ollama's last (``done: true``) object."""
    return {
        "done": True,
        "done_reason": reason,
        "total_duration": timing.total_ns,
        "load_duration": timing.load_ns,
        **usage_fields(usage, timings),
    }


def tool_arguments(text: Any) -> JsonDict:
    """OpenAI's argument string → Ollama's argument object (unparsable: empty)."""
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if isinstance(text, str) and text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def ollama_tool_calls(calls: Any) -> list[JsonDict]:
    """OpenAI ``tool_calls`` → Ollama's (``function.arguments`` an object, with an index)."""
    mapped: list[JsonDict] = []
    for i, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        mapped.append(
            {
                "function": {
                    "index": i,
                    "name": str(function.get("name") or ""),
                    "arguments": tool_arguments(function.get("arguments")),
                }
            }
        )
    return mapped


def assistant_message(message: Mapping[str, Any], think: Any) -> JsonDict:
    """An OpenAI assistant message (or a stream's accumulated one) → Ollama's."""
    out: JsonDict = {"role": "assistant", "content": message.get("content") or ""}
    thinking = message.get("reasoning_content") or message.get("reasoning")
    if thinking and think is not False:
        out["thinking"] = thinking
    calls = ollama_tool_calls(message.get("tool_calls"))
    if calls:
        out["tool_calls"] = calls
    return out


def _first_choice(payload: Mapping[str, Any]) -> JsonDict:
    choices = payload.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def chat_response(
    payload: Mapping[str, Any], model: str, think: Any, timing: Timing, wall: float
) -> JsonDict:
    """A ``chat.completion`` → ``/api/chat``'s answer."""
    choice = _first_choice(payload)
    message = choice.get("message")
    return {
        "model": model,
        "created_at": created_at(wall),
        "message": assistant_message(message if isinstance(message, dict) else {}, think),
        **done_fields(
            done_reason(choice.get("finish_reason")),
            timing,
            payload.get("usage"),
            payload.get("timings"),
        ),
    }


def generate_response(
    payload: Mapping[str, Any], model: str, think: Any, timing: Timing, wall: float
) -> JsonDict:
    """A ``chat.completion`` or ``text_completion`` → ``/api/generate``'s answer."""
    choice = _first_choice(payload)
    message = choice.get("message")
    out: JsonDict = {"model": model, "created_at": created_at(wall)}
    if isinstance(message, dict):
        mapped = assistant_message(message, think)
        out["response"] = mapped["content"]
        if "thinking" in mapped:
            out["thinking"] = mapped["thinking"]
    else:
        out["response"] = str(choice.get("text") or "")
    reason = done_reason(choice.get("finish_reason"))
    out.update(done_fields(reason, timing, payload.get("usage"), payload.get("timings")))
    return out


def _vectors(payload: Mapping[str, Any]) -> list[list[float]]:
    data = payload.get("data")
    items = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
    items.sort(key=lambda item: item.get("index", 0))
    return [list(item.get("embedding") or []) for item in items]


def embed_response(payload: Mapping[str, Any], model: str, timing: Timing) -> JsonDict:
    """An OpenAI embeddings list → ``/api/embed``'s answer."""
    out: JsonDict = {
        "model": model,
        "embeddings": _vectors(payload),
        "total_duration": timing.total_ns,
        "load_duration": timing.load_ns,
    }
    usage = payload.get("usage")
    if isinstance(usage, dict) and _int(usage.get("prompt_tokens")) is not None:
        out["prompt_eval_count"] = int(usage["prompt_tokens"])
    return out


def embeddings_response(payload: Mapping[str, Any]) -> JsonDict:
    """An OpenAI embeddings list → the older ``/api/embeddings``'s ``{"embedding": [...]}``."""
    vectors = _vectors(payload)
    return {"embedding": vectors[0] if vectors else []}


def load_response(kind: str, model: str, wall: float, *, unload: bool) -> JsonDict:
    """The answer to a request that only loads (or, with ``keep_alive: 0``, unloads)."""
    reason = "unload" if unload else "load"
    if kind == "embed":
        return {"model": model, "embeddings": []}
    if kind == "embeddings":
        return {"embedding": []}
    out: JsonDict = {"model": model, "created_at": created_at(wall)}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update({"done": True, "done_reason": reason})
    return out


def error_message(body: bytes, status: int) -> str:
    """The message of an upstream error body (OpenAI, llama-server or plain text)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(payload.get("message"), str):
            return str(payload["message"])
    return text or f"upstream answered {status}"
