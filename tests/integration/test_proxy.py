"""The streaming forwarder against real fake-upstream processes on loopback.

The harness app (``proxy_harness``) wires extract → filters → forward with no
router. Waits are on facts — bytes received, the fake's event log, the
forward's ``finally`` — never on time; ``asyncio.timeout`` is only a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from modelswap.config import Config, load_config_text
from modelswap.server.proxy import UPSTREAM_CLIENT
from modelswap.testing.fake_process import FakeUpstreamProcess, free_port, read_events, wait_event
from tests.integration.proxy_harness import Harness, running_proxy, serving
from tests.integration.ws_echo import build_echo_app

pytestmark = pytest.mark.timeout(30)

KEY = "client-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = "alpha beta gamma delta"


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstreamProcess]:
    log = tmp_path_factory.mktemp("fast") / "events.jsonl"
    with FakeUpstreamProcess("fast-model", event_log=log, chunks=4, response_text=TEXT) as fake:
        yield fake


@pytest.fixture(scope="module")
def paced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstreamProcess]:
    """Four SSE chunks 200 ms apart: the stream takes ~0.6 s upstream."""
    log = tmp_path_factory.mktemp("paced") / "events.jsonl"
    with FakeUpstreamProcess(
        "paced-model", event_log=log, chunks=4, chunk_interval=0.2, response_text=TEXT
    ) as fake:
        yield fake


@pytest.fixture
def long_stream(tmp_path: Path) -> Iterator[FakeUpstreamProcess]:
    """A 40-chunk stream, 200 ms apart (8 s): tests cut it short."""
    with FakeUpstreamProcess(
        "long-model", event_log=tmp_path / "long.jsonl", chunks=40, chunk_interval=0.2
    ) as fake:
        yield fake


def make_config(
    fast: FakeUpstreamProcess,
    *,
    paced: FakeUpstreamProcess | None = None,
    long: FakeUpstreamProcess | None = None,
    ws_url: str = "http://127.0.0.1:9",
    hang_port: int = 9,
) -> Config:
    """The test config (JSON is YAML): every model proxies to an already running server."""

    def model(proxy: str, **extra: Any) -> dict[str, Any]:
        return {"cmd": "fake --port ${PORT}", "proxy": proxy, **extra}

    models = {
        "fast": model(fast.url),
        "filtered": model(
            fast.url,
            useModelName="upstream-name",
            filters={
                "stripParams": "temperature",
                "setParams": {"top_p": 0.9, "nested.deep": True},
            },
        ),
        "whisper": model(fast.url, useModelName="whisper-large-v3"),
        "paced": model((paced or fast).url),
        "long": model((long or fast).url),
        "dead": model(f"http://127.0.0.1:{free_port()}"),
        "hang": model(f"http://127.0.0.1:{hang_port}", timeouts={"responseHeader": 1}),
        "ws": model(ws_url),
    }
    return load_config_text(json.dumps({"apiKeys": [KEY], "models": models})).config


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


@pytest.fixture(params=[True, False], ids=["lean-client", "aiohttp-client"])
def lean(request: pytest.FixtureRequest) -> bool:
    """Both upstream clients behind ``UpstreamClient.open()`` carry the same behaviours."""
    return bool(request.param)


@pytest.fixture
async def proxy(
    fast: FakeUpstreamProcess, paced: FakeUpstreamProcess, lean: bool
) -> AsyncIterator[Harness]:
    async with running_proxy(make_config(fast, paced=paced), fast=lean) as harness:
        assert (harness.app[UPSTREAM_CLIENT]._fast is not None) is lean
        yield harness


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def sse_text(body: str) -> str:
    out = []
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            delta = json.loads(line[6:])["choices"][0]["delta"]
            out.append(delta.get("content") or "")
    return "".join(out)


# --- plain forwarding ---------------------------------------------------------------------


async def test_non_streaming_forward_strips_credentials(
    proxy: Harness, http: aiohttp.ClientSession
) -> None:
    headers = {
        "X-Api-Key": KEY,
        "Proxy-Authorization": "Basic dTpw",
        "X-Custom": "kept",
        "User-Agent": "test-agent/1",
    }
    url = f"{proxy.url}/v1/chat/completions"
    skip = ("Accept-Encoding", "Accept")
    async with http.post(url, json=chat("fast"), headers=headers, skip_auto_headers=skip) as r:
        assert r.status == 200
        body = await r.json()
    assert body["choices"][0]["message"]["content"] == TEXT
    assert body["received"] == chat("fast")
    seen = body["received_headers"]
    for gone in ("authorization", "x-api-key", "proxy-authorization"):
        assert gone not in seen
    assert seen["x-custom"] == "kept"
    assert seen["user-agent"] == "test-agent/1"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["host"] == proxy.url.removeprefix("http://")  # the client's Host is kept
    assert "accept-encoding" not in seen and "accept" not in seen  # none invented by us
    assert proxy.served == [("done", "fast")]
    assert proxy.records[-1].status == 200 and proxy.records[-1].body_bytes > 0


async def test_filters_reach_the_upstream(proxy: Harness, http: aiohttp.ClientSession) -> None:
    body = chat("filtered", temperature=0.7, top_p=0.1)
    async with http.post(f"{proxy.url}/v1/chat/completions", json=body) as r:
        received = (await r.json())["received"]
    assert received == {
        "model": "upstream-name",
        "messages": [{"role": "user", "content": "hi"}],
        "top_p": 0.9,
        "nested": {"deep": True},
    }


async def test_multipart_use_model_name_keeps_the_file(
    proxy: Harness, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("model", "whisper")
    form.add_field("file", b"xx", filename="a.wav", content_type="audio/wav")
    async with http.post(f"{proxy.url}/v1/audio/transcriptions", data=form) as r:
        assert r.status == 200
        assert r.headers["X-Fake-Received-Model"] == "whisper-large-v3"
        assert (await r.json())["file"] == {"filename": "a.wav", "size": 2}
    assert proxy.served == [("done", "whisper")]  # routed by the requested name


async def test_get_query_is_forwarded(proxy: Harness, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{proxy.url}/props?model=fast&autoload=true") as r:
        body = await r.json()
    assert body["query"] == {"model": "fast", "autoload": "true"}


async def test_error_envelopes(
    fast: FakeUpstreamProcess, http: aiohttp.ClientSession, lean: bool
) -> None:
    async with running_proxy(make_config(fast), max_body=1000, fast=lean) as proxy:
        async with http.post(f"{proxy.url}/v1/chat/completions", json=chat("dead")) as r:
            assert r.status == 502
            error = (await r.json())["error"]
        assert error["code"] == "bad_gateway" and error["type"] == "server_error"
        assert error["message"].startswith("upstream error: Cannot connect to host")

        big = chat("fast", padding="x" * 2000)
        async with http.post(f"{proxy.url}/v1/chat/completions", json=big) as r:
            assert r.status == 413
            assert "request body too large" in (await r.json())["error"]["message"]

        headers = {"Content-Type": "application/json"}
        async with http.post(
            f"{proxy.url}/v1/chat/completions", data=b"{nope", headers=headers
        ) as r:
            assert r.status == 404
            message = (await r.json())["error"]["message"]
        assert message.startswith("no model id could be identified: invalid JSON body: ")

        async with http.post(f"{proxy.url}/v1/chat/completions", json=chat("")) as r:
            assert r.status == 404
        async with http.post(
            f"{proxy.url}/v1/chat/completions", json=chat("fast"), headers={"Authorization": "x"}
        ) as r:
            assert r.status == 401


async def test_response_header_timeout_is_502(
    fast: FakeUpstreamProcess,
    http: aiohttp.ClientSession,
    lean: bool,
) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.Event().wait()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with (
            running_proxy(make_config(fast, hang_port=port), fast=lean) as proxy,
            http.post(f"{proxy.url}/v1/chat/completions", json=chat("hang")) as r,
        ):
            assert r.status == 502
            message = (await r.json())["error"]["message"]
        assert message == "upstream error: timeout awaiting response headers"
    finally:
        server.close()


# --- streaming ----------------------------------------------------------------------------


async def test_stream_arrives_incrementally_with_sse_headers(
    proxy: Harness, paced: FakeUpstreamProcess, http: aiohttp.ClientSession
) -> None:
    assert paced.event_log is not None
    done_before = sum(1 for e in read_events(paced.event_log) if e["event"] == "request_done")
    url = f"{proxy.url}/v1/chat/completions"
    async with http.post(url, json=chat("paced", stream=True)) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["X-Accel-Buffering"] == "no"
        first = await r.content.readany()
        # the upstream is still producing: the first bytes were not held back
        done_now = sum(1 for e in read_events(paced.event_log) if e["event"] == "request_done")
        assert done_now == done_before
        assert b"data: " in first and b"[DONE]" not in first
        rest = await r.read()
    body = (first + rest).decode()
    assert sse_text(body) == TEXT and body.rstrip().endswith("data: [DONE]")


async def test_client_disconnect_aborts_upstream_within_1s(
    fast: FakeUpstreamProcess,
    long_stream: FakeUpstreamProcess,
    http: aiohttp.ClientSession,
    record_property: Any,
    lean: bool,
) -> None:
    assert long_stream.event_log is not None
    async with running_proxy(make_config(fast, long=long_stream), fast=lean) as proxy:
        url = f"{proxy.url}/v1/chat/completions"
        response = await http.post(url, json=chat("long", stream=True))
        assert b"data: " in await response.content.readany()
        closed_at = time.time()
        response.close()  # drop the connection mid-stream
        event = await wait_event(long_stream.event_log, "client_disconnected", timeout=5)
        latency = event["t"] - closed_at
        async with asyncio.timeout(5):
            await proxy.done.wait()
    record_property("disconnect_to_upstream_abort_s", round(latency, 4))
    print(f"\nclient disconnect → upstream client_disconnected: {latency * 1000:.1f} ms")
    assert latency < 1.0
    assert proxy.served == [("cancelled", "long")]  # the forward's finally ran, cancelled
    assert proxy.records[-1].status == 200  # what the client had been sent


async def test_s88_128_upstream_crash_mid_stream_ends_cleanly(
    fast: FakeUpstreamProcess,
    long_stream: FakeUpstreamProcess,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    lean: bool,
) -> None:
    async with running_proxy(make_config(fast, long=long_stream), fast=lean) as proxy:
        url = f"{proxy.url}/v1/chat/completions"
        with caplog.at_level(logging.WARNING, logger="modelswap.server.proxy"):
            async with http.post(url, json=chat("long", stream=True)) as r:
                first = await r.content.readany()
                long_stream.send_signal(signal.SIGKILL, group=True)
                rest = await r.read()  # no exception: the stream ends with an error event
        assert r.status == 200
        body = first + rest
        assert body.count(b"[DONE]") == 1 and body.endswith(b"data: [DONE]\n\n")
        assert b"upstream disconnected mid-stream" in body
    assert any(
        "recovered from upstream disconnection during streaming" in m for m in caplog.messages
    )
    assert proxy.served == [("done", "long")]


# --- websocket tunnel ----------------------------------------------------------------------


async def test_websocket_tunnel(fast: FakeUpstreamProcess, http: aiohttp.ClientSession) -> None:
    async with (
        serving(build_echo_app()) as ws_url,
        running_proxy(make_config(fast, ws_url=ws_url)) as proxy,
    ):
        url = f"{proxy.url}/ws/path%2Fx?model=ws&token=1"
        async with http.ws_connect(url, protocols=("comfy",)) as ws:
            assert ws.protocol == "comfy"
            hello = await ws.receive_json()
            assert hello["path"] == "/ws/path%2Fx?model=ws&token=1"
            assert hello["protocol"] == "comfy"
            assert "authorization" not in hello["headers"]
            assert hello["headers"]["host"] == proxy.url.removeprefix("http://")
            await ws.send_str("hi")
            assert await ws.receive_str() == "hi"
            await ws.send_bytes(b"\x00\x01")
            assert await ws.receive_bytes() == b"\x00\x01"
            await ws.send_str("close-me")
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4001
        assert (await proxy.wait_records(1))[-1].status == 101

        refused = await http.get(f"{proxy.url}/ws?model=dead", headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        })  # fmt: skip
        assert refused.status == 502


# --- official SDKs as clients --------------------------------------------------------------


async def test_openai_sdk_chat_and_embeddings(proxy: Harness) -> None:
    client = openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=KEY, max_retries=0)
    try:
        completion = await client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == TEXT
        stream = await client.chat.completions.create(
            model="paced", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces) == TEXT and len(pieces) >= 4
        embeddings = await client.embeddings.create(model="fast", input=["a", "b c"])
        assert [d.index for d in embeddings.data] == [0, 1]
        assert len(embeddings.data[0].embedding) == 8
    finally:
        await client.close()


async def test_anthropic_sdk_messages(proxy: Harness) -> None:
    client = anthropic.AsyncAnthropic(base_url=proxy.url, api_key=KEY, max_retries=0)
    try:
        message = await client.messages.create(
            model="fast", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].type == "text" and message.content[0].text == TEXT
        async with client.messages.stream(
            model="paced", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
        assert text == TEXT
    finally:
        await client.close()


# --- an upstream that drops kept-alive connections (llama-server after a stream) --------


async def test_posts_survive_an_upstream_that_closes_kept_alive_connections(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    lean: bool,
) -> None:
    """Back-to-back POSTs reuse the pooled connection the upstream just closed.

    aiohttp retries that only for idempotent methods; the forwarder resends a
    body it holds in memory once, so no request fails with "server disconnected".
    """
    with FakeUpstreamProcess(
        "closer", event_log=tmp_path / "closer.jsonl", close_after_response=True
    ) as closer:
        async with running_proxy(make_config(closer), fast=lean) as harness:
            statuses = []
            for index in range(10):
                body = chat("fast", stream=index % 2 == 0)
                async with http.post(f"{harness.url}/v1/chat/completions", json=body) as r:
                    await r.read()
                    statuses.append(r.status)
    assert statuses == [200] * 10
