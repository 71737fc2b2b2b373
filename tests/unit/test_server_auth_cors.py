"""Auth and CORS rules (server spec §4.1, §4.2), header hygiene (§4.3) and the access log (§1.1).

The rules are pure functions tested directly; the middlewares are called
with in-memory requests (``make_mocked_request``): no sockets, no sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from modelswap.config import ModelTimeouts
from modelswap.server.access_log import (
    AccessLog,
    AccessRecord,
    client_ip,
    format_access_line,
    is_logged,
)
from modelswap.server.auth import (
    API_KEY,
    auth_middleware,
    candidate_key,
    is_protected,
    key_accepted,
)
from modelswap.server.cors import cors_middleware, sanitise_allow_headers
from modelswap.server.gotime import go_duration
from modelswap.server.headers import (
    client_response_headers,
    is_websocket_upgrade,
    upstream_request_headers,
)
from modelswap.server.proxy import client_timeout, is_loopback, join_url


def basic(user_pass: str) -> str:
    return "Basic " + base64.b64encode(user_pass.encode()).decode()


# --- auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({}, ""),
        ({"Authorization": "Bearer tok123"}, "tok123"),
        ({"Authorization": basic("user:pw-key")}, "pw-key"),
        ({"Authorization": basic("user:pw:with:colons")}, "pw:with:colons"),
        ({"x-api-key": "xkey"}, "xkey"),
        ({"Authorization": basic("u:basic"), "x-api-key": "x"}, "basic"),
        ({"Authorization": "Bearer bear", "x-api-key": "x"}, "bear"),
        ({"Authorization": "Basic !!!notb64", "x-api-key": "xkey"}, "xkey"),
        ({"Authorization": basic("no-colon"), "x-api-key": "xkey"}, "xkey"),
        ({"Authorization": "bearer lower"}, "lower"),
        ({"Authorization": "BEARER upper"}, "upper"),
        ({"Authorization": basic("u:k").replace("Basic", "bAsIc")}, "k"),
        ({"Authorization": "Bearer  two-spaces"}, " two-spaces"),
        ({"Authorization": "Bearer"}, ""),
        ({"Authorization": "Token abc", "x-api-key": "xkey"}, "xkey"),
    ],
)
def test_candidate_key_scenario_12(headers: dict[str, str], key: str) -> None:
    assert candidate_key(CIMultiDict(headers)) == key


def test_key_accepted_checks_every_key() -> None:
    assert key_accepted("b", ["a", "b", "c"])
    assert not key_accepted("", ["", "a"])  # an empty offer never matches
    assert not key_accepted("B", ["b"])
    assert not key_accepted("b", [])
    assert key_accepted("ключ", ["ключ"])


@pytest.mark.parametrize(
    ("method", "path", "protected"),
    [
        ("GET", "/health", False),
        ("GET", "/wol-health", False),
        ("GET", "/", False),
        ("GET", "/favicon.ico", False),
        ("GET", "/upstream", False),
        ("POST", "/upstream", True),
        ("GET", "/upstream/m1/", True),
        ("OPTIONS", "/v1/chat/completions", False),
        ("POST", "/v1/chat/completions", True),
        ("GET", "/v1/models", True),
        ("GET", "/comfyui/", True),
        ("GET", "/ui/", True),
    ],
)
def test_protected_routes(method: str, path: str, protected: bool) -> None:
    assert is_protected(method, path) is protected


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def mocked(method: str, path: str, headers: dict[str, str] | None = None) -> web.Request:
    """An in-memory request: middleware tests need no socket."""
    return make_mocked_request(method, path, headers=CIMultiDict(headers or {}))


async def test_auth_middleware_scenario_11_and_13() -> None:
    seen: list[str] = []

    async def ok(request: web.Request) -> web.StreamResponse:
        seen.append(request[API_KEY])
        return web.Response(text="ok")

    auth = auth_middleware(["secret"])
    assert (await auth(mocked("GET", "/health"), ok)).status == 200
    denied = await auth(mocked("POST", "/v1/chat/completions", {"Authorization": "Bearer x"}), ok)
    assert isinstance(denied, web.Response) and denied.status == 401
    assert denied.headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
    assert denied.text is not None
    body = json.loads(denied.text)
    assert body["error"]["message"] == "unauthorized: invalid or missing API key"
    assert body["error"]["type"] == "authentication_error"
    assert body["src"] == "llama-swap"
    assert (await auth(mocked("GET", "/comfyui/"), ok)).status == 401
    granted = await auth(mocked("GET", "/comfyui/", {"Authorization": "Bearer secret"}), ok)
    assert granted.status == 200
    assert (await auth(mocked("OPTIONS", "/v1/models"), ok)).status == 200  # passes through
    as_text = await auth(mocked("GET", "/v1/models", {"Accept": "text/plain"}), ok)
    assert isinstance(as_text, web.Response)
    assert as_text.text == "llama-swap: unauthorized: invalid or missing API key"
    assert seen == ["", "secret", ""]  # /health, the authorised call, the preflight


async def test_no_keys_everything_passes() -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text=request[API_KEY] or "none")

    response = await auth_middleware([])(mocked("POST", "/v1/chat/completions"), ok)
    assert isinstance(response, web.Response)
    assert (response.status, response.text) == (200, "none")


# --- CORS --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "allowed"),
    [
        (None, "Content-Type, Authorization, Accept, X-Requested-With"),
        ("  X-Custom ,  Accept ", "X-Custom, Accept"),
        ("Valid, Bad Header", "Valid"),
        ("Bad@Header", ""),
        (",,", ""),
        ("", ""),
    ],
)
def test_sanitise_allow_headers(requested: str | None, allowed: str) -> None:
    assert sanitise_allow_headers(requested) == allowed


async def test_preflight_answers_before_the_handler() -> None:
    async def never(request: web.Request) -> web.StreamResponse:
        raise AssertionError("a preflight must not reach the handler")

    request = mocked("OPTIONS", "/does/not/exist", {"Access-Control-Request-Headers": "X-A, b c"})
    resp = await cors_middleware(request, never)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    assert resp.headers["Access-Control-Max-Age"] == "86400"
    assert resp.headers["Access-Control-Allow-Headers"] == "X-A"


# --- forwarded headers -------------------------------------------------------------------


def test_s24_90_websocket_detection() -> None:
    assert is_websocket_upgrade(CIMultiDict({"Connection": "Upgrade", "Upgrade": "websocket"}))
    assert is_websocket_upgrade(
        CIMultiDict({"Connection": "keep-alive, UpGrAdE", "Upgrade": "WebSocket"})
    )
    assert not is_websocket_upgrade(CIMultiDict({"Connection": "keep-alive"}))
    assert not is_websocket_upgrade(CIMultiDict({"Connection": "Upgrade", "Upgrade": "h2c"}))


def client_headers() -> CIMultiDict[str]:
    return CIMultiDict(
        [
            ("Host", "modelswap.local:8080"),
            ("Authorization", "Bearer client-secret"),
            ("X-Api-Key", "client-secret"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Expect", "100-continue"),
            ("Content-Length", "12"),
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Custom", "a"),
            ("X-Custom", "b"),
        ]
    )


def test_local_upstream_headers() -> None:
    out = upstream_request_headers(client_headers(), client_ip="10.0.0.5", peer=False)
    assert out["Host"] == "modelswap.local:8080"
    assert out["X-Forwarded-For"] == "1.2.3.4, 10.0.0.5"
    assert out.getall("X-Custom") == ["a", "b"]
    assert out["Content-Length"] == "12"
    for gone in ("Authorization", "X-Api-Key", "Proxy-Authorization", "Connection", "X-Hop"):
        assert gone not in out
    for gone in ("Keep-Alive", "Transfer-Encoding", "Expect"):
        assert gone not in out
    rewritten = upstream_request_headers(
        client_headers(), client_ip="10.0.0.5", peer=False, streamed_body=False
    )
    assert "Content-Length" not in rewritten


def test_peer_headers_get_peer_key_and_no_forwarding_headers() -> None:
    out = upstream_request_headers(client_headers(), client_ip="10.0.0.5", peer=True, api_key="pk")
    assert out["Authorization"] == "Bearer pk"
    assert out["x-api-key"] == "pk"
    assert "Host" not in out and "X-Forwarded-For" not in out
    keyless = upstream_request_headers(client_headers(), client_ip="10.0.0.5", peer=True)
    assert "Authorization" not in keyless and "x-api-key" not in keyless


def test_client_response_headers() -> None:
    upstream = CIMultiDict(
        [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Access-Control-Allow-Origin", "*"),
        ]
    )
    out = client_response_headers(upstream)
    assert out["X-Accel-Buffering"] == "no"
    assert out.getall("Set-Cookie") == ["a=1", "b=2"]
    assert "Transfer-Encoding" not in out and "Connection" not in out
    assert out["Access-Control-Allow-Origin"] == "*"
    plain = client_response_headers(CIMultiDict({"Content-Type": "application/json"}))
    assert "X-Accel-Buffering" not in plain


def test_join_url_keeps_base_path_encoding_and_queries() -> None:
    assert str(join_url("https://openrouter.ai/api", "/v1/chat/completions")) == (
        "https://openrouter.ai/api/v1/chat/completions"
    )
    assert str(join_url("http://h:1/", "/api/x%2Fy", "a=1")) == "http://h:1/api/x%2Fy?a=1"
    assert str(join_url("http://h:1/b?k=v", "/p", "a=1")) == "http://h:1/b/p?k=v&a=1"
    assert join_url("http://h:1", "/a%252F").raw_path == "/a%252F"


def test_timeouts_map_to_aiohttp() -> None:
    defaults = client_timeout(ModelTimeouts(), tls=False)
    assert (defaults.total, defaults.sock_read, defaults.sock_connect) == (None, None, 30)
    assert client_timeout(ModelTimeouts(), tls=True).sock_connect == 40  # + tlsHandshake
    assert client_timeout(ModelTimeouts(connect=0), tls=True).sock_connect is None
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("example.com") and not is_loopback(None)


# --- access log ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1.5, "1.5s"),
        (0.25, "250ms"),
        (0.0012345, "1.2345ms"),
        (0.000012, "12µs"),
        (90, "1m30s"),
        (3661.5, "1h1m1.5s"),
        (-2, "-2s"),
        (1e-9, "1ns"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_s24_87_client_ip() -> None:
    assert client_ip(CIMultiDict(), "10.0.0.5") == "10.0.0.5"
    assert client_ip(CIMultiDict({"X-Forwarded-For": "1.2.3.4, 5.6.7.8"}), "x") == "1.2.3.4"
    assert client_ip(CIMultiDict({"X-Real-IP": "9.9.9.9"}), "x") == "9.9.9.9"


def test_skipped_paths() -> None:
    assert not is_logged("/wol-health") and not is_logged("/metrics")
    assert not is_logged("/api/performance")
    assert is_logged("/health") and is_logged("/v1/chat/completions")


async def test_s24_88_access_log_line_and_skipped_paths(caplog: pytest.LogCaptureFixture) -> None:
    records: list[AccessRecord] = []
    ticks = iter([10.0, 10.00125, 20.0, 20.5, 30.0, 30.0])
    access = AccessLog(clock=lambda: next(ticks))
    access.observers.append(records.append)

    async def created(request: web.Request) -> web.StreamResponse:
        return web.Response(status=201, text="hello")

    async def missing(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    headers = {"X-Forwarded-For": "192.168.1.1", "User-Agent": "ua/1"}
    with caplog.at_level(logging.INFO, logger="modelswap.server.access"):
        await access.middleware(mocked("POST", "/v1/chat/completions", headers), created)
        await access.middleware(mocked("GET", "/metrics"), created)
        with pytest.raises(web.HTTPNotFound):
            await access.middleware(mocked("GET", "/nope"), missing)
    lines = [r.getMessage() for r in caplog.records if r.name == "modelswap.server.access"]
    assert lines == [
        'Request 192.168.1.1 "POST /v1/chat/completions HTTP/1.1" 201 5 "ua/1" 1.25ms',
        'Request  "GET /nope HTTP/1.1" 404 0 "" 0s',
    ]  # /metrics is not logged (and a mocked request has no peer address)
    assert [(r.path, r.status) for r in records] == [
        ("/v1/chat/completions", 201),
        ("/metrics", 201),
        ("/nope", 404),
    ]
    assert format_access_line(records[0]) == lines[0]


async def test_access_log_cancelled_request_is_499() -> None:
    records: list[AccessRecord] = []
    access = AccessLog()
    access.observers.append(records.append)

    async def cancelled(request: web.Request) -> web.StreamResponse:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await access.middleware(mocked("POST", "/v1/chat/completions"), cancelled)
    assert records[0].status == 499
