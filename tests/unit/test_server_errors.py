"""The status → ``type``/``code`` table and the error envelope (server spec §6, scenario 15)."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from modelswap.errors import ModelswapError
from modelswap.server.errors import error_middleware, error_response, error_type_and_code


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ("invalid_request_error", "bad_request")),
        (401, ("authentication_error", "unauthorized")),
        (403, ("authentication_error", "forbidden")),
        (404, ("invalid_request_error", "not_found")),
        (409, ("invalid_request_error", "conflict")),
        (418, ("invalid_request_error", "invalid_request")),  # any other 4xx
        (429, ("rate_limit_error", "rate_limit_exceeded")),
        (500, ("server_error", "internal_error")),
        (502, ("server_error", "bad_gateway")),
        (503, ("server_error", "service_unavailable")),
        (504, ("server_error", "gateway_timeout")),
        (599, ("server_error", "internal_error")),  # any other status
    ],
)
def test_s24_15_status_to_type_and_code(status: int, expected: tuple[str, str]) -> None:
    assert error_type_and_code(status) == expected


def envelope(response: web.Response) -> dict[str, object]:
    assert response.text is not None
    body: dict[str, object] = json.loads(response.text)
    return body


def test_s24_15_custom_code_overrides_the_code_but_not_the_type() -> None:
    request = make_mocked_request("POST", "/v1/chat/completions")
    response = error_response(request, 418, "teapot")
    assert response.status == 418
    assert envelope(response) == {
        "src": "llama-swap",
        "error": {
            "message": "teapot",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_request",
        },
    }
    custom = envelope(error_response(request, 500, "boom", code="my_code"))
    assert custom["error"] == {
        "message": "boom",
        "type": "server_error",
        "param": None,
        "code": "my_code",
    }


async def test_s24_15_middleware_applies_the_table_and_a_custom_code() -> None:
    class Teapot(ModelswapError):
        status = 418
        code = "short_and_stout"

    async def handler(request: web.Request) -> web.StreamResponse:
        raise Teapot("i am a teapot")

    response = await error_middleware(make_mocked_request("GET", "/x"), handler)
    assert isinstance(response, web.Response) and response.status == 418
    error = envelope(response)["error"]
    assert error == {
        "message": "i am a teapot",
        "type": "invalid_request_error",
        "param": None,
        "code": "short_and_stout",
    }

    async def crash(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("secret detail")

    response = await error_middleware(make_mocked_request("GET", "/x"), crash)
    assert isinstance(response, web.Response) and response.status == 500
    assert envelope(response)["error"] == {
        "message": "internal error",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
