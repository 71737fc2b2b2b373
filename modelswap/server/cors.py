"""CORS preflight (server spec §4.2): every ``OPTIONS`` request gets a 204, before routing and auth.

Only preflights are answered here; other responses get no CORS headers from
us (the model list echoes ``Origin`` itself, upstream CORS headers pass
through). The requested headers are echoed back only after sanitising, so a
client cannot smuggle arbitrary text into a response header.
"""

from __future__ import annotations

import string
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_ALLOW_HEADERS = "Content-Type, Authorization, Accept, X-Requested-With"
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
MAX_AGE = "86400"
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")


def sanitise_allow_headers(requested: str | None) -> str:
    """``Access-Control-Request-Headers`` → the allow list (default when absent).

    Items are trimmed; empty ones and ones with characters outside the HTTP
    token set are dropped: ``"  X-Custom ,  Accept "`` → ``"X-Custom, Accept"``,
    ``"Valid, Bad Header"`` → ``"Valid"``, ``"Bad@Header"`` → ``""``.
    """
    if requested is None:
        return DEFAULT_ALLOW_HEADERS
    items = (item.strip() for item in requested.split(","))
    return ", ".join(item for item in items if item and set(item) <= _TOKEN_CHARS)


def preflight_headers(request_headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of a preflight answer for these request headers."""
    return {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": sanitise_allow_headers(
            request_headers.get("Access-Control-Request-Headers")
        ),
        "Access-Control-Max-Age": MAX_AGE,
    }


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer any ``OPTIONS`` with 204 and the preflight headers; pass everything else on."""
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=preflight_headers(request.headers))
    return await handler(request)
