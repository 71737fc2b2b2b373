"""Ollama requests → the upstream's OpenAI-compatible request (pure).

Each ``*_call`` function takes the parsed Ollama body and the name to put in
the upstream body, and returns an :class:`UpstreamCall`: which upstream path,
the OpenAI body, whether it streams, and what the answer's translation needs
to know. Bad input raises :class:`OllamaRequestError` (400) with a message
naming the field.

Mapping decisions (docs/api.md, "Ollama API"):

* ``options``: sampling options go to the body under their llama-server /
  OpenAI names (``num_predict`` → ``max_tokens``, ``num_keep`` → ``n_keep``;
  ``num_predict`` ≤ 0 means "no limit" and is left out); options that only
  mean something when a model is *loaded* (``num_ctx``, ``num_gpu``…) are
  the model's ``cmd``'s business and are ignored (reported in ``ignored``
  for a debug log); any other option is passed through as is.
* ``format``: ``"json"`` → ``response_format: {"type": "json_object"}``, a
  JSON Schema → ``{"type": "json_schema", "json_schema": {"name", "schema"}}``.
* ``think``: ``true``/``false`` → ``chat_template_kwargs.enable_thinking``;
  ``"low"``/``"medium"``/``"high"`` → that plus ``reasoning_effort``.
* images (base64) → ``image_url`` content parts with a ``data:`` URL whose
  type is sniffed from the image's first bytes.
* tool calls get OpenAI ids (``call_<n>``), and a ``tool`` message answers
  the oldest unanswered call of its ``tool_name`` (else the oldest one).
* ``/api/generate`` with ``raw: true`` uses ``/v1/completions`` (no chat
  template); otherwise ``/v1/chat/completions`` with ``system`` and the
  prompt as messages. ``template``, ``context`` and ``suffix`` are ignored.
* An empty ``messages`` / ``prompt`` only loads the model (Ollama's "load"
  request): :attr:`UpstreamCall.load_only`, nothing is sent upstream.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from modelswap.config.schema_types import parse_duration
from modelswap.errors import ClientError

Kind = Literal["chat", "generate", "embed", "embeddings"]
JsonDict = dict[str, Any]

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"

RENAMED_OPTIONS = {"num_predict": "max_tokens", "num_keep": "n_keep"}
LOAD_OPTIONS = frozenset(
    {
        "numa",
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "num_thread",
        "num_gqa",
        "rope_frequency_base",
        "rope_frequency_scale",
    }
)
"""Options that configure loading a model: the model's ``cmd`` decides those here."""
THINK_LEVELS = ("low", "medium", "high")
FOREVER = math.inf
"""``keep_alive`` < 0: never unload."""

_IMAGE_MAGIC = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
)


class OllamaRequestError(ClientError):
    """An Ollama request that cannot be translated (400, like Ollama's own)."""


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """What to send upstream for one Ollama request, and how to translate the answer."""

    kind: Kind
    path: str
    body: JsonDict
    stream: bool
    think: bool | str | None = None
    load_only: bool = False
    ignored: tuple[str, ...] = field(default=())
    """Option names that were ignored (the caller logs them at debug level)."""


def parse_body(data: bytes) -> JsonDict:
    """The request's JSON object; 400 with the parser's reason otherwise."""
    if not data.strip():
        raise OllamaRequestError("missing request body")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply
        raise OllamaRequestError(f"invalid JSON body: {error}") from None
    if not isinstance(value, dict):
        raise OllamaRequestError("invalid JSON body: expected an object")
    return value


def model_field(req: Mapping[str, Any]) -> str:
    """The request's model name (``model``, or the older ``name``); 400 when missing."""
    name = req.get("model") or req.get("name")
    if not isinstance(name, str) or not name:
        raise OllamaRequestError("model is required")
    return name


def streaming(req: Mapping[str, Any]) -> bool:
    """Ollama streams unless ``stream`` is false (absent or null: it streams)."""
    return req.get("stream") is not False


