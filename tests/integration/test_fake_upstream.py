"""The fake upstream as a real child process on loopback: endpoints, streams,
failure modes and the event log. Waits are on facts (the "listening" line,
/health, event-log lines, process exit) under deadlines, never bare sleeps."""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelswap.testing.fake_process import (
    FakeUpstreamProcess,
    fake_upstream_argv,
    fake_upstream_cmd,
    fake_upstream_env,
    free_port,
    pid_alive,
    read_events,
    wait_event,
    wait_healthy,
    wait_pid_gone,
)
from modelswap.testing.fake_shapes import TINY_PNG, split_text

TEXT = "alpha beta gamma delta"
CHUNKS = 4

Spawn = Callable[..., FakeUpstreamProcess]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstreamProcess]:
    """One fake for all the endpoint tests: spawning costs ~0.3 s each."""
    log = tmp_path_factory.mktemp("shared") / "events.jsonl"
    fake = FakeUpstreamProcess("shared-model", event_log=log, chunks=CHUNKS, response_text=TEXT)
    fake.start()
    yield fake
    fake.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start fakes with their own event log; the finalizer kills every group."""
    started: list[FakeUpstreamProcess] = []

    def _spawn(model_id: str = "m", **options: Any) -> FakeUpstreamProcess:
        log = tmp_path / f"{model_id}-{len(started)}.jsonl"
        fake = FakeUpstreamProcess(model_id, event_log=log, **options)
        started.append(fake)
        return fake.start()

    yield _spawn
    for fake in started:
        fake.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def parse_sse(text: str) -> list[tuple[str | None, Any]]:
    """``(event name, data)`` per SSE frame; ``[DONE]`` stays a string."""
    frames: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                raw = line[6:]
                data = raw if raw == "[DONE]" else json.loads(raw)
        frames.append((name, data))
    return frames


async def post_json(
    http: aiohttp.ClientSession, url: str, body: Any, **kw: Any
) -> tuple[int, dict[str, str], Any]:
    async with http.post(url, json=body, **kw) as resp:
        raw = await resp.read()
        ctype = resp.headers.get("Content-Type", "")
        data = json.loads(raw) if "json" in ctype else raw.decode()
        return resp.status, dict(resp.headers), data


# --- helpers ------------------------------------------------------------------------


def test_argv_and_cmd_spell_options_as_flags() -> None:
    argv = fake_upstream_argv(5800, "m1", startup_delay=1.5, never_healthy=True, crash_after=None)
    assert argv[1:] == [
        "-m", "modelswap.testing.fake_upstream", "--port", "5800", "--model-id", "m1",
        "--startup-delay", "1.5", "--never-healthy",
    ]  # fmt: skip
    assert "--port '${PORT}'" in fake_upstream_cmd("${PORT}", "m1")
    assert 0 < free_port() < 65536


# --- plain endpoints on the shared fake ------------------------------------------------


async def test_listening_line_and_event(shared: FakeUpstreamProcess) -> None:
    assert shared.stdout_lines[-1] == f"fake upstream shared-model listening on {shared.url}"
    assert shared.event_log is not None
    ev = await wait_event(shared.event_log, "listening")
    assert ev["port"] == shared.port and ev["pid"] == shared.pid


async def test_health_and_models(shared: FakeUpstreamProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{shared.url}/health") as resp:
        assert resp.status == 200
        assert resp.headers["X-Fake-Model-Id"] == "shared-model"
        assert (await resp.json())["status"] == "ok"
    assert shared.event_log is not None
    await wait_event(shared.event_log, "healthy")
    async with http.get(f"{shared.url}/v1/models") as resp:
        body = await resp.json()
    assert [m["id"] for m in body["data"]] == ["shared-model"]


async def test_chat_non_stream_echoes_what_it_received(
    shared: FakeUpstreamProcess, http: aiohttp.ClientSession
) -> None:
    messages = [{"role": "user", "content": "one two three"}]
    req = {"model": "alias-a", "messages": messages, "temperature": 0.25}
    headers = {"Authorization": "Bearer sk-secret", "x-api-key": "k1"}
    status, hdrs, body = await post_json(
        http, f"{shared.url}/v1/chat/completions", req, headers=headers
    )
    assert status == 200
    assert hdrs["X-Fake-Model-Id"] == "shared-model"
    assert hdrs["X-Fake-Received-Model"] == "alias-a"
    assert body["model"] == body["model_id"] == "shared-model"
    assert body["received_model"] == "alias-a"
    assert body["received"] == req
    assert body["received_headers"]["authorization"] == "Bearer sk-secret"
    assert body["received_headers"]["x-api-key"] == "k1"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": TEXT}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert body["timings"]["prompt_n"] == 3 and body["timings"]["predicted_n"] == 4
    assert body["timings"]["predicted_ms"] == 40.0


async def test_chat_stream(shared: FakeUpstreamProcess, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{shared.url}/v1/chat/completions", json={"model": "x", "stream": True, "n": 2}
    ) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        frames = parse_sse(await resp.text())
    assert frames[-1] == (None, "[DONE]")
    chunks = [d for _, d in frames[:-1]]
    content = [c["choices"][0]["delta"].get("content") for c in chunks[:CHUNKS]]
    assert content == split_text(TEXT, CHUNKS)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["received"] == {"model": "x", "stream": True, "n": 2}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "timings" in chunks[-1] and all("usage" not in c for c in chunks)
    assert all(c["model"] == "shared-model" and c["received_model"] == "x" for c in chunks)


async def test_chat_stream_include_usage(
    shared: FakeUpstreamProcess, http: aiohttp.ClientSession
) -> None:
    req = {"model": "x", "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(f"{shared.url}/v1/chat/completions", json=req) as resp:
        frames = parse_sse(await resp.text())
    last = frames[-2][1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == CHUNKS
    assert last["timings"]["predicted_n"] == CHUNKS


async def test_completions(shared: FakeUpstreamProcess, http: aiohttp.ClientSession) -> None:
    url = f"{shared.url}/v1/completions"
    _, _, body = await post_json(http, url, {"model": "c", "prompt": "say hi"})
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == TEXT
    assert body["usage"]["prompt_tokens"] == 2
    async with http.post(url, json={"model": "c", "prompt": ["a"], "stream": "true"}) as resp:
        frames = parse_sse(await resp.text())
    assert frames[-1][1] == "[DONE]"
    assert "".join(d["choices"][0]["text"] for _, d in frames[:-1]) == TEXT


async def test_embeddings_are_deterministic(
    shared: FakeUpstreamProcess, http: aiohttp.ClientSession
) -> None:
    url = f"{shared.url}/v1/embeddings"
    _, _, one = await post_json(http, url, {"model": "e", "input": "hello"})
    _, _, many = await post_json(
        http, url, {"model": "e", "input": ["x", "hello"], "dimensions": 8}
    )
    assert one["object"] == "list" and one["model"] == "shared-model"
    assert len(one["data"]) == 1 and len(many["data"]) == 2
    assert many["data"][1]["embedding"] == one["data"][0]["embedding"]
    assert many["data"][0]["embedding"] != one["data"][0]["embedding"]
    _, _, b64 = await post_json(http, url, {"input": "hello", "encoding_format": "base64"})
    decoded = struct.unpack("<8f", base64.b64decode(b64["data"][0]["embedding"]))
    assert decoded == pytest.approx(one["data"][0]["embedding"], abs=1e-6)


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank", "/v1/reranking"])
async def test_rerank(shared: FakeUpstreamProcess, http: aiohttp.ClientSession, path: str) -> None:
    req = {"model": "r", "query": "red fox", "documents": ["blue sky", "red fox runs", "a fox"]}
    status, _, body = await post_json(http, f"{shared.url}{path}", {**req, "top_n": 2})
    assert status == 200
    assert [r["index"] for r in body["results"]] == [1, 2]
    assert body["results"][0]["relevance_score"] == 1.0


async def test_anthropic_messages(shared: FakeUpstreamProcess, http: aiohttp.ClientSession) -> None:
    url = f"{shared.url}/v1/messages"
    req = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    _, _, body = await post_json(http, url, req)
    assert body["type"] == "message" and body["content"] == [{"type": "text", "text": TEXT}]
    assert body["received_model"] == "claude-x" and body["usage"]["output_tokens"] == CHUNKS
    async with http.post(url, json={**req, "stream": True}) as resp:
        frames = parse_sse(await resp.text())
    names = [n for n, _ in frames]
    assert names == [
        "message_start", "content_block_start", *["content_block_delta"] * CHUNKS,
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert all(name == d["type"] for name, d in frames)
    text = "".join(d["delta"]["text"] for n, d in frames if n == "content_block_delta")
    assert text == TEXT
    _, _, counted = await post_json(http, f"{url}/count_tokens", {**req, "system": "be brief"})
    assert counted["input_tokens"] == 3


async def test_audio_transcription_multipart(
    shared: FakeUpstreamProcess, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("model", "whisper")
    form.add_field("file", b"RIFF0000WAVE", filename="a.wav", content_type="audio/wav")
    async with http.post(f"{shared.url}/v1/audio/transcriptions", data=form) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["text"] == TEXT and body["received_model"] == "whisper"
    assert body["file"] == {"filename": "a.wav", "size": 12}
    async with http.post(f"{shared.url}/v1/audio/transcriptions", json={"model": "w"}) as resp:
        assert resp.status == 400


async def test_speech_and_images(shared: FakeUpstreamProcess, http: aiohttp.ClientSession) -> None:
    req = {"model": "tts", "input": "say this"}
    async with http.post(f"{shared.url}/v1/audio/speech", json=req) as resp:
        assert resp.headers["Content-Type"] == "audio/mpeg"
        assert resp.headers["X-Fake-Received-Model"] == "tts"
        audio = await resp.read()
    assert audio.startswith(b"ID3") and b"say this" in audio
    _, _, body = await post_json(
        http, f"{shared.url}/v1/images/generations", {"model": "sd", "prompt": "cat", "n": 2}
    )
    assert len(body["data"]) == 2
    assert base64.b64decode(body["data"][0]["b64_json"]) == TINY_PNG


async def test_llama_native_completion_and_infill(
    shared: FakeUpstreamProcess, http: aiohttp.ClientSession
) -> None:
    _, _, body = await post_json(http, f"{shared.url}/completion", {"prompt": "a b", "model": "l"})
    assert body["content"] == TEXT and body["stop"] is True
    assert body["timings"]["prompt_n"] == 2 and body["received_model"] == "l"
    async with http.post(f"{shared.url}/completion", json={"prompt": "a", "stream": True}) as r:
        frames = parse_sse(await r.text())
    assert all(d != "[DONE]" for _, d in frames)  # llama-server native streams have no [DONE]
    assert "".join(d["content"] for _, d in frames) == TEXT
    assert frames[-1][1]["stop"] is True and "timings" in frames[-1][1]
    _, _, infill = await post_json(http, f"{shared.url}/infill", {"input_prefix": "def f("})
    assert isinstance(infill, list) and infill[-1]["timings"]["predicted_n"] == CHUNKS


async def test_props_reports_query(
    shared: FakeUpstreamProcess, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{shared.url}/props?model=p1&autoload=false") as resp:
        body = await resp.json()
    assert body["received_model"] == "p1" and body["query"] == {"model": "p1", "autoload": "false"}
    assert body["default_generation_settings"]["n_ctx"] > 0


async def test_responses(shared: FakeUpstreamProcess, http: aiohttp.ClientSession) -> None:
    url = f"{shared.url}/v1/responses"
    _, _, body = await post_json(http, url, {"model": "r", "input": "two words"})
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["output"][0]["content"][0]["text"] == TEXT
    assert body["usage"]["input_tokens"] == 2
    async with http.post(url, json={"model": "r", "input": "x", "stream": True}) as resp:
        frames = parse_sse(await resp.text())
    assert frames[0][0] == "response.created" and frames[-1][0] == "response.completed"
    deltas = [d["delta"] for n, d in frames if n == "response.output_text.delta"]
    assert "".join(deltas) == TEXT
    assert frames[-1][1]["response"]["usage"]["output_tokens"] == CHUNKS


async def test_catch_all_echoes_any_method_and_path(
    shared: FakeUpstreamProcess, http: aiohttp.ClientSession
) -> None:
    async with http.put(f"{shared.url}/some/raw/path?x=1&y=2", data=b"payload") as resp:
        body = await resp.json()
    assert body["path"] == "/some/raw/path" and body["method"] == "PUT"
    assert body["query"] == {"x": "1", "y": "2"} and body["model_id"] == "shared-model"
    assert body["body"] == "payload"
    async with http.get(f"{shared.url}/v1/chat/completions") as resp:  # wrong method, same path
        assert (await resp.json())["method"] == "GET"


async def test_bad_json_is_400(shared: FakeUpstreamProcess, http: aiohttp.ClientSession) -> None:
    url = f"{shared.url}/v1/chat/completions"
    async with http.post(url, data=b"{nope", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert "invalid JSON" in (await r.json())["error"]["message"]
    status, _, _ = await post_json(http, url, [1, 2])
    assert status == 400


async def test_event_log_records_request_and_done(
    shared: FakeUpstreamProcess, http: aiohttp.ClientSession
) -> None:
    assert shared.event_log is not None
    await post_json(http, f"{shared.url}/v1/embeddings", {"model": "evt-probe", "input": "x"})
    req = await wait_event(shared.event_log, "request", model="evt-probe")
    done = await wait_event(shared.event_log, "request_done", model="evt-probe")
    assert req["path"] == "/v1/embeddings" and req["stream"] is False
    assert done["status"] == 200 and done["t"] >= req["t"]


# --- official SDKs --------------------------------------------------------------------


async def test_openai_sdk_parses_answers(shared: FakeUpstreamProcess) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{shared.url}/v1", api_key="sk-test")
    try:
        msgs = [{"role": "user", "content": "hi"}]
        chat = await client.chat.completions.create(model="m", messages=msgs)
        assert chat.choices[0].message.content == TEXT and chat.usage is not None
        stream = await client.chat.completions.create(
            model="m", messages=msgs, stream=True, stream_options={"include_usage": True}
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(parts) == TEXT
        emb = await client.embeddings.create(model="m", input=["a", "b"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    finally:
        await client.close()


async def test_anthropic_sdk_parses_answers(shared: FakeUpstreamProcess) -> None:
    import anthropic

    client = anthropic.AsyncAnthropic(base_url=shared.url, api_key="sk-ant-test")
    try:
        msgs = [{"role": "user", "content": "hi"}]
        msg = await client.messages.create(model="c", max_tokens=16, messages=msgs)
        assert msg.content[0].text == TEXT and msg.usage.output_tokens == CHUNKS
        async with client.messages.stream(model="c", max_tokens=16, messages=msgs) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text == TEXT and final.stop_reason == "end_turn"
    finally:
        await client.close()


# --- startup and health failure modes ------------------------------------------------------


def test_exit_at_start_exits_with_code_before_listening() -> None:
    argv = fake_upstream_argv(free_port(), "doomed", exit_at_start=3)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=fake_upstream_env())
    assert done.returncode == 3
    assert "exiting at start with code 3" in done.stderr
    assert "listening" not in done.stdout


async def test_never_healthy(spawn: Spawn, http: aiohttp.ClientSession) -> None:
    fake = spawn("sick", never_healthy=True)
    for _ in range(3):
        async with http.get(f"{fake.url}/health") as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == 503
    async with http.get(f"{fake.url}/v1/models") as resp:  # the rest still answers
        assert resp.status == 200
    assert fake.event_log is not None
    assert [e for e in read_events(fake.event_log) if e["event"] == "healthy"] == []


async def test_startup_delay_then_healthy(spawn: Spawn, http: aiohttp.ClientSession) -> None:
    fake = spawn("slowstart", startup_delay=1.0)
    async with http.get(f"{fake.url}/health") as resp:
        assert resp.status == 503
    await wait_healthy(fake.url, timeout=10)
    assert fake.event_log is not None
    listening = await wait_event(fake.event_log, "listening")
    healthy = await wait_event(fake.event_log, "healthy")
    assert healthy["t"] - listening["t"] >= 1.0


# --- runtime failure modes -------------------------------------------------------------------


async def test_crash_after_n_requests(spawn: Spawn, http: aiohttp.ClientSession) -> None:
    fake = spawn("crashy", crash_after=2)
    for _ in range(2):
        status, _, _ = await post_json(http, f"{fake.url}/v1/chat/completions", {"model": "c"})
        assert status == 200
    assert await fake.wait_exit(timeout=10) == 1
    assert fake.event_log is not None
    assert (await wait_event(fake.event_log, "crash"))["completed"] == 2
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_json(http, f"{fake.url}/v1/chat/completions", {"model": "c"})


async def test_sigterm_exits_zero_quickly(spawn: Spawn) -> None:
    fake = spawn("polite")
    started = time.monotonic()
    fake.send_signal(signal.SIGTERM)
    assert await fake.wait_exit(timeout=5) == 0
    assert time.monotonic() - started < 2
    assert fake.event_log is not None
    assert (await wait_event(fake.event_log, "sigterm"))["ignored"] is False


async def test_ignore_sigterm_needs_sigkill(spawn: Spawn, http: aiohttp.ClientSession) -> None:
    fake = spawn("stubborn", ignore_sigterm=True)
    fake.send_signal(signal.SIGTERM)
    assert fake.event_log is not None
    assert (await wait_event(fake.event_log, "sigterm"))["ignored"] is True
    async with http.get(f"{fake.url}/health") as resp:  # handled the signal, still serving
        assert resp.status == 200
    assert fake.proc is not None and fake.proc.poll() is None
    fake.send_signal(signal.SIGKILL)
    assert await fake.wait_exit(timeout=5) == -signal.SIGKILL


async def test_fork_grandchild_shares_group_and_outlives_parent(spawn: Spawn) -> None:
    fake = spawn("wrapper", fork_grandchild=True)
    gpid = fake.grandchild_pid
    assert gpid is not None and pid_alive(gpid)
    assert os.getpgid(gpid) == os.getpgid(fake.pid) == fake.pid
    fake.send_signal(signal.SIGKILL)  # the parent alone
    assert await fake.wait_exit(timeout=5) == -signal.SIGKILL
    assert pid_alive(gpid), "grandchild must survive a kill of its parent alone"
    os.killpg(fake.pid, signal.SIGKILL)  # the group (pgid = the dead leader's pid)
    await wait_pid_gone(gpid, timeout=5)


async def test_slow_body_arrives_in_pieces(spawn: Spawn, http: aiohttp.ClientSession) -> None:
    fake = spawn("slowbody", slow_body=0.15)
    started = time.monotonic()
    async with http.post(f"{fake.url}/v1/embeddings", json={"input": "x"}) as resp:
        pieces = [p async for p in resp.content.iter_any()]
    assert time.monotonic() - started >= 0.45  # three gaps between four pieces
    assert len(pieces) >= 2
    assert json.loads(b"".join(pieces))["model_id"] == "slowbody"


async def test_client_disconnect_mid_stream_is_logged(
    spawn: Spawn, http: aiohttp.ClientSession
) -> None:
    fake = spawn("streamer", chunks=50, chunk_interval=0.05)
    req = {"model": "gone", "stream": True}
    resp = await http.post(f"{fake.url}/v1/chat/completions", json=req)
    assert (await resp.content.readline()).startswith(b"data: ")
    resp.close()  # drop the connection mid-stream
    assert fake.event_log is not None
    ev = await wait_event(fake.event_log, "client_disconnected", timeout=5)
    assert ev["model"] == "gone" and ev["path"] == "/v1/chat/completions"
    assert [e for e in read_events(fake.event_log) if e["event"] == "request_done"] == []


async def test_client_disconnect_mid_slow_body_is_logged(
    spawn: Spawn, http: aiohttp.ClientSession
) -> None:
    fake = spawn("slowdrop", slow_body=0.3)
    resp = await http.post(f"{fake.url}/v1/chat/completions", json={"model": "bye"})
    await resp.content.readany()
    resp.close()
    assert fake.event_log is not None
    ev = await wait_event(fake.event_log, "client_disconnected", timeout=5)
    assert ev["model"] == "bye"
