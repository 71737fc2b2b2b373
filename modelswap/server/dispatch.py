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

from aiohttp import web

from modelswap.errors import ModelswapError
from modelswap.router.api import Upstream
from modelswap.server.context import ServerState
from modelswap.server.headers import is_websocket_upgrade
from modelswap.server.loading import LoadingStream, should_stream_loading, start_loading_response
from modelswap.server.proxy import Target, join_url
from modelswap.server.recording import observation
from modelswap.server.websocket import tunnel_websocket


def local_target(state: ServerState, upstream: Upstream, raw_path: str, raw_query: str) -> Target:
    """Where a granted request goes: the upstream's base URL + path + query."""
    model = state.config.models[upstream.model_id]
    return Target(
        join_url(upstream.base_url, raw_path, raw_query), upstream.model_id, model.timeouts
    )


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
) -> web.StreamResponse:
    """Admit ``model_id``, wait for its grant (maybe streaming loading state), then proxy.

    Admission errors (404, 429, shutting down) raise before anything is
    written. Errors after a loading stream started are written into it as
    SSE events, since its 200 is already on the wire.
    """
    router = state.router
    ticket = await router.admit(model_id)
    seen = observation(request)
    if seen is not None:
        seen.ticket = ticket
    loading: LoadingStream | None = None
    try:
        send_loading = loading_allowed and state.config.models[model_id].loading_state
        if should_stream_loading(request.path, streaming, send_loading, router.state_of(model_id)):
            response, write = await start_loading_response(request)
            loading = LoadingStream(
                write, model_id, estimate=state.load_estimates.expected(model_id)
            )
            loading.start(ticket)
            try:
                async with ticket.granted() as upstream:
                    if seen is not None:
                        seen.metadata["fifo_priority"] = upstream.fifo_priority
                    await loading.finish()
                    target = local_target(state, upstream, raw_path, raw_query)
                    await state.client.forward(request, target, body, response=response)
            except ModelswapError as error:
                await loading.finish()
                await loading.write_error(error.status, error.message, error.code)
            return response
        async with ticket.granted() as upstream:
            if seen is not None:
                seen.metadata["fifo_priority"] = upstream.fifo_priority
            target = local_target(state, upstream, raw_path, raw_query)
            if is_websocket_upgrade(request.headers):
                return await tunnel_websocket(request, state.client, target)
            return await state.client.forward(request, target, body)
    finally:
        if loading is not None:
            await loading.abort()
        ticket.cancel()
