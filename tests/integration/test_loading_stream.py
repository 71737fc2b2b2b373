"""The loading stream composed with the forwarder, as the glue will use it (router spec §5).

A hand-written ticket stands in for the router: the test decides when the
grant arrives (or fails). The pacing is sped up (real clock), so the whole
file runs in well under a second plus one fake-upstream start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp
import openai
import pytest
from aiohttp import web

from modelswap.config import ModelTimeouts
from modelswap.errors import ModelswapError, UpstreamStartError
from modelswap.server.errors import error_middleware
from modelswap.server.loading import LoadingStream, Pacing, start_loading_response
from modelswap.server.proxy import UPSTREAM_CLIENT, Target, join_url, setup_upstream_client
from modelswap.testing.fake_process import FakeUpstreamProcess
from tests.integration.proxy_harness import serving

pytestmark = pytest.mark.timeout(30)

TEXT = "alpha beta gamma delta"
FAST = Pacing(chars_per_second=5000.0, tick=0.02)


@dataclass
class Upstream:
    model_id: str
    base_url: str


@dataclass
class FakeTicket:
    """A router ticket whose grant the test controls."""

    model_id: str
    base_url: str
    position: int | None = 2
    grant: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    served: list[str] = field(default_factory=list)
    loading_written: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the client has been sent a few loading events."""

    async def wait_position_change(self) -> int | None:
        await asyncio.Event().wait()  # never changes in these tests
        return None

    @contextlib.asynccontextmanager
    async def granted(self) -> AsyncIterator[Upstream]:
        await self.grant  # raises the grant's error
        try:
            yield Upstream(self.model_id, self.base_url)
        finally:
            self.served.append("serve done")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstreamProcess]:
    with FakeUpstreamProcess("slow-start", chunks=4, response_text=TEXT) as process:
        yield process


@dataclass
class App:
    url: str
    tickets: asyncio.Queue[FakeTicket]
    finished: asyncio.Queue[str]


@pytest.fixture
async def app(fake: FakeUpstreamProcess) -> AsyncIterator[App]:
    tickets: asyncio.Queue[FakeTicket] = asyncio.Queue()
    finished: asyncio.Queue[str] = asyncio.Queue()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ticket = FakeTicket("slow-start", fake.url)
        tickets.put_nowait(ticket)
        response, write = await start_loading_response(request)
        events = 0

        async def counting_write(data: bytes) -> None:
            nonlocal events
            await write(data)
            events += 1
            if events == 5:
                ticket.loading_written.set()

        loading = LoadingStream(counting_write, ticket.model_id, pacing=FAST)
        loading.start(ticket)
        outcome = "cancelled"
        try:
            try:
                async with ticket.granted() as upstream:
                    await loading.finish()
                    target = Target(
                        join_url(upstream.base_url, request.rel_url.raw_path),
                        upstream.model_id,
                        ModelTimeouts(),
                    )
                    client = request.app[UPSTREAM_CLIENT]
                    await client.forward(request, target, body, response=response)
            except ModelswapError as error:
                await loading.finish()
                await loading.write_error(error.status, error.message, error.code)
                await response.write_eof()
            outcome = "done"
            return response
        finally:
            await loading.abort()
            finished.put_nowait(outcome)

    application = web.Application(middlewares=[error_middleware])
    setup_upstream_client(application)
    application.router.add_post("/v1/chat/completions", chat)
    async with serving(application) as url:
        yield App(url, tickets, finished)


def complete(data: bytes) -> str:
    """The complete SSE events received so far."""
    return data.decode(errors="ignore").rpartition("\n\n")[0]


def reasoning_and_content(body: str) -> tuple[str, str, list[str]]:
    reasoning, content, other = [], [], []
    for line in body.splitlines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            other.append(data)
            continue
        payload = json.loads(data)
        if "error" in payload:
            other.append(payload["error"]["message"])
            continue
        delta = payload["choices"][0]["delta"] if payload["choices"] else {}
        reasoning.append(delta.get("reasoning_content") or "")
        content.append(delta.get("content") or "")
    return "".join(reasoning), "".join(content), other


async def test_loading_then_upstream_stream_in_one_response(app: App) -> None:
    request = {
        "model": "slow-start",
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{app.url}/v1/chat/completions", json=request) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        seen = b""
        while "Queue position: #2" not in reasoning_and_content(complete(seen))[0]:
            seen += await r.content.readany()  # the loading stream is live
        ticket = app.tickets.get_nowait()
        ticket.grant.set_result(None)
        body = (seen + await r.read()).decode()
    reasoning, content, other = reasoning_and_content(body)
    assert reasoning.startswith("━━━━━\nllama-swap loading model: slow-start\n")
    assert "\nDone! (" in reasoning and reasoning.endswith("━━━━━\n \n")
    assert content == TEXT
    assert other == ["[DONE]"]  # the upstream's own
    assert ticket.served == ["serve done"]
    assert await app.finished.get() == "done"


async def test_failed_grant_is_an_sse_error_the_openai_sdk_understands(app: App) -> None:
    async def fail_the_grant() -> None:
        ticket = await app.tickets.get()
        await ticket.loading_written.wait()  # some loading events are out first
        ticket.grant.set_exception(UpstreamStartError("unspecific error: start failed"))

    failing = asyncio.create_task(fail_the_grant())
    client = openai.AsyncOpenAI(base_url=f"{app.url}/v1", api_key="k", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="slow-start", messages=[{"role": "user", "content": "x"}], stream=True
        )
        with pytest.raises(openai.APIError, match="unspecific error: start failed"):
            async for _ in stream:
                pass
    finally:
        await client.close()
        await failing
    assert await app.finished.get() == "done"


async def test_client_leaving_during_loading_cancels_cleanly(app: App) -> None:
    request = {"model": "slow-start", "stream": True, "messages": []}
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{app.url}/v1/chat/completions", json=request)
        await response.content.readany()
        response.close()
    async with asyncio.timeout(5):
        assert await app.finished.get() == "cancelled"
    ticket = app.tickets.get_nowait()
    assert ticket.served == []  # never granted, never forwarded
