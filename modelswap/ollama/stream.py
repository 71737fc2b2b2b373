"""The upstream's OpenAI SSE stream → Ollama's NDJSON objects (pure, incremental).

:class:`SSEDecoder` turns body chunks into ``data:`` payloads however the
bytes were split. :class:`StreamTranslator` turns each payload into zero or
more Ollama objects and, at the end, the final ``done: true`` object:

* content and ``reasoning_content`` deltas become one object each
  (``message.content`` / ``message.thinking`` for chat, ``response`` /
  ``thinking`` for generate);
* tool-call deltas are collected (OpenAI streams argument text in pieces)
  and sent whole, in one object, when the stream ends — Ollama sends a tool
  call only once it is complete;
* ``usage`` and llama-server's ``timings`` (on whichever chunk carries them)
  fill the counts and durations of the final object;
* an upstream ``error`` event becomes Ollama's ``{"error": "..."}`` line,
  which the official clients raise.
"""

from __future__ import annotations

import json
from typing import Any

from modelswap.ollama.response import (
    JsonDict,
    Timing,
    assistant_message,
    created_at,
    done_fields,
    done_reason,
)


class SSEDecoder:
    """Bytes in, complete ``data:`` payloads out (multi-line data joined with newlines)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        payloads: list[str] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return payloads
            line = self._buffer[:end].rstrip(b"\r").decode("utf-8", "replace")
            self._buffer = self._buffer[end + 1 :]
            if not line:
                if self._data:
                    payloads.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)

    def close(self) -> list[str]:
        """Whatever a stream that ended without its last blank line still held."""
        payloads = self.feed(b"\n\n") if self._buffer else []
        if self._data:
            payloads.append("\n".join(self._data))
            self._data = []
        return payloads


class StreamTranslator:
    """One streamed answer's translation; ``kind`` is ``chat`` or ``generate``."""

    def __init__(self, kind: str, model: str, think: Any) -> None:
        self.kind = kind
        self.model = model
        self.think = think
        self.finish_reason: Any = None
        self.usage: Any = None
        self.timings: Any = None
        self.failed = False
        self._calls: dict[int, JsonDict] = {}

    def payload(self, data: str, wall: float) -> list[JsonDict]:
        """The Ollama objects one SSE ``data:`` payload yields."""
        if data.strip() == "[DONE]" or self.failed:
            return []
        try:
            event = json.loads(data)
        except ValueError:
            return []
        if not isinstance(event, dict):
            return []
        if "error" in event:
            self.failed = True
            return [{"error": _error_text(event["error"])}]
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if isinstance(event.get("timings"), dict):
            self.timings = event["timings"]
        out: list[JsonDict] = []
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._collect_calls(delta.get("tool_calls"))
                piece = self._piece(delta.get("content"), _thinking(delta), wall)
            else:  # /v1/completions streams text, not deltas
                piece = self._piece(choice.get("text"), None, wall)
            if piece is not None:
                out.append(piece)
        return out

    def finish(self, timing: Timing, wall: float) -> list[JsonDict]:
        """The objects that end the stream: collected tool calls, then ``done: true``."""
        if self.failed:
            return []
        out: list[JsonDict] = []
        if self._calls:
            calls = [self._calls[i] for i in sorted(self._calls)]
            message = assistant_message({"tool_calls": calls}, self.think)
            out.append(self._object({"message": message}, wall))
        if self.kind == "chat":
            empty: JsonDict = {"message": {"role": "assistant", "content": ""}}
        else:
            empty = {"response": ""}
        last = self._object(empty, wall)
        reason = done_reason(self.finish_reason)
        last.update(done_fields(reason, timing, self.usage, self.timings))
        out.append(last)
        return out

    # --- helpers ---------------------------------------------------------------------

    def _object(self, fields: JsonDict, wall: float) -> JsonDict:
        return {"model": self.model, "created_at": created_at(wall), **fields, "done": False}

    def _piece(self, content: Any, thinking: Any, wall: float) -> JsonDict | None:
        text = content if isinstance(content, str) else ""
        thought = thinking if isinstance(thinking, str) and self.think is not False else ""
        if not text and not thought:
            return None
        if self.kind == "chat":
            message: JsonDict = {"role": "assistant", "content": text}
            if thought:
                message["thinking"] = thought
            return self._object({"message": message}, wall)
        fields: JsonDict = {"response": text}
        if thought:
            fields["thinking"] = thought
        return self._object(fields, wall)

    def _collect_calls(self, deltas: Any) -> None:
        for position, delta in enumerate(deltas if isinstance(deltas, list) else ()):
            if not isinstance(delta, dict):
                continue
            index = delta.get("index", position)
            index = index if isinstance(index, int) else position
            call = self._calls.setdefault(index, {"function": {"name": "", "arguments": ""}})
            function = delta.get("function")
            if isinstance(function, dict):
                if function.get("name"):
                    call["function"]["name"] += str(function["name"])
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    call["function"]["arguments"] += arguments
                elif isinstance(arguments, dict):
                    call["function"]["arguments"] = json.dumps(arguments)


def _thinking(delta: JsonDict) -> Any:
    return delta.get("reasoning_content") or delta.get("reasoning")


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    return str(error)


def ndjson(objects: list[JsonDict]) -> bytes:
    """Objects as NDJSON lines."""
    return b"".join(json.dumps(obj, separators=(",", ":")).encode() + b"\n" for obj in objects)
