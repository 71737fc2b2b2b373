"""The peer router (router spec §6, server spec §9.6): models served by remote servers.

A peer is just another HTTP server: nothing to start, swap or queue. This
module owns the route table (which name reaches which peer model) and the
forwarding specifics — rewriting the model to the peer's own id, injecting
the peer's key, the peer's timeouts — on top of :class:`UpstreamClient`.
The peer's ``filters`` are applied earlier by the pipeline
(:func:`modelswap.server.filters.filter_plan` resolves peer names), like a
local model's.

Route table: peers in sorted order; every model ``m`` of peer ``p`` is
``p/m``; the bare ``m`` is added only when exactly one peer lists it and no
qualified route is already called ``m``.

Shutdown (:meth:`PeerRouter.shutdown`): new requests fail with 500
``unspecific error: peer proxy is shutting down``; in-flight ones are waited
for up to the timeout, then cancelled (their connections close, as on a
client disconnect) and ``peer shutdown timed out after <t>`` is raised.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from modelswap.config import PeerConfig
from modelswap.errors import (
    ModelNotFoundError,
    ModelswapError,
    RouterShuttingDownError,
    ShutdownInProgressError,
)
from modelswap.server.extract import NO_MODEL_MESSAGE, ModelRequest
from modelswap.server.gotime import go_duration
from modelswap.server.proxy import Target, UpstreamClient, UpstreamUnreachableError, join_url
from modelswap.server.rewrite import replace_model

PEER_ERROR_PREFIX = "peer proxy error"
NO_PEER_MESSAGE = "no peer found for requested model"
MACOS_HINT = (
    " (on macOS, allow this program under System Settings → Privacy & Security → Local Network)"
)


class PeerShutdownTimeoutError(ModelswapError):
    """In-flight peer requests outlived :meth:`PeerRouter.shutdown`'s timeout (500)."""

    status = 500


@dataclass(frozen=True, slots=True)
class PeerRoute:
    """One routable name: which peer, and the model id the peer itself uses."""

    peer_id: str
    model: str


def build_peer_routes(peers: Mapping[str, PeerConfig]) -> dict[str, PeerRoute]:
    """Every name a peer model answers to (see module docstring)."""
    routes: dict[str, PeerRoute] = {}
    listed_by: dict[str, list[PeerRoute]] = {}
    for peer_id in sorted(peers):
        for model in dict.fromkeys(peers[peer_id].models):
            route = PeerRoute(peer_id, model)
            routes.setdefault(f"{peer_id}/{model}", route)
            listed_by.setdefault(model, []).append(route)
    for model, owners in listed_by.items():
        if len(owners) == 1 and model not in routes:
            routes[model] = owners[0]
    return routes


class PeerRouter:
    """Forwards requests for peer models; tracks them so shutdown can wait or cancel."""

    def __init__(self, peers: Mapping[str, PeerConfig], client: UpstreamClient) -> None:
        self._peers = dict(peers)
        self._routes = build_peer_routes(peers)
        self._client = client
        self._inflight: dict[asyncio.Task[object], asyncio.Event] = {}
        self._shutting_down = False

    def __repr__(self) -> str:
        return (
            f"<PeerRouter peers={len(self._peers)} routes={len(self._routes)} "
            f"inflight={len(self._inflight)} shutting_down={self._shutting_down}>"
        )

    @property
    def routes(self) -> Mapping[str, PeerRoute]:
        return self._routes

    def reconfigure(self, peers: Mapping[str, PeerConfig]) -> None:
        """A config reload: route new requests by ``peers``; requests in flight go on."""
        self._peers = dict(peers)
        self._routes = build_peer_routes(peers)

    def handles(self, name: str) -> bool:
        return name in self._routes

    def statistics(self) -> dict[str, object]:
        return {"inflight": len(self._inflight), "shutting_down": self._shutting_down}

    def target_for(self, route: PeerRoute, raw_path: str, raw_query: str) -> Target:
        """Where a request for ``route`` goes: the peer's base URL joined with the path."""
        peer = self._peers[route.peer_id]
        return Target(
            url=join_url(peer.proxy, raw_path, raw_query),
            name=f"{route.peer_id}/{route.model}",
            timeouts=peer.timeouts,
            peer=True,
            api_key=peer.api_key,
            error_prefix=PEER_ERROR_PREFIX,
        )

    def route_for(self, name: str) -> PeerRoute:
        """The route for a requested name, or the 404s llama-swap gives."""
        if not name:
            raise ModelNotFoundError(NO_MODEL_MESSAGE)
        route = self._routes.get(name)
        if route is None:
            raise ModelNotFoundError(NO_PEER_MESSAGE)
        return route

    async def serve(
        self,
        request: web.BaseRequest,
        model_request: ModelRequest,
        *,
        raw_path: str,
        requested: str | None = None,
        response: web.StreamResponse | None = None,
    ) -> web.StreamResponse:
        """Forward one request to its peer.

        ``requested`` defaults to ``model_request.model`` (for ``/upstream/…``
        the name comes from the path instead). ``raw_path`` is the
        percent-encoded path to append to the peer's base URL.
        """
        if self._shutting_down:
            raise RouterShuttingDownError("peer proxy is shutting down")
        name = model_request.model if requested is None else requested
        route = self.route_for(name)
        if name != route.model:
            model_request = replace_model(model_request, route.model, only_if=name)
        target = self.target_for(route, raw_path, model_request.query_string)
        task = asyncio.current_task()
        done = asyncio.Event()
        if task is not None:
            self._inflight[task] = done
        try:
            return await self._client.forward(request, target, model_request.data, response)
        except UpstreamUnreachableError as error:
            if sys.platform == "darwin" and "no route to host" in error.message.lower():
                raise UpstreamUnreachableError(error.message + MACOS_HINT) from None
            raise
        finally:
            if task is not None:
                self._inflight.pop(task, None)
            done.set()

    async def shutdown(self, timeout: float = 0) -> None:
        """Refuse new requests; wait up to ``timeout`` s for in-flight ones, then cancel them."""
        if self._shutting_down:
            raise ShutdownInProgressError("shutdown already in progress")
        self._shutting_down = True
        if not self._inflight:
            return
        if timeout > 0:
            waiters = [asyncio.create_task(done.wait()) for done in self._inflight.values()]
            _, late = await asyncio.wait(waiters, timeout=timeout)
            for waiter in late:
                waiter.cancel()
            if not late:
                return
        remaining = list(self._inflight.items())
        for task, _ in remaining:
            task.cancel()
        await asyncio.gather(*(done.wait() for _, done in remaining))
        if timeout > 0:
            raise PeerShutdownTimeoutError(f"peer shutdown timed out after {go_duration(timeout)}")
