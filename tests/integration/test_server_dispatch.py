"""The HTTP surface end to end: ``build_app`` over real fake upstreams the router starts.

One app and one set of fakes for the module (they start on first use, in
~0.3 s). Scenario numbers refer to server spec §24. Waits are on facts: the
fake's event log, the router's change notifications.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import pytest_asyncio

from modelswap.server.proxy import UPSTREAM_CLIENT
from modelswap.testing.fake_process import FakeUpstreamProcess, wait_event
from tests.integration.server_harness import Server, fake, running_server, sse_events

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

KEY = "secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def peer_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeUpstreamProcess]:
    log = tmp_path_factory.mktemp("peer") / "events.jsonl"
    with FakeUpstreamProcess("peer-fake", event_log=log) as process:
        yield process


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(
    tmp_path_factory: pytest.TempPathFactory, peer_fake: FakeUpstreamProcess
) -> AsyncIterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("dispatch")
    fakes = [
        fake(tmp, "m1", settings={"aliases": ["m1-alias"]}),
        fake(
            tmp,
            "m2",
            settings={
                "useModelName": "upstream-name",
                "filters": {
                    "stripParams": "temperature",
                    "setParams": {"top_p": 0.9},
                    "setParamsByID": {"m2-variant": {"top_p": 0.1}},
                },
            },
        ),
        fake(tmp, "whisper", settings={"useModelName": "whisper-large-v3"}),
        fake(tmp, "shared"),
        fake(tmp, "slow", chunks=60, chunk_interval=0.1, settings={"concurrencyLimit": 1}),
        fake(tmp, "crashy", chunks=60, chunk_interval=0.1),
        fake(tmp, "cold", startup_delay=0.6, settings={"sendLoadingState": True}),
        fake(tmp, "broken", exit_at_start=3, settings={"sendLoadingState": True}),
    ]
    head = f"apiKeys: [{KEY}]\nupstream:\n  ignorePaths: ['.*\\.(js|json|css)$']\n"
    tail = f"""
peers:
  peer1:
    proxy: {peer_fake.url}
    apiKey: peerkey
    models: [remote-model, shared, org/model]
    filters:
      setParams: {{peer_flag: 1}}
