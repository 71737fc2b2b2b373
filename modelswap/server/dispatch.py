"""Serving one request through the local router: admit → (loading stream) → grant → proxy.

Shared by the inference routes and the ``/upstream``/``/comfyui``
passthroughs, which differ only in what they hand over: the path to send,
the body (the bytes read for extraction, or None to stream the client's own)
and whether a loading stream is allowed.

The ticket is the router's bookkeeping for this request, so every exit path
gives it back: ``ticket.cancel()`` runs in a ``finally`` (a no-op once the
grant's context was entered, whose own exit reports "serve done"). A client
disconnect cancels this task (the runner uses ``handler_cancellation``), which
unwinds through the same ``finally`` and closes the upstream connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from modelswap.config import ModelTimeouts
from modelswap.errors import ModelNotFoundError, ModelswapError
from modelswap.router.api import Upstream
from modelswap.router.ticket import LocalTicket
from modelswap.server.context import ServerState
from modelswap.server.headers import is_websocket_upgrade
from modelswap.server.loading import (
    LoadingStream,
    Write,
    error_events,
    should_stream_loading,
    start_loading_response,
)
from modelswap.server.proxy import Target, UpstreamConnectionLostError, join_url
from modelswap.server.recording import observation
from modelswap.server.replay import announce_replay, replayable, wait_crash_noticed
from modelswap.server.websocket import tunnel_websocket

Forward = Callable[
    [web.Request, Target, bytes | None, web.StreamResponse | None],
    Awaitable[web.StreamResponse],
]
"""How a granted request reaches its upstream: ``(request, target, body, loading stream)``.

