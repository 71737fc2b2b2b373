"""ComfyUI passthrough, websockets (ignored or not), 429s and shutdown as clients see them.

Websocket models (``comfyui_auto`` and others) are the echo server of
:mod:`tests.integration.ws_echo` run as real children the router starts; the
echo's first message repeats the path it saw, so a selector's pick shows in
the rewritten ``?model=``. Router spec §8.1 scenarios are ``test_s81_<n>_…``.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from pathlib import Path

import aiohttp
import pytest

from modelswap.app import ACCESS_LOG_KEY
from modelswap.errors import ShutdownInProgressError
from modelswap.server.access_log import AccessRecord
from modelswap.testing.fake_process import free_port
from tests.integration.router_harness import DEADLINE
from tests.integration.server_harness import fake, running_server, sse_events

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

KEY = "secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
UPGRADE = {"Connection": "keep-alive, Upgrade", "Upgrade": "websocket"}
JSON_TYPE = {"Content-Type": "application/json"}


def ws_yaml(model_id: str, *, ignore_websockets: bool = False, ttl: int = 0) -> str:
    """A models: entry running the websocket echo server as ``model_id``."""
    port = free_port()
    cmd = shlex.join([sys.executable, "-m", "tests.integration.ws_echo", "--port", str(port)])
    compat = "    compat: {ignoreWebsockets: true}\n" if ignore_websockets else ""
    return (
        f"  {model_id}:\n    cmd: {json.dumps(cmd)}\n"
        f"    proxy: http://127.0.0.1:{port}\n    unloadTimeout: 2\n    ttl: {ttl}\n{compat}"
    )


def comfy_yaml(port: int) -> str:
    cmd = shlex.join([sys.executable, "-m", "tests.integration.ws_echo", "--port", str(port)])
    return (
        f"  comfyui_auto:\n    cmd: {json.dumps(cmd)}\n"
        f"    proxy: http://127.0.0.1:{port}\n    unloadTimeout: 2\n"
    )


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str]:
    return response.status, (await response.json())["error"]["message"]


async def test_s24_13_34_35_36_comfyui_passthrough_and_websockets(tmp_path: Path) -> None:
    m1 = fake(tmp_path, "m1")
    comfy = comfy_yaml(free_port())
    async with running_server(
        [m1], head=f"apiKeys: [{KEY}]", together=False, extra_models=comfy
    ) as server:
        async with aiohttp.ClientSession(server.url) as s:
            async with s.get("/comfyui/") as resp:
                assert resp.status == 401  # scenario 13
            async with s.get("/comfyui?token=value", headers=AUTH, allow_redirects=False) as resp:
                assert resp.status == 301
                assert resp.headers["Location"] == "/comfyui/?token=value"
            async with s.post("/comfyui?token=value", headers=AUTH, allow_redirects=False) as r:
                assert r.status == 308
            async with s.get("/comfyui/api/prompt", headers=AUTH) as resp:
                assert resp.status == 409
                message = (await resp.json())["error"]["message"]
                assert "only /comfyui/ can start it" in message
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.ws_connect("/comfyui/ws", headers=AUTH)
            assert refused.value.status == 409  # an ignored websocket never starts it
            assert server.router.running_models() == {}
            async with s.get("/comfyui/?token=value", headers=AUTH) as resp:
                assert resp.status == 200
                assert (await resp.json()) == {"path": "/", "websocket": False}
            async with s.ws_connect("/comfyui/ws/a%2Fb?clientId=7", headers=AUTH) as ws:
                hello = await ws.receive_json()
                assert hello["path"] == "/ws/a%2Fb?clientId=7"
                assert "authorization" not in hello["headers"]
                await ws.send_str("ping")
                assert await ws.receive_str() == "ping"
        stats = await server.idle()
        assert stats.in_flight == {}


PEER = """
peers:
  gone:
    proxy: http://127.0.0.1:9
    models: [remote]
