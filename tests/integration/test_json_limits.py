"""Bodies past the JSON parser's limits, end to end (issue 13 item 1): the answer on the wire.

The fake's echo (any path it does not serve itself, here ``/v/chat/completions``
→ ``/chat/completions``) shows the bytes the upstream received; the unit table
(tests/unit/test_json_body.py) has every case, this checks the ones whose
answer involves the whole pipeline: forwarded exactly, rewritten by filters,
refused with the envelope — and nothing logged at ERROR on the way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server_harness import Server, fake, running_server

ECHO = "/v/chat/completions"
DEEP = "[" * 20_000 + "]" * 20_000
OBJECTS = '{"a":' * 30_000 + "1" + "}" * 30_000
HUGE = "9" * 100_000


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    filters = {"stripParams": "temperature", "setParams": {"top_p": 0.5}}
    fakes = [fake(tmp_path, "m1"), fake(tmp_path, "m2", settings={"filters": filters})]
    async with running_server(fakes) as running:
        yield running


async def post(server: Server, body: bytes, path: str = ECHO) -> tuple[int, Any]:
    async with server.session() as session:
        headers = {"Content-Type": "application/json"}
        async with session.post(path, data=body, headers=headers) as response:
            return response.status, json.loads(await response.read())


@pytest.mark.parametrize(
    "body",
    [
        f'{{"model":"m1","x":{DEEP}}}',
        f'{{"x":{OBJECTS},"model":"m1","stream":false}}',
        f'{{"model":"m1","n":{HUGE},"f":1e999999,"c":[NaN,-Infinity]}}',
        '{"model":"nope","model":"m1"}',
        '\ufeff{"model":"m1"}',
    ],
    ids=["deep arrays", "deep objects first", "huge numbers and constants", "dup", "BOM"],
)
async def test_forwarded_byte_for_byte(
    server: Server, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        status, echo = await post(server, body.encode())
    assert status == 200, echo
    assert (echo["model_id"], echo["body"]) == ("m1", body)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_filters_rewrite_around_a_deep_member(server: Server) -> None:
    body = f'{{"model":"m2","temperature":1,"x":{DEEP},"n":{HUGE},"s":"\\ud800"}}'
    status, echo = await post(server, body.encode())
    assert status == 200, echo
    assert echo["body"] == f'{{"model":"m2","x":{DEEP},"n":{HUGE},"s":"\\ud800","top_p":0.5}}'


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (DEEP.encode(), 404, "no model id could be identified: JSON body is not an object"),
        (f'{{"x":{DEEP}}}'.encode(), 404, "no model id could be identified"),
        (
            '{"model":"m1"}'.encode("utf-16"),
            404,
            "no model id could be identified: invalid JSON body: encoded as UTF-16, not UTF-8",
        ),
        (
            '{"model":"m1"}'.encode("utf-32-le"),
            404,
            "no model id could be identified: invalid JSON body: encoded as UTF-32-LE, not UTF-8",
        ),
        (
            f'{{"model":"m1","x":{"[" * 20_000}}}'.encode(),
            404,
            "no model id could be identified: invalid JSON body: "
            "Unterminated array or object starting at: line 1 column 19 (char 18)",
        ),
        (f'{{"model":{DEEP}}}'.encode(), 404, "no router for requested model"),
    ],
    ids=["deep array", "no model", "UTF-16", "UTF-32-LE", "unclosed", "deep model"],
)
async def test_refused_with_the_envelope(
    server: Server, body: bytes, status: int, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        got, answer = await post(server, body, "/v1/chat/completions")
    assert (got, answer["error"]["message"]) == (status, message)
    assert answer["error"]["type"] == "invalid_request_error"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert server.fakes["m1"].events("request") == []  # never reached the upstream


async def test_a_deep_profile_request_is_a_400(server: Server) -> None:
    async with (
        server.session() as session,
        session.put("/api/profiles/active", data=DEEP) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"]["message"] == "invalid profile request"