"""
    async with running_server(fakes, head, tail) as running:
        running.headers = dict(AUTH)
        yield running


async def post(server: Server, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
    async with server.session() as s, s.post(path, json=body, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


# --- dispatch ---------------------------------------------------------------------


async def test_s24_1_chat_goes_to_the_local_model(server: Server) -> None:
    fast = server.app[UPSTREAM_CLIENT]._fast
    assert fast is not None
    status, body = await post(server, "/v1/chat/completions", {"model": "m1", **CHAT})
    assert status == 200, body
    assert body["model_id"] == "m1" and body["received_model"] == "m1"
    # a local http:// upstream and a body in memory: the lean client carried it
    assert any(key.port == server.fakes["m1"].port for key in fast._pools), fast


ROUTES = [
    ("/v1/responses", "/v1/responses"),
    ("/v1/completions", "/v1/completions"),
    ("/v1/messages", "/v1/messages"),
    ("/v1/messages/count_tokens", "/v1/messages/count_tokens"),
    ("/v1/embeddings", "/v1/embeddings"),
    ("/reranking", "/reranking"),
    ("/rerank", "/rerank"),
    ("/v1/rerank", "/v1/rerank"),
    ("/v1/reranking", "/v1/reranking"),
    ("/infill", "/infill"),
    ("/completion", "/completion"),
    ("/v1/audio/speech", "/v1/audio/speech"),
    ("/v1/audio/voices", "/v1/audio/voices"),
    ("/v1/images/generations", "/v1/images/generations"),
    ("/sdapi/v1/txt2img", "/sdapi/v1/txt2img"),
    ("/sdapi/v1/img2img", "/sdapi/v1/img2img"),
    ("/audioapi/v1/tasks/run", "/v1/tasks/run"),
    ("/v/chat/completions", "/chat/completions"),
    ("/v/responses", "/responses"),
    ("/v/completions", "/completions"),
    ("/v/messages", "/messages"),
    ("/v/messages/count_tokens", "/messages/count_tokens"),
    ("/v/embeddings", "/embeddings"),
    ("/v/rerank", "/rerank"),
    ("/v/reranking", "/reranking"),
]


async def test_s24_5_10_every_json_route_reaches_the_model_with_prefixes_stripped(
    server: Server,
) -> None:
    body = {"model": "m1", "input": "x", "prompt": "x", "query": "q", "documents": ["d"], **CHAT}
    async with server.session() as s:
        for path, upstream_path in ROUTES:
            async with s.post(path, json=body) as resp:
                assert resp.status == 200, (path, await resp.text())
                assert resp.headers["X-Fake-Model-Id"] == "m1", path
                answer = await resp.read()
            if resp.content_type == "application/json":
                echoed = json.loads(answer)
                if isinstance(echoed, dict) and "path" in echoed:  # the fake's catch-all
                    assert echoed["path"] == upstream_path, path
                    continue
            # a real endpoint of the fake answered: its event log names the path
            assert server.fakes["m1"].events("request")[-1]["path"] == upstream_path, path


async def test_get_routes_take_the_model_from_the_query_and_answer_head(server: Server) -> None:
    async with server.session() as s:
        for path in ("/props", "/v1/audio/voices", "/sdapi/v1/loras"):
            async with s.get(path, params={"model": "m1", "autoload": "false"}) as resp:
                assert resp.status == 200, path
                body = await resp.json()
                assert body["model_id"] == "m1"
                assert body["query"] == {"model": "m1", "autoload": "false"}
            async with s.head(path, params={"model": "m1"}) as resp:
                assert resp.status == 200, path


async def test_s24_57_multipart_use_model_name_keeps_the_file(server: Server) -> None:
    """The form's model becomes useModelName; file bytes intact; routed as sent."""
    async with server.session() as s:
        form = aiohttp.FormData()
        form.add_field("model", "whisper")
        form.add_field("file", b"xx", filename="a.wav", content_type="audio/wav")
        async with s.post("/v1/audio/transcriptions", data=form) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert body["model_id"] == "whisper"
        assert body["received_model"] == "whisper-large-v3"
        assert body["received"]["file"] == {"filename": "a.wav", "size": 2}
        form = aiohttp.FormData()
        form.add_field("model", "m1")
        form.add_field("image", b"png", filename="i.png")
        async with s.post("/v1/images/edits", data=form) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["model_id"] == "m1" and body["path"] == "/v1/images/edits"


async def test_alias_is_routed_but_forwarded_as_sent(server: Server) -> None:
    status, body = await post(server, "/v1/chat/completions", {"model": "m1-alias", **CHAT})
    assert status == 200
    assert body["model_id"] == "m1" and body["received_model"] == "m1-alias"


async def test_s24_55_use_model_name_and_filters(server: Server) -> None:
    request = {"model": "m2", "temperature": 1, "top_p": 0.5, **CHAT}
    status, body = await post(server, "/v1/chat/completions", request)
    assert status == 200
    received = body["received"]
    assert received["model"] == "upstream-name"
    assert "temperature" not in received and received["top_p"] == 0.9
    status, body = await post(server, "/v1/chat/completions", {**request, "model": "m2-variant"})
    assert body["model_id"] == "m2" and body["received"]["top_p"] == 0.1


async def test_s24_2_3_peers_and_local_precedence(
    server: Server, peer_fake: FakeUpstreamProcess
) -> None:
    status, body = await post(server, "/v1/chat/completions", {"model": "shared", **CHAT})
    assert body["model_id"] == "shared"  # local wins
    status, body = await post(server, "/v1/chat/completions", {"model": "peer1/shared", **CHAT})
    assert status == 200 and body["model_id"] == "peer-fake"
    assert body["received_model"] == "shared"  # FQN rewritten to the peer's own id
    status, body = await post(server, "/v1/chat/completions", {"model": "remote-model", **CHAT})
    assert status == 200 and body["received_model"] == "remote-model"
    headers = body["received"] and body["received_headers"]
    assert headers["authorization"] == "Bearer peerkey"
    assert headers["x-api-key"] == "peerkey"
    assert body["received"]["peer_flag"] == 1  # the peer's filters apply


