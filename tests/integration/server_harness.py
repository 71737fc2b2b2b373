"""The real app (``build_app``) served on loopback over real fake-upstream children.

Models are fake upstreams the router itself starts from their ``cmd`` (see
:class:`~tests.integration.router_harness.Fake`); waits are on facts — the
fake's event log, the router's own change notifications — never on time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from modelswap.app import ROUTER_KEY, build_app
from modelswap.config import load_config_text
from modelswap.router.runtime import LocalRouter, RouterStatistics
from modelswap.server.context import SERVER_STATE, ServerState
from modelswap.testing.fake_process import fake_upstream_env, free_port, wait_pid_gone
from tests.integration.proxy_harness import serving
from tests.integration.router_harness import DEADLINE, Fake

TOGETHER = """
groups:
  all:
    swap: false
    exclusive: false
    members: [{members}]
"""


@dataclass
class Server:
    """A running app plus the fakes behind it."""

    url: str
    app: web.Application
    fakes: dict[str, Fake]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def router(self) -> LocalRouter:
        return self.app[ROUTER_KEY]

    @property
    def state(self) -> ServerState:
        return self.app[SERVER_STATE]

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """A client session sending the test's default headers (e.g. the API key)."""
        return aiohttp.ClientSession(self.url, headers=self.headers, **kwargs)

    async def until(self, predicate: Callable[[RouterStatistics], bool]) -> RouterStatistics:
        async with asyncio.timeout(DEADLINE):
            return await self.router.wait_for(predicate)

    async def idle(self) -> RouterStatistics:
        """Once nothing is in flight, queued or reserved any more."""
        return await self.until(
            lambda s: not s.in_flight and not s.reservations and not s.queue and s.tickets == 0
        )

    async def unload_all(self) -> None:
        await self.router.unload()

    def kill(self, model_id: str) -> None:
        """SIGKILL a model's child (an upstream crash)."""
        pid = self.fakes[model_id].events("listening")[-1]["pid"]
        os.kill(pid, signal.SIGKILL)


def fake(
    tmp: Path, model_id: str, *, settings: dict[str, Any] | None = None, **options: Any
) -> Fake:
    return Fake(
        model_id,
        free_port(),
        tmp / f"{model_id}.events",
        options,
        {"unloadTimeout": 2, **(settings or {})},
    )


def config_text(
    fakes: list[Fake],
    head: str = "",
    tail: str = "",
    *,
    together: bool = True,
    extra_models: str = "",
) -> str:
    """A config for ``fakes`` (+ ``extra_models`` YAML entries); ``together``: no evictions."""
    models = "\n".join(f.yaml() for f in fakes) + "\n" + extra_models
    routing = TOGETHER.format(members=", ".join(f.model_id for f in fakes)) if together else ""
    return f"healthCheckTimeout: 15\n{head}\nmodels:\n{models}\n{routing}\n{tail}\n"


@asynccontextmanager
async def running_server(
    fakes: list[Fake],
    head: str = "",
    tail: str = "",
    *,
    together: bool = True,
    extra_models: str = "",
) -> AsyncIterator[Server]:
    """Serve ``build_app`` for these fakes; on exit every child must be gone."""
    text = config_text(fakes, head, tail, together=together, extra_models=extra_models)
    config = load_config_text(text, "test.yaml", environ={}).config
    app = build_app(config, base_env=fake_upstream_env())
    async with serving(app) as url:
        yield Server(url, app, {f.model_id: f for f in fakes})
    await fakes_gone(fakes)


CHAT = {"messages": [{"role": "user", "content": "hi"}]}
"""A minimal chat body (the model is added per request)."""


async def fakes_gone(fakes: Iterable[Fake]) -> None:
    """Wait until every process the fakes ever started is gone (no leaked upstream)."""
    for f in fakes:
        for ev in f.events("listening"):
            await wait_pid_gone(ev["pid"], timeout=DEADLINE)


async def post_chat(session: aiohttp.ClientSession, model: str) -> None:
    """One chat completion for ``model`` through ``session``; it must answer 200."""
    async with session.post("/v1/chat/completions", json={"model": model, **CHAT}) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()


async def sse_events(response: aiohttp.ClientResponse) -> list[Any]:
    """Every ``data:`` payload of an SSE response (``[DONE]`` kept as a string)."""
    events: list[Any] = []
    async for line in response.content:
        text = line.decode().strip()
        if text.startswith("data: "):
            payload = text[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
