"""ComfyUI passthrough with websockets, ignored websockets, and shutdown as clients see it.

The ``comfyui_auto`` model is the websocket echo server of
:mod:`tests.integration.ws_echo` run as a real child the router starts.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import aiohttp
import pytest

from modelswap.testing.fake_process import free_port
from tests.integration.server_harness import fake, running_server

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

KEY = "secret"
AUTH = {"Authorization": f"Bearer {KEY}"}


def comfy_yaml(port: int) -> str:
    cmd = shlex.join([sys.executable, "-m", "tests.integration.ws_echo", "--port", str(port)])
    return (
        f"  comfyui_auto:\n    cmd: {json.dumps(cmd)}\n"
        f"    proxy: http://127.0.0.1:{port}\n    unloadTimeout: 2\n"
    )


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