def parse_keep_alive(value: Any) -> float | None:
    """``keep_alive`` in seconds: None when absent, :data:`FOREVER` when negative.

    A number is seconds; a string is a Go duration (``5m``, ``1h30m``, ``-1m``)
    or a plain number of seconds (``"0"``, ``"300"``).
    """
    if value is None or value == "":
        return None
    seconds: float | None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_duration(value.strip())
        if seconds is None:
            try:
                seconds = float(value)
            except ValueError:
                seconds = None
    else:
        seconds = None
    if seconds is None or math.isnan(seconds):
        raise OllamaRequestError(f"keep_alive: invalid duration {json.dumps(value)}")
    return FOREVER if seconds < 0 else seconds


def map_options(options: Any) -> tuple[JsonDict, tuple[str, ...]]:
    """``options`` → (OpenAI body fields, ignored option names)."""
    if options is None:
        return {}, ()
    if not isinstance(options, dict):
        raise OllamaRequestError("options: expected an object")
    fields: JsonDict = {}
    ignored: list[str] = []
    for name, value in options.items():
        if name in LOAD_OPTIONS:
            ignored.append(name)
        elif name == "num_predict":
            if not isinstance(value, int) or isinstance(value, bool):
                raise OllamaRequestError("options.num_predict: expected an integer")
            if value > 0:
                fields["max_tokens"] = value
        elif name == "stop":
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                raise OllamaRequestError("options.stop: expected a list of strings")
            fields["stop"] = stops
        elif value is not None:
            fields[RENAMED_OPTIONS.get(str(name), str(name))] = value
    return fields, tuple(ignored)


def response_format(value: Any) -> JsonDict | None:
    """``format`` → ``response_format`` (None when absent or empty)."""
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": value}}
    raise OllamaRequestError(f'format: expected "json" or a JSON schema, got {json.dumps(value)}')