"""


async def test_s24_37_no_comfyui_model_and_shutting_down_is_500(tmp_path: Path) -> None:
    async with (
        running_server([fake(tmp_path, "m1")], tail=PEER) as server,
        server.session() as s,
    ):
        if True:
            async with s.get("/comfyui/") as resp:
                assert resp.status == 404
                message = (await resp.json())["error"]["message"]
                assert message == "local model comfyui_auto not found"
            await server.router.shutdown(1)
            body = {"model": "m1", "messages": []}
            async with s.post("/v1/chat/completions", json=body) as resp:
                assert resp.status == 500
                message = (await resp.json())["error"]["message"]
                assert message == "unspecific error: group is shutting down"
            await server.state.peers.shutdown()
            body = {"model": "gone/remote", "messages": []}
            async with s.post("/v1/chat/completions", json=body) as resp:
                assert resp.status == 500
                message = (await resp.json())["error"]["message"]
                assert message == "unspecific error: peer proxy is shutting down"


async def test_router_3_2_no_model_while_shutting_down_is_500(tmp_path: Path) -> None:
    """Router spec §3.2 step 1: the shutdown check comes before model extraction."""
    async with running_server([fake(tmp_path, "m1")], tail=PEER) as server, server.session() as s:
        async with s.post("/v1/chat/completions", json=CHAT) as resp:
            assert await error_of(resp) == (404, "no model id could be identified")
        await server.router.shutdown(1)
        for body in (CHAT, {"model": "", **CHAT}):
            async with s.post("/v1/chat/completions", json=body) as resp:
                assert await error_of(resp) == (500, "unspecific error: group is shutting down")
        async with s.post("/v1/chat/completions", data=b"{", headers=JSON_TYPE) as resp:
            assert await error_of(resp) == (500, "unspecific error: group is shutting down")
        async with s.get("/props") as resp:
            assert await error_of(resp) == (500, "unspecific error: group is shutting down")
        body = {"model": "gone/remote", **CHAT}  # a peer model is not the local router's
        async with s.post("/v1/chat/completions", json=body) as resp:
            assert resp.status == 502


SPILL = """
selectors:
  spill: {strategy: spillover, settings: {spillover: 1}, targets: [a, b]}
"""


async def test_s24_47_every_spillover_target_gone_is_503(tmp_path: Path) -> None:
    """Server spec §8: local ``stopping``/``shutdown`` targets are skipped; none left → 503."""
    stubborn = [
        fake(tmp_path, m, ignore_sigterm=True, settings={"unloadTimeout": 60}) for m in "ab"
    ]
    async with running_server(stubborn, tail=SPILL) as server, server.session() as s:
        for model in ("a", "b"):
            async with s.post("/v1/chat/completions", json={"model": model, **CHAT}) as resp:
                assert resp.status == 200
        unloading = asyncio.create_task(server.unload_all())  # SIGTERM ignored: stopping
        await server.until(lambda st: st.state("a") == st.state("b") == "stopping")
        expected = (503, 'selector "spill" has no available spillover targets')
        async with s.post("/v1/chat/completions", json={"model": "spill", **CHAT}) as resp:
            assert await error_of(resp) == expected
            assert (await resp.json())["error"]["type"] == "server_error"
        for model in ("a", "b"):
            server.kill(model)  # the stops end when the children are reaped, not at 60 s
        await unloading
        await server.router.shutdown(1)
        assert {server.router.state_of(m) for m in "ab"} == {"shutdown"}
        async with s.post("/v1/chat/completions", json={"model": "spill", **CHAT}) as resp:
            assert await error_of(resp) == expected
        assert server.state.selectors.reservations("spill") == {}


WS_SELECTOR = """
groups:
  ws: {swap: false, exclusive: false, members: [wa, wb]}
selectors:
  ws-spill: {strategy: spillover, settings: {spillover: 1}, targets: [wa, wb]}
