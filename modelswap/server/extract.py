"""Which model a request asks for (server spec §3), read once and kept for forwarding.

:func:`read_model_request` reads the body only when the content type says the
model is in it (JSON, multipart, URL-encoded form) and keeps the bytes in the
returned :class:`ModelRequest`, so the forwarder sends exactly what was read
(or a rewritten copy). Any other body is never read here: the forwarder
streams it straight from the client. :func:`extract_model` is the pure part,
tested without a server.

Decisions where the spec leaves room:

* **Malformed JSON keeps llama-swap's status.** llama-swap treats invalid JSON
  as "no model" and answers 404 ``no model id could be identified``; clients
  written against it may rely on that status and message. We keep both and
  append the reason, e.g. ``no model id could be identified: invalid JSON
  body: Expecting value: line 1 column 1 (char 0)`` — the message still starts
  with llama-swap's text, and the JSON envelope is the OpenAI-style one. A
  JSON document that is not an object gets ``…: JSON body is not an object``;
  a malformed ``Content-Type`` gets ``…: malformed Content-Type: <reason>``.
* **A body cap.** llama-swap has none; we refuse bodies over
  :data:`MAX_BODY_BYTES` (256 MiB; a ``max_body`` argument overrides it) with
  413 and the usual envelope, checked against ``Content-Length`` first and
  while reading. Only bodies we must parse are held in memory; other bodies
  stream through uncapped, as in llama-swap.
* **A non-string JSON ``model``** is taken in its JSON text form, as gjson's
  ``String()`` does (``123`` → ``"123"``, ``true`` → ``"true"``, ``null`` →
  empty); objects and arrays use compact JSON text.
* **Bodies past the JSON parser's limits** (nesting deeper than ~900 levels,
  integers over 4,300 digits) are read as llama-swap reads them: the model is
  still found and the body forwarded as sent; UTF-16/32 bodies are refused
  with the reason. See :mod:`modelswap.server.json_body`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from modelswap.errors import ClientError, ModelNotFoundError
from modelswap.server.json_body import (
    JSONBodyError,
    RawJSON,
    compact_text,
    parse_json_body,
)
from modelswap.server.multipart import FormError, parse_media_type, text_fields

MAX_BODY_BYTES = 256 * 1024 * 1024
"""Largest JSON / form body read for model extraction (audio uploads can be big)."""

NO_MODEL_MESSAGE = "no model id could be identified"
_TRUE_STRINGS = frozenset({"true", "t", "1"})


class BodyTooLargeError(ClientError):
    """The request body exceeds the cap (413)."""

    status = 413


class BodyKind(enum.Enum):
    """How the model is carried, decided from the method and Content-Type."""

    QUERY = "query"
    """GET/HEAD: the query string only; the body is not considered."""
    JSON = "json"
    MULTIPART = "multipart"
    URLENCODED = "urlencoded"
    OTHER = "other"
    """Another or missing content type: query only, body streamed untouched."""
    MALFORMED = "malformed"
    """An unparsable Content-Type: extraction fails (→ 404)."""

    @property
    def reads_body(self) -> bool:
        return self in (BodyKind.JSON, BodyKind.MULTIPART, BodyKind.URLENCODED)


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """A request as the pipeline carries it: the routing name and the bytes to forward.

    ``model`` is the name the request is *routed* by; rewrites that must not
    change routing (``useModelName``) change only ``data``. ``data`` is None
    when the body was not read (stream it from the client). ``json`` is the
    parsed top-level object of a JSON body (treat as read-only); a member the
    parser could not hold is a :class:`~modelswap.server.json_body.RawJSON`.
    """

    kind: BodyKind
    model: str
    stream: bool
    query_string: str
    data: bytes | None = None
    json: dict[str, Any] | None = None
    boundary: str = ""
    problem: str = ""
    """Why no model could be found, when that has a reason worth telling."""

    def require_model(self) -> str:
        """The model name, or 404 ``no model id could be identified`` (with the reason)."""
        if self.model:
            return self.model
        suffix = f": {self.problem}" if self.problem else ""
        raise ModelNotFoundError(NO_MODEL_MESSAGE + suffix)


def body_kind(method: str, content_type: str | None) -> BodyKind:
    """Classify a request per §3; JSON is a substring match, forms compare media types."""
    if method in ("GET", "HEAD"):
        return BodyKind.QUERY
    if not content_type:
        return BodyKind.OTHER
    if "application/json" in content_type:
        return BodyKind.JSON
    try:
        media, _ = parse_media_type(content_type)
    except FormError:
        return BodyKind.MALFORMED
    if media == "multipart/form-data":
        return BodyKind.MULTIPART
    if media == "application/x-www-form-urlencoded":
        return BodyKind.URLENCODED
    return BodyKind.OTHER


def json_text(value: Any) -> str:
    """A JSON value as gjson's ``String()`` renders it (see module docstring)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    return compact_text(value)  # containers; a RawJSON as its source text, like gjson's Raw