async def test_s24_56_peer_filters_resolve_for_a_qualified_slashed_name(server: Server) -> None:
    request = {"model": "peer1/org/model", "temperature": 0.5, **CHAT}
    status, body = await post(server, "/v1/chat/completions", request)
    assert status == 200, body
    assert body["model_id"] == "peer-fake"
    assert body["received_model"] == "org/model"  # the peer's own id: no useModelName
    assert body["received"] == {**request, "model": "org/model", "peer_flag": 1}


async def test_s24_4_9_18_missing_unknown_and_malformed(server: Server) -> None:
    status, body = await post(server, "/v1/chat/completions", {"model": "nope"})
    assert status == 404 and body["error"]["message"] == "no router for requested model"
    assert body["src"] == "llama-swap" and body["error"]["code"] == "not_found"
    assert body["error"]["param"] is None
    assert body["error"]["type"] == "invalid_request_error"
    status, body = await post(server, "/v1/chat/completions", {})
    assert status == 404 and body["error"]["message"] == "no model id could be identified"
    async with (
        server.session() as s,
        s.post(
            "/v1/chat/completions", data=b"{nope", headers={"Content-Type": "application/json"}
        ) as resp,
    ):
        assert resp.status == 404
        message = (await resp.json())["error"]["message"]
        assert message.startswith("no model id could be identified: invalid JSON body")
    async with (
        server.session() as s,
        s.post("/v1/chat/completions", data=b'{"model":"m1"}') as resp,
    ):
        assert resp.status == 404  # a JSON body without a JSON content type has no model


async def test_s24_14_not_found_envelope(server: Server) -> None:
    async with server.session() as s, s.get("/upstream/nope/v1") as resp:
        assert resp.status == 404
        assert resp.headers["Content-Type"].startswith("application/json")
        assert await resp.json() == {
            "src": "llama-swap",
            "error": {
                "message": "model not found",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            },
        }


async def test_s24_17_accept_chooses_the_error_format(server: Server) -> None:
    async with server.session() as s:
        headers = {"Accept": "text/plain"}
        async with s.post("/v1/embeddings", json={"model": "x"}, headers=headers) as resp:
            assert resp.status == 404
            assert await resp.text() == "llama-swap: no router for requested model"
        headers = {"Accept": "text/html"}
        async with s.post("/v1/embeddings", json={"model": "x"}, headers=headers) as resp:
            assert "<p>no router for requested model</p>" in await resp.text()


async def test_s24_6_mux_behaviour(server: Server) -> None:
    async with aiohttp.ClientSession(server.url) as s:  # no key: the mux answers first
        async with s.get("/does-not-exist") as resp:
            assert resp.status == 404
            assert (await resp.text()).strip() == "404 page not found"
        async with s.get("/v1/chat/completions") as resp:
            assert resp.status == 405 and "POST" in resp.headers["Allow"]
        async with s.head("/health") as resp:
            assert resp.status == 200