"""


async def test_s24_52_ignored_websockets_take_no_lasting_selector_load(tmp_path: Path) -> None:
    extra = ws_yaml("wa", ignore_websockets=True) + ws_yaml("wb", ignore_websockets=True)
    async with (
        running_server([], tail=WS_SELECTOR, together=False, extra_models=extra) as server,
        server.session() as s,
    ):
        for model in ("wa", "wb"):  # ignored websockets need ready models
            async with s.get(f"/upstream/{model}/") as resp:
                assert resp.status == 200
        picked = []
        async with s.ws_connect("/props?model=ws-spill") as first:
            picked.append((await first.receive_json())["path"])
            assert server.state.selectors.reservations("ws-spill") == {}  # given back at once
            async with s.ws_connect("/props?model=ws-spill") as second:
                picked.append((await second.receive_json())["path"])
                await second.send_str("ping")
                assert await second.receive_str() == "ping"
        async with s.ws_connect("/props?model=ws-spill") as third:
            picked.append((await third.receive_json())["path"])
        assert picked == ["/props?model=wa", "/props?model=wb", "/props?model=wa"]  # round-robin
        assert server.state.selectors.reservations("ws-spill") == {}
        stats = await server.idle()
        assert stats.in_flight == {}


async def test_s81_24_ignored_websocket_cannot_start_a_model(tmp_path: Path) -> None:
    stuck = fake(tmp_path, "a", never_healthy=True, settings={"compat": {"ignoreWebsockets": True}})
    async with running_server([stuck]) as server, server.session() as s:
        async with s.get("/props?model=a", headers=UPGRADE) as resp:  # case 1: stopped
            assert await error_of(resp) == (
                409,
                "model a is not loaded; ignored websocket requests cannot start it",
            )
        assert server.router.running_models() == {} and stuck.events("listening") == []
        loading = asyncio.create_task(
            s.post("/v1/chat/completions", json={"model": "a", **CHAT})
        )  # case 2: a plain request starts it; it never gets healthy
        await server.until(lambda st: st.state("a") == "starting")
        async with s.get("/props?model=a", headers=UPGRADE) as resp:
            assert resp.status == 409
        await server.unload_all()
        async with await loading as resp:
            assert resp.status != 200
        assert server.router.statistics().processes["a"].starts == 1  # the plain request's
        assert stuck.events("request") == []  # serve_calls = 0


async def test_s81_25_websocket_without_the_compat_flag_starts_the_model(tmp_path: Path) -> None:
    async with (
        running_server([], together=False, extra_models=ws_yaml("w")) as server,
        server.session() as s,
    ):
        assert server.router.running_models() == {}
        async with s.ws_connect("/props?model=w") as ws:
            assert (await ws.receive_json())["path"] == "/props?model=w"
            assert server.router.running_models() == {"w": "ready"}
            await ws.send_str("ping")
            assert await ws.receive_str() == "ping"
        assert server.router.statistics().processes["w"].starts == 1
        await server.idle()


async def test_s81_26_an_ignored_websocket_does_not_block_a_swap(tmp_path: Path) -> None:
    b = fake(tmp_path, "b")  # no groups: starting b evicts w and the other way round
    async with (
        running_server(
            [b], together=False, extra_models=ws_yaml("w", ignore_websockets=True)
        ) as server,
        server.session() as s,
    ):
        async with s.get("/upstream/w/") as resp:
            assert resp.status == 200
        async with s.ws_connect("/props?model=w") as ws:
            await ws.receive_json()  # the websocket is being served
            async with s.post("/v1/chat/completions", json={"model": "b", **CHAT}) as resp:
                assert resp.status == 200
            assert server.router.running_models() == {"b": "ready"}  # w stopped under it
            closing = await ws.receive()  # its upstream went away: the tunnel ends
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await server.idle()


async def test_s88_131_ttl_ignores_ignored_websockets(tmp_path: Path) -> None:
    """An open ignored websocket is no activity: the TTL still unloads the model."""
    extra = ws_yaml("w", ignore_websockets=True, ttl=1)
    async with (
        running_server([], together=False, extra_models=extra) as server,
        server.session() as s,
    ):
        async with s.get("/upstream/w/") as resp:  # an ordinary request loads it
            assert resp.status == 200
        async with s.ws_connect("/props?model=w") as ws:
            await ws.receive_json()  # the websocket is open and being served
            await server.until(lambda st: st.processes["w"].state.value == "stopped")
            closing = await ws.receive()  # its upstream went away: the tunnel ends
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await server.idle()


async def test_s81_28_429_is_sent_before_any_loading_stream(tmp_path: Path) -> None:
    a = fake(tmp_path, "a", settings={"concurrencyLimit": 2, "sendLoadingState": True})
    b = fake(tmp_path, "b", chunks=600, chunk_interval=0.05)  # held open until closed
    async with running_server([a, b], together=False) as server, server.session() as s:
        stream = {"stream": True, **CHAT}
        async with s.post("/v1/chat/completions", json={"model": "b", **stream}) as held:
            await held.content.readline()  # b is being served: a cannot start yet

            async def loading() -> tuple[int, str]:
                body = {"model": "a", **stream}
                async with s.post("/v1/chat/completions", json=body) as resp:
                    events = await sse_events(resp)
                return resp.status, "".join(
                    e["choices"][0]["delta"].get("reasoning_content", "")
                    for e in events
                    if isinstance(e, dict) and e.get("choices")
                )

            queued = [asyncio.create_task(loading()) for _ in range(2)]
            await server.until(lambda st: [m for _, m in st.queue].count("a") == 2)
            async with s.post("/v1/chat/completions", json={"model": "a", **stream}) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "1"
                assert resp.headers["Content-Type"].startswith("application/json")
                text = await resp.text()
            error = json.loads(text)["error"]
            assert error["message"] and error["type"] == "rate_limit_error"
            assert "llama-swap loading model" not in text
        results = await asyncio.gather(*queued)  # b released: a starts and serves both
        for status, reasoning in results:
            assert status == 200 and "llama-swap loading" in reasoning  # a loading stream
        await server.idle()


async def test_s24_81_shutting_down_twice_shuts_each_router_down_once(tmp_path: Path) -> None:
    m1 = fake(tmp_path, "m1")
    async with running_server([m1], tail=PEER) as server, server.session() as s:
        async with s.post("/v1/chat/completions", json={"model": "m1", **CHAT}) as resp:
            assert resp.status == 200
        await server.router.shutdown(1)
        await server.state.peers.shutdown()
        with pytest.raises(ShutdownInProgressError):
            await server.router.shutdown(1)
        with pytest.raises(ShutdownInProgressError):
            await server.state.peers.shutdown()
        assert server.router.statistics().shutting_down
    # ...and the app's own cleanup (a third shutdown) stopped nothing twice either
    assert len(m1.events("listening")) == 1 and len(m1.events("sigterm")) == 1


async def test_s24_88_websocket_upgrade_through_the_access_log(tmp_path: Path) -> None:
    records: asyncio.Queue[AccessRecord] = asyncio.Queue()
    async with (
        running_server([], together=False, extra_models=ws_yaml("w")) as server,
        server.session() as s,
    ):
        server.app[ACCESS_LOG_KEY].observers.append(records.put_nowait)
        async with s.ws_connect("/upstream/w/socket") as ws:
            assert (await ws.receive_json())["path"] == "/socket"
            await ws.send_str("ping")
            assert await ws.receive_str() == "ping"
        async with asyncio.timeout(DEADLINE):  # logged once the tunnel has closed
            record = await records.get()
        assert (record.method, record.path, record.status) == ("GET", "/upstream/w/socket", 101)
        assert records.empty()
