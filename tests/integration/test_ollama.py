"""Ollama's API as Ollama clients use it: the official ``ollama`` client against a real
``python -m modelswap`` over fake upstreams (issue 15).

One modelswap serves every test of this module (module-scoped): under ``/ollama`` on
its main listener and at Ollama's plain paths on the ``ollama.listen`` port. Waits are
on facts: the ``/api/events`` stream (model states, stored activity rows), never time.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import pytest
import pytest_asyncio

from modelswap.testing.fake_process import fake_upstream_env, free_port
from tests.integration.router_harness import Fake
from tests.integration.server_harness import config_text, fake
from tests.integration.test_cli import Served, serving, stop_with
from tests.integration.test_events_api import EventStream, states

DEADLINE = 30.0
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@dataclass
class Ollama:
    served: Served
    plain_url: str
    fakes: dict[str, Fake]

    @property
    def url(self) -> str:
        return self.served.url

    def client(self) -> ollama.AsyncClient:
        return ollama.AsyncClient(host=self.url + "/ollama")

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(self.url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Ollama]:
    tmp: Path = tmp_path_factory.mktemp("ollama")
    fakes = [
        fake(
            tmp,
            "qwen3",
            settings={
                "aliases": ["smart"],
                "capabilities": {"tools": True, "context": 4096, "in": ["text", "image"]},
            },
        ),
        fake(tmp, "embedder"),
        fake(tmp, "brief"),
        fake(tmp, "slow", chunks=3, chunk_interval=30, settings={"concurrencyLimit": 1}),
        fake(tmp, "crashy", chunks=3, chunk_interval=30, settings={"retryOnCrash": False}),
    ]
    port = free_port()
    head = f"ollama:\n  listen: 127.0.0.1:{port}\n"
    config = tmp / "config.yaml"
    config.write_text(config_text(fakes, head))
    args = ["--config", str(config), "--listen", f"127.0.0.1:{free_port()}"]
    async with serving(args, tmp, fake_upstream_env()) as served:
        assert f"ollama API listening on http://127.0.0.1:{port}" in "".join(served.output)
        yield Ollama(served, f"http://127.0.0.1:{port}", {f.model_id: f for f in fakes})
        assert await stop_with(served, signal.SIGTERM) == 0  # stops every upstream it started


@pytest.fixture
def client(server: Ollama) -> ollama.AsyncClient:
    return server.client()


async def open_events(session: aiohttp.ClientSession) -> EventStream:
    response = await session.get("/api/events")
    assert response.status == 200
    events = EventStream(response)
    await events.until(lambda kind, _: kind == "inflight")  # the end of the initial burst
    return events


async def activity_row(session: aiohttp.ClientSession, row_id: int) -> dict[str, Any]:
    async with session.get("/api/metrics/activity", params={"limit": "100"}) as resp:
        rows = (await resp.json())["data"]
    return next(row for row in rows if row["id"] == row_id)


# --- model lists and metadata ----------------------------------------------------------


async def test_root_and_version(server: Ollama) -> None:
    async with server.session() as s:
        for method in ("GET", "HEAD"):
            async with s.request(method, "/ollama/") as resp:
                assert resp.status == 200
                if method == "GET":
                    assert await resp.text() == "Ollama is running"
        async with s.get("/ollama/api/version") as resp:
            ours = await resp.json()
            assert ours["version"]
        async with s.get("/api/version") as resp:  # llama-swap's own route is untouched
            assert resp.status == 200
            assert await resp.json() != ours


async def test_list_names_models_as_ollama_does(client: ollama.AsyncClient) -> None:
    listed = await client.list()
    names = [m.model for m in listed.models]
    assert names == [
        "qwen3:latest",
        "embedder:latest",
        "brief:latest",
        "slow:latest",
        "crashy:latest",
    ]
    assert all(m.digest and len(m.digest) == 64 for m in listed.models)


async def test_show(client: ollama.AsyncClient) -> None:
    shown = await client.show("qwen3:latest")
    assert shown.capabilities == ["completion", "tools", "vision"]
    assert shown.details is not None
    with pytest.raises(ollama.ResponseError) as info:
        await client.show("nope")
    assert info.value.status_code == 404
    assert "not found" in info.value.error


# --- chat and generate -------------------------------------------------------------------


async def test_chat_with_latest_tag_then_streamed(client: ollama.AsyncClient) -> None:
    answer = await client.chat(
        model="qwen3:latest", messages=[{"role": "user", "content": "hi"}], stream=False
    )
    assert answer.model == "qwen3:latest"
    assert answer.message.content == "Hello from qwen3"
    assert answer.done and answer.done_reason == "stop"
    assert answer.eval_count == 5 and answer.prompt_eval_count
    assert answer.total_duration and answer.total_duration >= (answer.load_duration or 0)

    parts = [
        part
        async for part in await client.chat(
            model="smart", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    ]
    assert "".join(p.message.content or "" for p in parts) == "Hello from qwen3"
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert len(parts) >= 3  # streamed in pieces, not one object
    last = parts[-1]
    assert last.done_reason == "stop" and last.eval_count == 5 and last.eval_duration


async def test_generate_streamed_and_format_json(client: ollama.AsyncClient) -> None:
    text = "".join(
        [
            part.response
            async for part in await client.generate(model="qwen3", prompt="hello", stream=True)
        ]
    )
    assert text == "Hello from qwen3"
    answer = await client.generate(model="qwen3", prompt="hello", format="json")
    assert json.loads(answer.response) == {"model_id": "qwen3", "text": "Hello from qwen3"}
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    answer = await client.generate(model="qwen3", prompt="hello", format=schema)
    assert json.loads(answer.response)["text"] == "Hello from qwen3"


async def test_tools_round_trip(client: ollama.AsyncClient) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather in Oslo?"}]
    answer = await client.chat(model="qwen3", messages=messages, tools=[WEATHER_TOOL])
    (call,) = answer.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"model_id": "qwen3"}
    # Streamed: the call arrives whole, although the upstream sent its arguments in pieces.
    parts = [
        p
        async for p in await client.chat(
            model="qwen3", messages=messages, tools=[WEATHER_TOOL], stream=True
        )
    ]
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", {"model_id": "qwen3"})
    ]
    # The tool's result goes back; the model answers in text.
    messages += [answer.message.model_dump(exclude_none=True)]
    messages += [{"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    final = await client.chat(model="qwen3", messages=messages, tools=[WEATHER_TOOL])
    assert final.message.content == "Hello from qwen3"
    assert not final.message.tool_calls


async def test_think(client: ollama.AsyncClient) -> None:
    answer = await client.chat(
        model="qwen3", messages=[{"role": "user", "content": "?"}], think=True
    )
    assert answer.message.thinking == "thinking as qwen3"
    answer = await client.chat(
        model="qwen3", messages=[{"role": "user", "content": "?"}], think=False
    )
    assert answer.message.thinking is None


async def test_images_and_options_reach_the_upstream_in_openai_form(server: Ollama) -> None:
    client = server.client()
    async with server.session() as s:
        events = await open_events(s)
        answer = await client.chat(
            model="qwen3",
            messages=[{"role": "user", "content": "what is it?", "images": [PNG]}],
            options={"num_predict": 12, "temperature": 0.1, "stop": ["x"], "num_ctx": 8192},
        )
        assert answer.message.content == "Hello from qwen3"
        while True:  # an earlier test's row may still be published first (rows are batched)
            _, data = await events.until(lambda kind, _: kind == "activity")
            async with s.get(f"/api/captures/{data['id']}") as resp:
                capture = await resp.json()
            sent = json.loads(base64.b64decode(capture["req_body"]))  # what went upstream
            if "what is it?" in json.dumps(sent):
                break
        row = await activity_row(s, data["id"])
        assert row["model"] == "qwen3"
        assert row["req_path"] == "/v1/chat/completions"
        assert row["tokens"]["output_tokens"] == 5
    assert sent["max_tokens"] == 12 and sent["temperature"] == 0.1 and sent["stop"] == ["x"]
    assert "num_ctx" not in sent
    (text, image) = sent["messages"][0]["content"]
    assert text == {"type": "text", "text": "what is it?"}
    assert image["image_url"]["url"].startswith("data:image/png;base64,")


# --- embeddings -----------------------------------------------------------------------------


async def test_embed_and_embeddings(client: ollama.AsyncClient) -> None:
    answer = await client.embed(model="embedder", input=["one", "two"])
    assert len(answer.embeddings) == 2
    assert all(len(vector) == 8 for vector in answer.embeddings)
    assert answer.embeddings[0] != answer.embeddings[1]
    single = await client.embed(model="embedder:latest", input="one")
    assert single.embeddings == answer.embeddings[:1]
    legacy = await client.embeddings(model="embedder", prompt="one")
    assert list(legacy.embedding) == answer.embeddings[0]


# --- loaded models, keep_alive ----------------------------------------------------------------


async def test_ps_and_keep_alive_duration(client: ollama.AsyncClient) -> None:
    await client.chat(model="qwen3", messages=[{"role": "user", "content": "hi"}])
    before = {m.model: m for m in (await client.ps()).models}
    assert before["qwen3:latest"].context_length == 4096
    assert before["qwen3:latest"].expires_at.year > 2100  # ttl 0: never unloads
    await client.chat(model="qwen3", messages=[{"role": "user", "content": "hi"}], keep_alive="1h")
    after = {m.model: m for m in (await client.ps()).models}
    expires = after["qwen3:latest"].expires_at
    now = datetime.now(UTC)
    assert now + timedelta(minutes=59) < expires <= now + timedelta(hours=1)
    await client.chat(model="qwen3", messages=[{"role": "user", "content": "hi"}], keep_alive=-1)
    forever = {m.model: m for m in (await client.ps()).models}
    assert forever["qwen3:latest"].expires_at.year > 2100


async def test_keep_alive_zero_unloads_after_the_request(server: Ollama) -> None:
    client = server.client()
    async with server.session() as s:
        events = await open_events(s)
        answer = await client.generate(model="brief:latest", prompt="hi", keep_alive=0)
        assert answer.response == "Hello from brief"
        await events.until(
            lambda kind, data: kind == "modelStatus" and states(data)["brief"] == "stopped"
        )
    assert "brief:latest" not in [m.model for m in (await client.ps()).models]
    # A load request (no prompt) loads; with keep_alive 0 it unloads, never loading first.
    loaded = await client.generate(model="brief")
    assert (loaded.done, loaded.done_reason) == (True, "load")
    assert "brief:latest" in [m.model for m in (await client.ps()).models]
    async with server.session() as s:
        events = await open_events(s)
        unloaded = await client.generate(model="brief", keep_alive=0)
        assert unloaded.done_reason == "unload"
        await events.until(
            lambda kind, data: kind == "modelStatus" and states(data)["brief"] == "stopped"
        )


# --- errors ------------------------------------------------------------------------------


async def test_errors_are_ollama_shaped(server: Ollama, client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await client.chat(model="missing:latest", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404
    assert info.value.error == 'model "missing:latest" not found, try pulling it first'
    async with server.session() as s:
        for body, status, message in (
            (b"{bad", 400, "invalid JSON body"),
            (b"{}", 400, "model is required"),
            (b'{"model": "qwen3", "keep_alive": "soon"}', 400, "keep_alive: invalid duration"),
            (b'{"model": "qwen3", "messages": "hi"}', 400, "messages: expected a list"),
        ):
            async with s.post("/ollama/api/chat", data=body) as resp:
                assert resp.status == status, body
                assert message in (await resp.json())["error"], body


async def test_concurrency_limit_is_a_429_in_ollama_shape(server: Ollama) -> None:
    client = server.client()
    stream = await client.chat(
        model="slow", messages=[{"role": "user", "content": "x"}], stream=True
    )
    first = await anext(stream)  # the one allowed request is now being served
    assert first.message.content
    try:
        async with server.session() as s:
            body = {"model": "slow", "messages": [{"role": "user", "content": "y"}]}
            async with s.post("/ollama/api/chat", json=body) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"]
                assert (await resp.json())["error"]
    finally:
        await stream.aclose()  # the client leaves: modelswap aborts the upstream request


async def test_an_upstream_dying_mid_stream_ends_it_with_an_error_line(server: Ollama) -> None:
    client = server.client()
    stream = await client.chat(
        model="crashy", messages=[{"role": "user", "content": "x"}], stream=True
    )
    first = await anext(stream)
    assert first.message.content and not first.done
    pid = server.fakes["crashy"].events("listening")[-1]["pid"]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ollama.ResponseError, match="upstream disconnected mid-stream"):
        await anext(stream)


# --- the listener of its own -----------------------------------------------------------


async def test_plain_paths_on_the_ollama_listener(server: Ollama) -> None:
    client = ollama.AsyncClient(host=server.plain_url)
    assert (await client.list()).models[0].model == "qwen3:latest"
    answer = await client.chat(model="qwen3", messages=[{"role": "user", "content": "hi"}])
    assert answer.message.content == "Hello from qwen3"
    async with aiohttp.ClientSession(server.plain_url) as s:
        async with s.get("/") as resp:
            assert await resp.text() == "Ollama is running"
        async with s.get("/v1/models") as resp:  # only Ollama's routes here
            assert resp.status == 404
    assert "qwen3:latest" in [m.model for m in (await client.ps()).models]
