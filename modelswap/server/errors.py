"""The one place where errors become HTTP responses.

Every error a client sees has llama-swap's envelope — JSON by default, or
plain text / HTML when the client's ``Accept`` asks for it — and never a
traceback or aiohttp's HTML error page. Two exceptions, both llama-swap's:

* the concurrency-limit 429 is **always** the JSON envelope with
  ``Retry-After`` whatever ``Accept`` says (clients retry on it
  programmatically, so it must be machine-readable);
* a path no route matches gets Go's mux answer, plain ``404 page not found``;
  a known path with the wrong method keeps aiohttp's 405 with ``Allow``.

Paths under a prefix listed in ``app[OLLAMA_ERROR_PREFIXES]`` (Ollama's API,
:mod:`modelswap.ollama.routes`) get Ollama's shape instead, whatever the
error's origin (auth's 401 included): ``{"error": "<message>"}``.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from modelswap.errors import ModelswapError, TooManyRequestsError

log = logging.getLogger("modelswap.server")

NOT_FOUND_TEXT = "404 page not found\n"
"""Go's default body for an unmatched path."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TYPE_AND_CODE: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("authentication_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}


OLLAMA_ERROR_PREFIXES: web.AppKey[tuple[str, ...]] = web.AppKey("ollama_error_prefixes", tuple)
"""Path prefixes whose errors are Ollama's ``{"error": "..."}`` (registered with the routes)."""


def error_type_and_code(status: int) -> tuple[str, str]:
    """OpenAI-style ``type`` and ``code`` for a status, as llama-swap assigns them."""
    if status in _TYPE_AND_CODE:
        return _TYPE_AND_CODE[status]
    if 400 <= status < 500:
        return ("invalid_request_error", "invalid_request")
    return ("server_error", "internal_error")


def error_response(
    request: web.Request,
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    force_json: bool = False,
) -> web.Response:
    """Build the error body in the format the client's ``Accept`` header prefers."""
    ollama_prefixes = request.app.get(OLLAMA_ERROR_PREFIXES)
    if isinstance(ollama_prefixes, tuple) and (
        request.path.startswith(ollama_prefixes) or request.path + "/" in ollama_prefixes
    ):  # ``/ollama`` itself too: a client with ``host=…/ollama`` asks for it
        return web.json_response({"error": message}, status=status, headers=headers)
    accept = "" if force_json else request.headers.get("Accept", "")
    if "text/plain" in accept:
        return web.Response(
            status=status, text=f"llama-swap: {message}", content_type="text/plain", headers=headers
        )
    if "text/html" in accept:
        body = f"<html><body><h1>llama-swap</h1><p>{html.escape(message)}</p></body></html>"
        return web.Response(status=status, text=body, content_type="text/html", headers=headers)
    error_type, default_code = error_type_and_code(status)
    payload = {
        "src": "llama-swap",
        "error": {
            "message": message,
            "type": error_type,
            "param": None,
            "code": code or default_code,
        },
    }
    return web.json_response(payload, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map our errors to their status, and anything unexpected to a 500 with no traceback."""
    try:
        return await handler(request)
    except ModelswapError as error:
        headers = None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            headers = {"Retry-After": str(retry_after)}
        return error_response(
            request,
            error.status,
            error.message,
            code=error.code,
            headers=headers,
            force_json=isinstance(error, TooManyRequestsError),
        )
    except web.HTTPNotFound:
        if request.match_info.http_exception is None:
            raise  # a handler's own 404
        return web.Response(status=404, text=NOT_FOUND_TEXT)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("internal error handling %s %s", request.method, request.path)
        return error_response(request, 500, "internal error")
