"""API-key authentication (server spec §4.1), as a middleware over pure rules.

Exactly one candidate key is taken from the request — the Basic-auth
*password*, else a Bearer token, else ``x-api-key`` — and compared with every
configured key in constant time (``hmac.compare_digest`` against all of them,
no early exit), so neither timing nor the position of a key in the list leaks
which prefix matched. Keys are never logged; the key found is stored on the
request under :data:`API_KEY` for later accounting, and nowhere else.

modelswap also strips the client's credentials before forwarding (see
:mod:`modelswap.server.headers`); that is the forwarder's job, not this one's.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from modelswap.server.errors import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_KEY: web.RequestKey[str] = web.RequestKey("api_key", str)
"""The accepted key of an authenticated request ("" when auth is disabled)."""

UNAUTHORIZED_MESSAGE = "unauthorized: invalid or missing API key"
WWW_AUTHENTICATE = 'Basic realm="llama-swap"'
UNPROTECTED_PATHS = frozenset({"/health", "/wol-health", "/", "/favicon.ico"})


def is_protected(method: str, path: str) -> bool:
    """False for preflights, health checks, ``/``, the favicon and the bare ``GET /upstream``."""
    if method == "OPTIONS" or path in UNPROTECTED_PATHS:
        return False
    return not (path == "/upstream" and method in ("GET", "HEAD"))


def _basic_password(credentials: str) -> str | None:
    try:
        decoded = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):
        return None
    user_pass = decoded.decode("utf-8", "surrogateescape")
    if ":" not in user_pass:
        return None
    return user_pass.partition(":")[2]


def candidate_key(headers: Mapping[str, str]) -> str:
    """The one key a request offers: Basic password > Bearer token > ``x-api-key``.

    The ``Authorization`` header is split at its first space (scheme
    case-insensitive), so extra spaces become part of the token, as in
    llama-swap. Malformed Basic credentials offer nothing and fall through.
    """
    authorization = headers.get("Authorization", "")
    scheme, space, rest = authorization.partition(" ")
    if space and scheme.lower() == "basic":
        password = _basic_password(rest)
        if password is not None:
            return password
    if space and scheme.lower() == "bearer":
        return rest
    return headers.get("x-api-key", "")


def key_accepted(candidate: str, keys: Sequence[str]) -> bool:
    """Constant-time membership: compares against every key, never stops early."""
    if not candidate:
        return False
    offered = candidate.encode("utf-8", "surrogateescape")
    accepted = False
    for key in keys:
        accepted |= hmac.compare_digest(offered, key.encode("utf-8", "surrogateescape"))
    return accepted


def auth_middleware(api_keys: Sequence[str] | Callable[[], Sequence[str]]) -> Middleware:
    """A middleware enforcing ``api_keys``; with no keys every request passes.

    ``api_keys`` may be a function read per request: the app passes one reading
    the config in force, so a config reload changes the keys at once.
    """
    current = api_keys if callable(api_keys) else (lambda fixed=tuple(api_keys): fixed)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        keys = current()
        request[API_KEY] = ""
        unrouted = request.match_info.http_exception is not None  # Go's mux 404/405 come first
        if keys and not unrouted and is_protected(request.method, request.path):
            candidate = candidate_key(request.headers)
            if not key_accepted(candidate, keys):
                return error_response(
                    request,
                    401,
                    UNAUTHORIZED_MESSAGE,
                    headers={"WWW-Authenticate": WWW_AUTHENTICATE},
                )
            request[API_KEY] = candidate
        return await handler(request)

    return authenticate
