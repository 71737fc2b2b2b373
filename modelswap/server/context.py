"""The per-app state every HTTP handler needs, kept in one place under one key.

One :class:`ServerState` per aiohttp app (so per config): the config, the
local router, the peer router, the active profile and the selectors'
reservations. It is the one holder of "the config in force": every handler
reads ``state.config`` per request, so a config reload switches them all by
replacing it in :meth:`ServerState.apply_config` — called by the router's loop
in the same step that switches the router (see modelswap.server.reload).
Unlike llama-swap, which builds a new server on reload, the active profile
survives if it still exists and selector reservations stay counted.

The peer router needs the app's :class:`UpstreamClient`, which exists only
between startup and cleanup, so it is attached by :func:`setup_peers` and
read through :attr:`ServerState.peers`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from modelswap.config import Config
from modelswap.observability.load_eta import LoadEstimates
from modelswap.router.runtime import LocalRouter
from modelswap.server.peers import PeerRouter
from modelswap.server.profiles import ProfileState
from modelswap.server.proxy import UPSTREAM_CLIENT, UpstreamClient
from modelswap.server.selectors import Selectors

log = logging.getLogger("modelswap.server")


@dataclass
class ServerState:
    """What the handlers of one app share (see module docstring)."""

    config: Config
    router: LocalRouter
    profiles: ProfileState
    selectors: Selectors
    load_estimates: LoadEstimates = field(default_factory=LoadEstimates)
    """Expected load time per model (fed by the router's facts; see app.py)."""
    _peers: PeerRouter | None = field(default=None, repr=False)
    _client: UpstreamClient | None = field(default=None, repr=False)

    @classmethod
    def build(cls, config: Config, router: LocalRouter) -> ServerState:
        return cls(config, router, ProfileState(config.profiles), Selectors(config))

    def apply_config(self, config: Config) -> None:
        """Switch every per-request reader to ``config`` at once (synchronous, no await)."""
        self.config = config
        self.profiles.reconfigure(config.profiles)
        self.selectors.reconfigure(config)
        if self._peers is not None:
            self._peers.reconfigure(config.peers)

    @property
    def peers(self) -> PeerRouter:
        if self._peers is None:
            raise RuntimeError("the app has not started: no peer router yet")
        return self._peers

    @property
    def client(self) -> UpstreamClient:
        if self._client is None:
            raise RuntimeError("the app has not started: no upstream client yet")
        return self._client


SERVER_STATE: web.AppKey[ServerState] = web.AppKey("server_state", ServerState)


def setup_peers(app: web.Application, shutdown_budget: Callable[[], float]) -> None:
    """Create the peer router on startup; on cleanup refuse new peer requests and drain.

    Register it *after* :func:`~modelswap.server.proxy.setup_upstream_client`
    so that its cleanup (cleanup contexts unwind in reverse) runs before the
    client's pools close.
    """

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        state = app[SERVER_STATE]
        state._client = app[UPSTREAM_CLIENT]
        state._peers = PeerRouter(state.config.peers, state._client)
        yield
        try:
            await state._peers.shutdown(shutdown_budget())
        except Exception as error:  # a timed-out peer must not stop the rest of cleanup
            log.warning("peer shutdown: %s", error)

    app.cleanup_ctx.append(lifecycle)