def think_fields(value: Any) -> JsonDict:
    """``think`` → the fields that switch a llama-server chat template's thinking."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"chat_template_kwargs": {"enable_thinking": value}}
    if value in THINK_LEVELS:
        return {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": value}
    raise OllamaRequestError(
        f"think: expected true, false, or one of {', '.join(THINK_LEVELS)}; got {json.dumps(value)}"
    )


def image_url(data: Any) -> JsonDict:
    """A base64 image → an OpenAI ``image_url`` part (a data URL with a sniffed type)."""
    if not isinstance(data, str) or not data:
        raise OllamaRequestError("images: expected base64-encoded strings")
    if data.startswith("data:"):
        return {"type": "image_url", "image_url": {"url": data}}
    try:
        head = base64.b64decode(data[:16] + "=" * (-len(data[:16]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise OllamaRequestError("images: not valid base64") from None
    mime = "image/jpeg"
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            mime = kind
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        mime = "image/webp"
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def _content(text: Any, images: Any, where: str) -> str | list[JsonDict]:
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise OllamaRequestError(f"{where}.content: expected a string")
    if not images:
        return text
    if not isinstance(images, list):
        raise OllamaRequestError(f"{where}.images: expected a list")
    parts: list[JsonDict] = [{"type": "text", "text": text}] if text else []
    parts.extend(image_url(image) for image in images)
    return parts


class _ToolIds:
    """OpenAI tool-call ids for an Ollama conversation, which has none."""

    def __init__(self) -> None:
        self._next = 0
        self._open: list[tuple[str, str]] = []  # (id, function name), oldest first

    def call(self, name: str, given: Any) -> str:
        call_id = given if isinstance(given, str) and given else f"call_{self._next}"
        self._next += 1
        self._open.append((call_id, name))
        return call_id

    def answer(self, tool_name: Any, given: Any) -> str:
        if isinstance(given, str) and given:
            self._open = [entry for entry in self._open if entry[0] != given]
            return given
        for i, (call_id, name) in enumerate(self._open):
            if name == tool_name:
                del self._open[i]
                return call_id
        if self._open:
            return self._open.pop(0)[0]
        call_id = f"call_{self._next}"
        self._next += 1
        return call_id


def _tool_calls(calls: Any, ids: _ToolIds, where: str) -> list[JsonDict]:
    if not isinstance(calls, list):
        raise OllamaRequestError(f"{where}.tool_calls: expected a list")
    mapped: list[JsonDict] = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise OllamaRequestError(f"{where}.tool_calls: each needs function.name")
        arguments = function.get("arguments", {})
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        mapped.append(
            {
                "id": ids.call(function["name"], call.get("id")),
                "type": "function",
                "function": {"name": function["name"], "arguments": text},
            }
        )
    return mapped


def chat_messages(messages: Any) -> list[JsonDict]:
    """Ollama messages → OpenAI messages (images, tool calls and tool results included)."""
    if not isinstance(messages, list):
        raise OllamaRequestError("messages: expected a list")
    ids = _ToolIds()
    mapped: list[JsonDict] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise OllamaRequestError(f"{where}: expected an object with a role")
        role = message["role"]
        out: JsonDict = {
            "role": role,
            "content": _content(message.get("content"), message.get("images"), where),
        }
        if message.get("tool_calls"):
            out["tool_calls"] = _tool_calls(message["tool_calls"], ids, where)
        if role == "tool":
            out["tool_call_id"] = ids.answer(message.get("tool_name"), message.get("tool_call_id"))
        mapped.append(out)
    return mapped


def _common(req: Mapping[str, Any], name: str, stream: bool) -> tuple[JsonDict, tuple[str, ...]]:
    """The fields every chat/generate body gets: model, stream, options, format, think."""
    body: JsonDict = {"model": name}
    fields, ignored = map_options(req.get("options"))
    body.update(fields)
    fmt = response_format(req.get("format"))
    if fmt is not None:
        body["response_format"] = fmt
    body.update(think_fields(req.get("think")))
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body, ignored


def chat_call(req: Mapping[str, Any], name: str) -> UpstreamCall:
    """``/api/chat`` → ``/v1/chat/completions``."""
    stream = streaming(req)
    messages = chat_messages(req.get("messages") or [])
    body, ignored = _common(req, name, stream)
    body["messages"] = messages
    tools = req.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise OllamaRequestError("tools: expected a list")
        body["tools"] = tools
    return UpstreamCall(
        "chat", CHAT_PATH, body, stream, req.get("think"), load_only=not messages, ignored=ignored
    )


def generate_call(req: Mapping[str, Any], name: str) -> UpstreamCall:
    """``/api/generate`` → ``/v1/chat/completions`` (or ``/v1/completions`` when raw)."""
    stream = streaming(req)
    prompt = req.get("prompt") or ""
    images = req.get("images")
    if not isinstance(prompt, str):
        raise OllamaRequestError("prompt: expected a string")
    body, ignored = _common(req, name, stream)
    load_only = not prompt and not images
    ignored += tuple(key for key in ("template", "context", "suffix") if req.get(key))
    if req.get("raw"):
        body["prompt"] = prompt
        return UpstreamCall(
            "generate", COMPLETIONS_PATH, body, stream, req.get("think"), load_only, ignored
        )
    messages: list[JsonDict] = []
    system = req.get("system")
    if system:
        if not isinstance(system, str):
            raise OllamaRequestError("system: expected a string")
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": _content(prompt, images, "request")})
    body["messages"] = messages
    return UpstreamCall("generate", CHAT_PATH, body, stream, req.get("think"), load_only, ignored)


def embed_call(req: Mapping[str, Any], name: str) -> UpstreamCall:
    """``/api/embed`` → ``/v1/embeddings`` (never streamed)."""
    value = req.get("input")
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
        raise OllamaRequestError("input: expected a string or a list of strings")
    body: JsonDict = {"model": name, "input": inputs, "encoding_format": "float"}
    dimensions = req.get("dimensions")
    if dimensions is not None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise OllamaRequestError("dimensions: expected a positive integer")
        body["dimensions"] = dimensions
    _, ignored = map_options(req.get("options"))
    return UpstreamCall(
        "embed", EMBEDDINGS_PATH, body, False, load_only=not inputs, ignored=ignored
    )


def embeddings_call(req: Mapping[str, Any], name: str) -> UpstreamCall:
    """The older ``/api/embeddings`` (one ``prompt``) → ``/v1/embeddings``."""
    prompt = req.get("prompt") or ""
    if not isinstance(prompt, str):
        raise OllamaRequestError("prompt: expected a string")
    body: JsonDict = {"model": name, "input": [prompt], "encoding_format": "float"}
    _, ignored = map_options(req.get("options"))
    return UpstreamCall(
        "embeddings", EMBEDDINGS_PATH, body, False, load_only=not prompt, ignored=ignored
    )
