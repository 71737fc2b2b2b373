"""The fake upstream's HTTP mechanics: reading requests, writing responses, its event log.

:mod:`modelswap.testing.fake_upstream` decides *what* each endpoint answers;
this module holds *how* bytes come in and go out, the same for every endpoint:
a JSON or multipart body parsed into a :class:`Call` (an unreadable one is a
400, as a real server answers), a complete body written at once or in slow
pieces (``--slow-body``), SSE frames paced ``--chunk-interval`` apart, and
llama-server's keep-alive-then-close quirk (``--close-after-response``). Kept
apart so the endpoints read as payloads only, and so the wire behaviours tests
provoke are in one place.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from modelswap.testing.fake_shapes import JsonDict

__all__ = [
    "MAX_BODY",
    "SLOW_BODY_PIECES",
    "SSE_DONE",
    "BadRequest",
    "Call",
    "Endpoint",
    "EventLog",
    "Handler",
    "close_after_response",
    "form_call",
    "headers_dict",
    "include_usage",
    "json_call",
    "read_body",
    "send_bytes",
    "send_sse",
    "sse",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SLOW_BODY_PIECES = 4
MAX_BODY = 256 * 1024 * 1024  # audio uploads can be large
SSE_DONE = b"data: [DONE]\n\n"
_TRUE_STRINGS = frozenset({"true", "t", "1"})


class EventLog:
    """Append-only JSON lines, flushed one by one so a test can wait on them.

    A no-op without a path: the hot path then costs one attribute check.
    """

    def __init__(self, path: str | None) -> None:
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def emit(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class BadRequest(Exception):
    """The client sent something we cannot parse; answered with 400 JSON."""


@dataclass
class Call:
    """One inference request as an endpoint sees it (body already parsed)."""

    request: web.Request
    body: JsonDict
    model: Any  # the ``model`` value received, whatever its JSON type; None if absent

    @property
    def stream(self) -> bool:
        """Truthy like llama-swap reads it: true, non-zero number, "true"/"t"/"1"."""
        v = self.body.get("stream")
        if isinstance(v, str):
            return v.lower() in _TRUE_STRINGS
        return bool(v) and isinstance(v, bool | int | float)


Endpoint = Callable[[Call], Awaitable[web.StreamResponse]]


# --- reading ------------------------------------------------------------------------


async def read_body(request: web.BaseRequest) -> bytes:
    """The body; one that cannot be decoded (bad ``Content-Encoding``) is a 400, as a
    real server answers, not aiohttp's 500, which tests would blame on modelswap."""
    try:
        return await request.read()
    except RequestPayloadError as exc:
        raise BadRequest(f"unreadable body: {' '.join(str(exc).split())}") from None


async def json_call(request: web.Request) -> Call:
    raw = await read_body(request)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise BadRequest(f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("JSON body must be an object")
    return Call(request, body, body.get("model"))


async def form_call(request: web.Request) -> Call:
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("expected multipart/form-data")
    try:
        form = await request.post()
    except RequestPayloadError as exc:
        raise BadRequest(f"unreadable body: {exc}") from None
    body: JsonDict = {}
    for key, value in form.items():
        if isinstance(value, web.FileField):
            size = len(value.file.read())
            body[key] = {"filename": value.filename, "size": size}
        elif isinstance(value, str):
            body[key] = value
    return Call(request, body, body.get("model"))


def headers_dict(request: web.BaseRequest) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def include_usage(body: JsonDict) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


# --- writing ------------------------------------------------------------------------


async def send_bytes(
    request: web.Request,
    data: bytes,
    content_type: str,
    headers: dict[str, str],
    *,
    slow_body: float,
) -> web.StreamResponse:
    """Write a complete body now; ``slow_body`` > 0 sends it in pieces that far apart."""
    if slow_body <= 0:
        resp = web.Response(body=data, content_type=content_type, headers=headers)
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    sresp = web.StreamResponse(headers=headers)
    sresp.content_type = content_type
    sresp.content_length = len(data)
    await sresp.prepare(request)
    n = len(data)
    for i in range(SLOW_BODY_PIECES):
        if i:
            await asyncio.sleep(slow_body)
        await sresp.write(data[i * n // SLOW_BODY_PIECES : (i + 1) * n // SLOW_BODY_PIECES])
    await sresp.write_eof()
    return sresp


def sse(data: JsonDict, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


async def send_sse(
    request: web.Request, headers: dict[str, str], frames: Sequence[bytes], *, interval: float
) -> web.StreamResponse:
    """Send ready-made SSE ``frames``, ``interval`` seconds apart.

    A write after the client left raises ConnectionError, which the fake's
    request wrapper logs as ``client_disconnected``.
    """
    resp = web.StreamResponse(headers=headers)
    resp.content_type = "text/event-stream"
    resp.headers["Cache-Control"] = "no-cache"
    await resp.prepare(request)
    for i, frame in enumerate(frames):
        if i and interval > 0:
            await asyncio.sleep(interval)
        await resp.write(frame)
    await resp.write_eof()
    return resp


@web.middleware
async def close_after_response(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer once per connection with keep-alive headers; drop it at the next request.

    llama-server closes a connection after a streamed response while still
    advertising keep-alive. A proxy that reuses the pooled connection then
    sees "server disconnected" on its next request; dropping the connection when
    that next request arrives reproduces the race deterministically.
    """
    transport = request.transport
    if transport is not None and getattr(transport, "_fake_answered", False):
        transport.close()
        raise web.HTTPServiceUnavailable()  # never written: the connection is gone
    response = await handler(request)
    if transport is not None:
        transport._fake_answered = True  # type: ignore[attr-defined]
    return response
