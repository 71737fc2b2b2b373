"""A small aiohttp app wiring the server building blocks directly to upstreams, no router.

It runs the pipeline the real glue will run — access log → CORS → auth →
errors → extract → filters → forward (local) or peer router — with each local
model's ``proxy`` URL taken as already granted. Every forward is wrapped in
a ``try/finally`` that records "serve done" (and whether it was cancelled),
which is where the router's serve-done event will be posted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from modelswap.config import Config
from modelswap.errors import ModelNotFoundError
from modelswap.server.access_log import AccessLog, AccessRecord
from modelswap.server.auth import auth_middleware
from modelswap.server.cors import cors_middleware
from modelswap.server.errors import error_middleware
from modelswap.server.extract import MAX_BODY_BYTES, read_model_request
from modelswap.server.filters import apply_filters, filter_plan
from modelswap.server.headers import is_websocket_upgrade
from modelswap.server.peers import PeerRouter
from modelswap.server.proxy import UPSTREAM_CLIENT, Target, join_url, setup_upstream_client
from modelswap.server.websocket import tunnel_websocket
from modelswap.testing.fake_process import free_port


@dataclass
class Harness:
    url: str
    app: web.Application
    _peers: PeerRouter | None = None
    served: list[tuple[str, str]] = field(default_factory=list)
    """("done" | "cancelled" | "error", model) per forward, from its ``finally``."""
    records: list[AccessRecord] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set each time a forward's ``finally`` ran."""
    _recorded: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def peers(self) -> PeerRouter:
        assert self._peers is not None, "the app has not started"
        return self._peers

    def record(self, record: AccessRecord) -> None:
        self.records.append(record)
        self._recorded.set()

    async def wait_records(self, count: int, timeout: float = 5) -> list[AccessRecord]:
        """Wait until the access log has seen ``count`` finished requests."""
        async with asyncio.timeout(timeout):
            while len(self.records) < count:
                self._recorded.clear()
                await self._recorded.wait()
        return self.records


def build_app(
    config: Config, *, max_body: int = MAX_BODY_BYTES, fast: bool = True
) -> tuple[web.Application, Harness]:
    access = AccessLog()
    app = web.Application(
        middlewares=[
            access.middleware,
            cors_middleware,
            auth_middleware(config.api_keys),
            error_middleware,
        ]
    )
    setup_upstream_client(app, fast=fast)
    harness = Harness(url="", app=app)
    access.observers.append(harness.record)

    async def make_peers(app: web.Application) -> None:
        harness._peers = PeerRouter(config.peers, app[UPSTREAM_CLIENT])

    app.on_startup.append(make_peers)

    def local_target(model_id: str, raw_path: str, query: str) -> Target:
        model = config.models[model_id]
        return Target(join_url(model.proxy, raw_path, query), model_id, model.timeouts)

    async def inference(request: web.Request) -> web.StreamResponse:
        client = request.app[UPSTREAM_CLIENT]
        raw_path = request.rel_url.raw_path
        if is_websocket_upgrade(request.headers):
            model_id = config.resolve_model_id(request.query.get("model", ""))
            if model_id is None:
                raise ModelNotFoundError("no router for requested model")
            target = local_target(model_id, raw_path, request.rel_url.raw_query_string)
            return await tunnel_websocket(request, client, target)
        model_request = await read_model_request(request, max_body=max_body)
        name = model_request.require_model()
        outcome = "error"
        try:
            model_id = config.resolve_model_id(name)
            filtered = apply_filters(model_request, filter_plan(config, name))
            if model_id is not None:
                target = local_target(model_id, raw_path, filtered.query_string)
                response = await client.forward(request, target, filtered.data)
            elif harness.peers.handles(name):
                response = await harness.peers.serve(
                    request, filtered, raw_path=raw_path, requested=name
                )
            else:
                raise ModelNotFoundError("no router for requested model")
            outcome = "done"
            return response
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            harness.served.append((outcome, name))
            harness.done.set()

    app.router.add_route("*", "/{tail:.*}", inference)
    return app, harness


@asynccontextmanager
async def running_proxy(
    config: Config, *, max_body: int = MAX_BODY_BYTES, fast: bool = True
) -> AsyncIterator[Harness]:
    """Serve the harness app on a free loopback port until the block exits.

    ``fast=False``: upstream requests through aiohttp's client only.
    """
    app, harness = build_app(config, max_body=max_body, fast=fast)
    async with serving(app) as url:
        harness.url = url
        yield harness


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 with handler cancellation on; yield its base URL."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    # A port from free_port, not 0: the OS could hand out one already given to a
    # fake upstream that has not started listening yet.
    site = web.TCPSite(runner, "127.0.0.1", free_port())
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