async def test_body_over_the_cap_is_413(server: Server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n"
        b"Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n{"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert b" 413 " in status_line


# --- auth, CORS, unprotected routes --------------------------------------------------


async def test_s24_11_12_auth(server: Server) -> None:
    body = {"model": "m1", **CHAT}
    basic = base64.b64encode(b"anyone:secret").decode()
    async with aiohttp.ClientSession(server.url) as s:
        async with s.post("/v1/chat/completions", json=body) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
            error = (await resp.json())["error"]
            assert error["message"] == "unauthorized: invalid or missing API key"
        for headers, expected in [
            ({"Authorization": "Bearer wrong"}, 401),
            ({"Authorization": "bearer secret"}, 200),
            ({"Authorization": f"Basic {basic}"}, 200),
            ({"Authorization": f"bAsIc {basic}", "x-api-key": "wrong"}, 200),
            ({"x-api-key": "secret"}, 200),
            ({"Authorization": "Bearer wrong", "x-api-key": "secret"}, 401),
            ({"Authorization": "Basic !!!", "x-api-key": "secret"}, 200),
        ]:
            async with s.post("/v1/chat/completions", json=body, headers=headers) as resp:
                assert resp.status == expected, headers
                if expected == 200:
                    received = (await resp.json())["received_headers"]
                    assert "authorization" not in received and "x-api-key" not in received
        async with s.get("/running") as resp:
            assert resp.status == 401


async def test_s24_7_health_routes_answer_ok_without_a_key(server: Server) -> None:
    async with aiohttp.ClientSession(server.url) as s:
        for path in ("/health", "/wol-health"):
            async with s.get(path) as resp:
                assert resp.status == 200 and await resp.text() == "OK"


async def test_s24_84_root_and_upstream_redirect_to_the_ui(server: Server) -> None:
    async with aiohttp.ClientSession(server.url) as s:
        async with s.get("/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/ui"
        async with s.get("/upstream", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/ui/models"


async def test_s24_8_cors_preflight_needs_no_key(server: Server) -> None:
    async with (
        aiohttp.ClientSession(server.url) as s,
        s.options(
            "/v1/chat/completions", headers={"Access-Control-Request-Headers": " X-A , Bad@ "}
        ) as resp,
    ):
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["Access-Control-Allow-Headers"] == "X-A"


# --- streaming, concurrency, disconnects ----------------------------------------------


async def test_streaming_through_the_router(server: Server) -> None:
    async with (
        server.session() as s,
        s.post("/v1/chat/completions", json={"model": "m1", "stream": True, **CHAT}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["X-Accel-Buffering"] == "no"
        events = await sse_events(resp)
    assert events[-1] == "[DONE]" and events[0]["model_id"] == "m1"
    await server.idle()


async def test_s24_16_concurrency_limit_is_json_429_whatever_accept(server: Server) -> None:
    async with server.session() as s:
        body = {"model": "slow", "stream": True, **CHAT}
        async with s.post("/v1/chat/completions", json=body) as held:
            assert held.status == 200
            await held.content.readline()  # the first event: the request is being served
            headers = {"Accept": "text/plain"}
            async with s.post("/v1/chat/completions", json=body, headers=headers) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "1"
                assert resp.headers["Content-Type"].startswith("application/json")
                error = (await resp.json())["error"]
        assert error == {
            "message": "Too many requests",
            "type": "rate_limit_error",
            "param": None,
            "code": "concurrency_limit",
        }
    await server.idle()


async def test_client_disconnect_mid_stream_aborts_upstream(server: Server) -> None:
    fake_slow = server.fakes["slow"]
    before = len(fake_slow.events("client_disconnected"))
    async with server.session() as s:
        body = {"model": "slow", "stream": True, **CHAT}
        resp = await s.post("/v1/chat/completions", json=body)
        await resp.content.readline()
        await server.until(lambda st: st.in_flight.get("slow") == 1)
        resp.close()  # the client goes away mid-stream
    await wait_event(fake_slow.event_log, "client_disconnected", count=before + 1, timeout=1.0)
    stats = await server.idle()
    assert stats.in_flight == {} and stats.tickets == 0


async def test_upstream_crash_mid_stream_ends_the_response(server: Server) -> None:
    async with server.session() as s:
        body = {"model": "crashy", "stream": True, **CHAT}
        async with s.post("/v1/chat/completions", json=body) as resp:
            first = await resp.content.readline()
            assert b"crashy" in first
            server.kill("crashy")
            rest = await resp.content.read()  # ends cleanly: an SSE error event, [DONE]
        assert rest.endswith(b"data: [DONE]\n\n")
        event = rest.split(b"\n\n")[-3].strip().removeprefix(b"data: ")
        error = json.loads(event)["error"]
        assert error["message"] == "upstream error: upstream disconnected mid-stream"
    await server.until(lambda st: st.state("crashy") == "stopped")
    await server.idle()


async def test_loading_stream_on_a_cold_model(server: Server) -> None:
    body = {"model": "cold", "stream": True, **CHAT}
    async with server.session() as s, s.post("/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        events = await sse_events(resp)
    reasoning = "".join(
        e["choices"][0]["delta"].get("reasoning_content", "")
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )
    assert "llama-swap loading model: cold" in reasoning and "Done! (" in reasoning
    assert any(isinstance(e, dict) and e.get("model_id") == "cold" for e in events)
    assert events[-1] == "[DONE]"


async def test_s24_18_start_failure_is_500_or_an_sse_error_after_loading(server: Server) -> None:
    body = {"model": "broken", **CHAT}
    status, answer = await post(server, "/v1/chat/completions", body)
    assert status == 500 and answer["error"]["message"].startswith("unspecific error: ")
    async with (
        server.session() as s,
        s.post("/v1/chat/completions", json={**body, "stream": True}) as resp,
    ):
        assert resp.status == 200  # the loading stream had already started
        events = await sse_events(resp)
    error = next(e for e in events if isinstance(e, dict) and "error" in e)
    assert error["src"] == "llama-swap" and error["error"]["message"].startswith("unspecific")
    assert events[-1] == "[DONE]"
    await server.idle()


# --- management ------------------------------------------------------------------------


async def test_s24_79_running(server: Server) -> None:
    await post(server, "/v1/chat/completions", {"model": "m1", **CHAT})
    async with server.session() as s, s.get("/running") as resp:
        assert resp.status == 200
        running = (await resp.json())["running"]
    entry = next(r for r in running if r["model"] == "m1")
    assert entry["state"] == "ready"
    assert entry["proxy"] == f"http://127.0.0.1:{server.fakes['m1'].port}"
    assert "fake_upstream" in entry["cmd"]
    assert set(entry) == {"model", "state", "cmd", "proxy", "ttl", "name", "description"}
    assert [r["model"] for r in running] == sorted(r["model"] for r in running)


async def test_s24_78_unload_routes(server: Server) -> None:
    await post(server, "/v1/chat/completions", {"model": "m1", **CHAT})
    await post(server, "/v1/chat/completions", {"model": "shared", **CHAT})
    async with server.session() as s:
        async with s.post("/api/models/unload/m1-alias") as resp:
            assert resp.status == 200 and await resp.text() == "OK"
        assert "m1" not in server.router.running_models()
        assert "shared" in server.router.running_models()
        async with s.post("/api/models/unload/nope") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["message"] == "model not found"
        async with s.post("/api/models/unload/peer1/shared") as resp:
            assert resp.status == 404
        async with s.post("/api/models/unload") as resp:
            assert resp.status == 200 and await resp.json() == {"msg": "ok"}
        assert server.router.running_models() == {}
        await post(server, "/v1/chat/completions", {"model": "m1", **CHAT})
        async with s.get("/unload") as resp:
            assert resp.status == 200 and await resp.text() == "OK"
        assert server.router.running_models() == {}
        async with s.get("/running") as resp:
            assert await resp.json() == {"running": []}


async def test_s24_19_listing_through_the_app(server: Server) -> None:
    async with (
        server.session() as s,
        s.get("/v1/models", headers={"Origin": "http://example.com"}) as resp,
    ):
        assert resp.headers["Access-Control-Allow-Origin"] == "http://example.com"
        ids = [m["id"] for m in (await resp.json())["data"]]
    assert "m1" in ids and "peer1/remote-model" in ids and "peer1/shared" in ids
    await post(server, "/v1/chat/completions", {"model": "m1", **CHAT})
    async with server.session() as s, s.get("/models") as resp:
        status = {m["id"]: m["status"]["value"] for m in (await resp.json())["data"]}
    assert status["m1"] == "loaded" and status["peer1/remote-model"] == "unloaded"


# --- /upstream passthrough ---------------------------------------------------------------


async def test_s24_27_28_upstream_passthrough(server: Server) -> None:
    async with server.session() as s:
        async with s.post("/upstream/m1/custom/x%2Fy?a=1", data=b'{"model":"zzz"}') as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["model_id"] == "m1" and body["raw_path"] == "/custom/x%2Fy"
        assert body["query"] == {"a": "1"} and body["body"] == '{"model":"zzz"}'
        assert "authorization" not in body["received_headers"]
        async with s.get("/upstream/m1?q=2", allow_redirects=False) as resp:
            assert resp.status == 301 and resp.headers["Location"] == "/upstream/m1/?q=2"
        async with s.post("/upstream/m1", allow_redirects=False) as resp:
            assert resp.status == 308
        async with s.get("/upstream/nope/v1") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["message"] == "model not found"
        async with s.get("/upstream/peer1/remote-model/thing") as resp:
            body = await resp.json()
        assert body["model_id"] == "peer-fake" and body["path"] == "/thing"


async def test_upstream_peer_fqn_body_model_is_rewritten(server: Server) -> None:
    """Router spec §6 / server §9.6: only a ``model`` equal to the qualified name changes."""
    sent = json.dumps({"model": "peer1/shared", "n": 1}).encode()
    async with server.session() as s:
        json_type = {"Content-Type": "application/json"}
        async with s.post("/upstream/peer1/shared/echo", data=sent, headers=json_type) as resp:
            body = await resp.json()
        assert body["model_id"] == "peer-fake" and body["path"] == "/echo"
        assert json.loads(body["body"]) == {"model": "shared", "n": 1}
        assert body["received_headers"]["content-length"] == str(len(body["body"].encode()))
        other = b'{"model": "something-else"}'
        async with s.post("/upstream/peer1/shared/echo", data=other, headers=json_type) as resp:
            assert (await resp.json())["body"] == other.decode()  # byte for byte
        async with s.get("/upstream/peer1/shared/echo?model=peer1/shared&x=1") as resp:
            assert (await resp.json())["query"] == {"model": "shared", "x": "1"}
        bare = b'{"model": "peer1/remote-model"}'  # named by the peer's own id: untouched
        async with s.post("/upstream/remote-model/echo", data=bare, headers=json_type) as resp:
            assert (await resp.json())["body"] == bare.decode()


async def test_s24_29_ignore_paths(server: Server) -> None:
    await server.unload_all()
    async with server.session() as s:
        async with s.get("/upstream/m1/app.js") as resp:
            assert resp.status == 409
            assert "not loaded" in (await resp.json())["error"]["message"]
        assert server.router.running_models() == {}  # no swap triggered
        async with s.get("/upstream/m1/") as resp:  # how the UI loads a model
            assert resp.status == 200
        async with s.get("/upstream/m1/app.js") as resp:
            assert resp.status == 200
        async with s.get("/upstream/peer1/remote-model/app.js") as resp:
            assert resp.status == 200


# --- official SDKs as clients -----------------------------------------------------------


async def test_openai_sdk_through_the_server(server: Server) -> None:
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    async with client:
        reply = await client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
        pieces = []
        stream = await client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        assert "".join(pieces) == "Hello from m1"
        embedding = await client.embeddings.create(model="m1", input="hello")
        assert len(embedding.data[0].embedding) > 0
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "hi"}]
            )


async def test_anthropic_sdk_through_the_server(server: Server) -> None:
    client = anthropic.AsyncAnthropic(base_url=server.url, api_key=KEY, max_retries=0)
    async with client:
        message = await client.messages.create(
            model="m1", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content
        async with client.messages.stream(
            model="m1", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = await stream.get_final_text()
        assert text