The default is :meth:`~modelswap.server.proxy.UpstreamClient.forward` (bytes
relayed as they are); the Ollama routes pass a translating one.
"""


def local_target(
    state: ServerState,
    upstream: Upstream,
    raw_path: str,
    raw_query: str,
    timeouts: ModelTimeouts | None = None,
) -> Target:
    """Where a granted request goes: the upstream's base URL + path + query.

    ``timeouts`` are the model's as the request found them on arrival; a
    config reload may have removed the model since (it still finishes its
    admitted requests), so the current config is only the fallback.
    """
    if timeouts is None:
        model = state.config.models.get(upstream.model_id)
        timeouts = model.timeouts if model is not None else ModelTimeouts()
    return Target(join_url(upstream.base_url, raw_path, raw_query), upstream.model_id, timeouts)


def is_ignored_websocket(state: ServerState, request: web.BaseRequest, model_id: str) -> bool:
    """A websocket upgrade for a model with ``compat.ignoreWebsockets`` (router spec §3.13)."""
    model = state.config.models.get(model_id)
    return (
        model is not None
        and model.compat.ignore_websockets
        and is_websocket_upgrade(request.headers)
    )


async def tunnel_ignored_websocket(
    request: web.Request, state: ServerState, model_id: str, raw_path: str, raw_query: str
) -> web.StreamResponse:
    """Bypass the scheduler: tunnel to a ready model (404/409 from the router otherwise)."""
    upstream = state.router.loaded_upstream(model_id)
    target = local_target(state, upstream, raw_path, raw_query)
    return await tunnel_websocket(request, state.client, target)


async def serve_local(
    request: web.Request,
    state: ServerState,
    model_id: str,
    *,
    raw_path: str,
    raw_query: str,
    body: bytes | None,
    streaming: bool = False,
    loading_allowed: bool = False,
    forward: Forward | None = None,
) -> web.StreamResponse:
    """Admit ``model_id``, wait for its grant (maybe streaming loading state), then proxy.

    ``forward`` replaces the plain byte relay (see :data:`Forward`).

    Admission errors (404, 429, shutting down) raise before anything is
    written. Errors after a loading stream started are written into it as
    SSE events, since its 200 is already on the wire. A request whose upstream
    died before answering is re-admitted once (:mod:`modelswap.server.replay`).
    """
    trip = _Trip(
        request, state, model_id, raw_path, raw_query, body, streaming, loading_allowed, forward
    )
    replays = 1
    ticket = await state.router.admit(model_id)
    while True:
        try:
            return await trip.attempt(ticket)
        except ModelswapError as error:
            failure = error
            if replays and trip.replayable(error):
                replays -= 1
                announce_replay(request, model_id, error)
                if isinstance(error, UpstreamConnectionLostError):
                    await wait_crash_noticed(state.router, model_id)
                try:
                    ticket = await state.router.admit(model_id)
                    continue
                except ModelswapError as admission:
                    failure = admission
            if trip.stream is None:
                raise failure from None
            await trip.write_error(failure)
            return trip.stream


class _Trip:
    """One request's way through the local router: what its attempts share.

    ``stream`` is the loading stream's response once its 200 was sent (by the
    first attempt, or by a replay that found the model restarting); a later
    attempt relays the upstream's bytes into it.
    """

    __slots__ = (
        "_serving",
        "_write",
        "body",
        "forward",
        "model_id",
        "raw_path",
        "raw_query",
        "request",
        "retry",
        "seen",
        "send_loading",
        "state",
        "stream",
        "streaming",
        "timeouts",
    )

    def __init__(
        self,
        request: web.Request,
        state: ServerState,
        model_id: str,
        raw_path: str,
        raw_query: str,
        body: bytes | None,
        streaming: bool,
        loading_allowed: bool,
        forward: Forward | None = None,
    ) -> None:
        self.request = request
        self.state = state
        self.model_id = model_id
        self.raw_path = raw_path
        self.raw_query = raw_query
        self.body = body
        self.streaming = streaming
        model = state.config.models.get(model_id)
        if model is None:  # removed by a config reload since the name was resolved
            raise ModelNotFoundError("no local server found for requested model")
        self.timeouts = model.timeouts
        self.send_loading = loading_allowed and model.loading_state
        self.retry = model.retry_on_crash
        self.seen = observation(request)
        self.stream: web.StreamResponse | None = None
        self._write: Write | None = None
        self._serving = False
        self.forward: Forward = forward or state.client.forward

    async def attempt(self, ticket: LocalTicket) -> web.StreamResponse:
        """Wait for the grant (maybe streaming loading state), then proxy; errors raise."""
        router = self.state.router
        if self.seen is not None:
            self.seen.ticket = ticket  # a replay's explain starts at its re-admission
        self._serving = False
        loading: LoadingStream | None = None
        try:
            if should_stream_loading(
                self.request.path, self.streaming, self.send_loading, router.state_of(self.model_id)
            ):
                if self._write is None:
                    self.stream, self._write = await start_loading_response(self.request)
                estimate = self.state.load_estimates.expected(self.model_id)
                loading = LoadingStream(self._write, self.model_id, estimate=estimate)
                loading.start(ticket)
            async with ticket.granted() as upstream:
                self._serving = True
                if self.seen is not None:
                    self.seen.metadata["fifo_priority"] = upstream.fifo_priority
                if loading is not None:
                    await loading.finish()
                target = local_target(
                    self.state, upstream, self.raw_path, self.raw_query, self.timeouts
                )
                if self.stream is None and is_websocket_upgrade(self.request.headers):
                    return await tunnel_websocket(self.request, self.state.client, target)
                return await self.forward(self.request, target, self.body, self.stream)
        except ModelswapError:
            if loading is not None:
                await loading.finish()  # the closing lines, then the caller writes the error
            raise
        finally:
            if loading is not None:
                await loading.abort()
            ticket.cancel()

    def replayable(self, error: ModelswapError) -> bool:
        relayed = self.seen is not None and self.seen.headers_at is not None
        return replayable(
            error, serving=self._serving, relayed=relayed, body=self.body, enabled=self.retry
        )

    async def write_error(self, error: ModelswapError) -> None:
        """The error as an SSE event + ``[DONE]`` into the started loading stream."""
        assert self._write is not None
        with contextlib.suppress(ConnectionError):
            await self._write(error_events(error.status, error.message, error.code))
