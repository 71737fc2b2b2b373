"""The peer router against a real fake upstream acting as the peer (router spec §8.9).

A peer is just another HTTP server, so a fake-upstream process plays it; its
echo (``received``, ``received_headers``, ``path``) shows what the peer got.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from modelswap.config import Config, load_config_text
from modelswap.errors import ShutdownInProgressError
from modelswap.server.peers import PeerShutdownTimeoutError
from modelswap.testing.fake_process import FakeUpstreamProcess, free_port
from tests.integration.proxy_harness import Harness, running_proxy

pytestmark = pytest.mark.timeout(30)

KEY = "client-secret"
PEER_KEY = "secret-api-key"
TEXT = "alpha beta gamma delta"


@pytest.fixture(scope="module")
def peer() -> Iterator[FakeUpstreamProcess]:
    with FakeUpstreamProcess("peer-model", chunks=4, response_text=TEXT) as fake:
        yield fake


@pytest.fixture(scope="module")
def slow_peer() -> Iterator[FakeUpstreamProcess]:
    """A peer whose streams take 8 s (40 chunks, 200 ms apart)."""
    with FakeUpstreamProcess("slow-peer", chunks=40, chunk_interval=0.2) as fake:
        yield fake


@pytest.fixture(scope="module")
def paced_peer() -> Iterator[FakeUpstreamProcess]:
    """A peer whose streams take ~0.6 s (2 chunks, 150 ms between SSE events)."""
    with FakeUpstreamProcess("paced-peer", chunks=2, chunk_interval=0.15) as fake:
        yield fake


def make_config(
    peer: FakeUpstreamProcess, slow_peer: FakeUpstreamProcess, paced_peer: FakeUpstreamProcess
) -> Config:
    peers = {
        "strix": {
            "proxy": peer.url,
            "apiKey": PEER_KEY,
            "models": ["Q3.6-27B-MTP", "shared"],
            "filters": {"setParams": {"max_tokens": 9}},
        },
        "nokey": {"proxy": f"{peer.url}/api", "models": ["other", "shared"]},
        "slow": {"proxy": slow_peer.url, "models": ["slow-model"]},
        "paced": {"proxy": paced_peer.url, "models": ["paced-model"]},
        "dead": {"proxy": f"http://127.0.0.1:{free_port()}", "models": ["gone"]},
    }
    return load_config_text(json.dumps({"apiKeys": [KEY], "peers": peers})).config


@pytest.fixture
async def proxy(
    peer: FakeUpstreamProcess, slow_peer: FakeUpstreamProcess, paced_peer: FakeUpstreamProcess
) -> AsyncIterator[Harness]:
    async with running_proxy(make_config(peer, slow_peer, paced_peer)) as harness:
        yield harness


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        yield session


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def post(http: aiohttp.ClientSession, proxy: Harness, body: Any) -> tuple[int, Any]:
    async with http.post(f"{proxy.url}/v1/chat/completions", json=body) as r:
        return r.status, await r.json()


async def test_qualified_name_rewritten_key_injected_filters_applied_scenarios_143_146_147(
    proxy: Harness, peer: FakeUpstreamProcess, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, proxy, chat("strix/Q3.6-27B-MTP"))
    assert status == 200
    assert body["received"] == {**chat("Q3.6-27B-MTP"), "max_tokens": 9}
    seen = body["received_headers"]
    assert seen["authorization"] == f"Bearer {PEER_KEY}"
    assert seen["x-api-key"] == PEER_KEY
    assert seen["host"] == f"127.0.0.1:{peer.port}"
    assert "x-forwarded-for" not in seen


async def test_bare_name_body_forwarded_unchanged_to_base_path_scenario_144(
    proxy: Harness, http: aiohttp.ClientSession
) -> None:
    raw = b'{"model": "other",   "keep": "my formatting"}'
    headers = {"Content-Type": "application/json", "X-Api-Key": KEY}
    async with http.post(f"{proxy.url}/v1/chat/completions?x=1", data=raw, headers=headers) as r:
        echo = await r.json()
    assert echo["path"] == "/api/v1/chat/completions"  # the peer's base path is kept
    assert echo["query"] == {"x": "1"}
    assert echo["body"] == raw.decode()
    seen = echo["received_headers"]
    assert "authorization" not in seen and "x-api-key" not in seen  # no key: client's stripped


async def test_sse_gets_accel_buffering_header_scenario_148(
    proxy: Harness, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{proxy.url}/v1/chat/completions", json=chat("strix/Q3.6-27B-MTP", stream=True)
    ) as r:
        assert r.headers["X-Accel-Buffering"] == "no"
        assert b"data: [DONE]" in await r.read()


async def test_ambiguous_bare_name_unknown_and_dead_peer(
    proxy: Harness, http: aiohttp.ClientSession
) -> None:
    assert (await post(http, proxy, chat("shared")))[0] == 404  # listed by two peers
    status, body = await post(http, proxy, chat("nokey/shared"))
    assert status == 200 and json.loads(body["body"])["model"] == "shared"
    status, body = await post(http, proxy, chat("gone"))
    assert status == 502
    assert body["error"]["message"].startswith("peer proxy error: Cannot connect to host")


async def test_shutdown_waits_for_inflight_then_refuses_scenarios_149_150_153(
    proxy: Harness, http: aiohttp.ClientSession
) -> None:
    url = f"{proxy.url}/v1/chat/completions"
    async with http.post(url, json=chat("paced-model", stream=True)) as r:
        await r.content.readany()
        shutdown = asyncio.create_task(proxy.peers.shutdown(5))
        await asyncio.sleep(0)
        assert not shutdown.done()  # waiting for the in-flight stream
        body = await r.read()
    async with asyncio.timeout(5):
        await shutdown  # returns None once the request finished
    assert proxy.peers.statistics() == {"inflight": 0, "shutting_down": True}
    assert body.rstrip().endswith(b"data: [DONE]")  # the in-flight request completed normally
    status, error = await post(http, proxy, chat("nokey/other"))
    assert status == 500
    assert error["error"]["message"] == "unspecific error: peer proxy is shutting down"
    with pytest.raises(ShutdownInProgressError, match="already in progress"):
        await proxy.peers.shutdown(0)


async def test_shutdown_timeout_cancels_stuck_request_scenario_151(
    proxy: Harness, http: aiohttp.ClientSession
) -> None:
    url = f"{proxy.url}/v1/chat/completions"
    async with http.post(url, json=chat("slow-model", stream=True)) as r:
        await r.content.readany()
        with pytest.raises(PeerShutdownTimeoutError, match=r"peer shutdown timed out after 200ms"):
            await proxy.peers.shutdown(0.2)
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()  # the stream was cut, not completed
    assert proxy.served[-1] == ("cancelled", "slow-model")
    assert proxy.peers.statistics()["inflight"] == 0


async def test_shutdown_zero_with_nothing_in_flight(
    proxy: Harness, http: aiohttp.ClientSession
) -> None:
    await proxy.peers.shutdown(0)
    assert (await post(http, proxy, chat("strix/Q3.6-27B-MTP")))[0] == 500