def json_truthy(value: Any) -> bool:
    """llama-swap's ``stream`` rule: true, a non-zero number, or "true"/"t"/"1" (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.lower() in _TRUE_STRINGS
    if isinstance(value, RawJSON):
        return value.truthy
    return False


def _first(pairs: list[tuple[str, str]], key: str) -> str | None:
    return next((value for name, value in pairs if name == key), None)


def _from_pairs(
    kind: BodyKind, pairs: list[tuple[str, str]], query: str, **kw: Any
) -> ModelRequest:
    return ModelRequest(
        kind,
        _first(pairs, "model") or "",
        _first(pairs, "stream") == "true",
        query,
        **kw,
    )


def extract_model(
    method: str, content_type: str | None, query_string: str, data: bytes | None
) -> ModelRequest:
    """Pure §3 extraction. ``data`` is the body when :meth:`BodyKind.reads_body`."""
    kind = body_kind(method, content_type)
    query = parse_qsl(query_string, keep_blank_values=True)
    if kind is BodyKind.MALFORMED:
        problem = "malformed Content-Type"
        try:
            parse_media_type(content_type or "")
        except FormError as error:
            problem = f"malformed Content-Type: {error}"
        return ModelRequest(kind, "", False, query_string, problem=problem)
    if kind in (BodyKind.QUERY, BodyKind.OTHER) or data is None:
        return _from_pairs(kind, query, query_string)
    if kind is BodyKind.JSON:
        return _from_json(query_string, data)
    if kind is BodyKind.URLENCODED:
        body_pairs = parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True)
        return _from_pairs(kind, body_pairs + query, query_string, data=data)
    _, params = parse_media_type(content_type or "")
    boundary = params.get("boundary", "")
    try:
        fields = text_fields(data, boundary)
    except FormError:
        fields = []  # like Go: an unparsable form contributes nothing; the query still counts
    return _from_pairs(kind, query + fields, query_string, data=data, boundary=boundary)


def _from_json(query_string: str, data: bytes) -> ModelRequest:
    kind = BodyKind.JSON
    try:
        parsed = parse_json_body(data)
    except JSONBodyError as error:
        return ModelRequest(kind, "", False, query_string, data=data, problem=str(error))
    if not isinstance(parsed, dict):
        return ModelRequest(
            kind, "", False, query_string, data=data, problem="JSON body is not an object"
        )
    model = json_text(parsed.get("model"))
    return ModelRequest(
        kind, model, json_truthy(parsed.get("stream")), query_string, data=data, json=parsed
    )


async def read_body(request: web.BaseRequest, max_body: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, refusing (413) more than ``max_body`` bytes before holding them."""
    length = request.content_length
    if length is not None and length > max_body:
        raise _too_large(max_body)
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > max_body:
                raise _too_large(max_body)
            chunks.append(chunk)
    except RequestPayloadError as error:  # e.g. "Content-Encoding: gzip" on a non-gzip body
        raise ClientError("invalid request body: " + " ".join(str(error).split())) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(max_body: int) -> BodyTooLargeError:
    return BodyTooLargeError(f"request body too large (limit {max_body} bytes)")


async def read_model_request(
    request: web.BaseRequest, *, max_body: int = MAX_BODY_BYTES
) -> ModelRequest:
    """Extract the model from ``request``, reading its body only if the model is in it."""
    content_type = request.headers.get("Content-Type")
    kind = body_kind(request.method, content_type)
    data = await read_body(request, max_body) if kind.reads_body else None
    return extract_model(request.method, content_type, request.rel_url.raw_query_string, data)
