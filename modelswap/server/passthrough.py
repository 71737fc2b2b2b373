"""Raw passthroughs: ``/upstream/<model>/<path>`` (server spec §10) and ``/comfyui`` (§11).

Unlike inference routes, the body is never read, filtered or rewritten here:
it streams from the client to the upstream as sent. One exception (router
spec §6, server spec §9.6): a peer model addressed by a name other than the
peer's own id (``/upstream/<peer>/<model>/…``) has a body or query ``model``
equal to that name rewritten to the peer's id, so only then is a JSON or form
body read (and re-sent with its new ``Content-Length``). The model comes from the
path; there are no selectors, no filters, no ``useModelName`` and never a
loading stream. Paths keep the client's percent-encoding (``%2F`` inside a
segment survives), so everything works on ``rel_url.raw_path``.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import unquote

from aiohttp import web

from modelswap.config import Config
from modelswap.errors import ModelNotFoundError, ModelNotLoadedError
from modelswap.server.context import SERVER_STATE, ServerState
from modelswap.server.dispatch import is_ignored_websocket, serve_local, tunnel_ignored_websocket
from modelswap.server.extract import BodyKind, ModelRequest, read_model_request
from modelswap.server.inference import is_inference_route
from modelswap.server.profiles import pin_upstream_path
from modelswap.server.recording import observation

UPSTREAM_PREFIX = "/upstream/"
COMFYUI_MODEL = "comfyui_auto"
MODEL_NOT_FOUND = "model not found"


def find_model_in_path(config: Config, rest: str) -> tuple[str, str, str] | None:
    """The longest leading run of segments that names a model or peer model.

    Returns ``(requested name, name as written in the path, remaining raw
    path)``; the remainder starts with ``/`` (``/`` when nothing follows).
    Segments are compared decoded, so ``author%2Fmodel`` matches ``author/model``.
    """
    best: tuple[str, str, str] | None = None
    cuts = [i for i, char in enumerate(rest) if char == "/"] + [len(rest)]
    for cut in cuts:
        written = rest[:cut]
        name = unquote(written)
        if name and config.resolve_base_model(name) is not None:
            best = (name, written, rest[cut:] or "/")
    return best


def _redirect(request: web.Request, location: str) -> web.HTTPException:
    """301 for GET/HEAD, 308 otherwise (a 301 would turn a POST into a GET)."""
    query = request.rel_url.raw_query_string
    if query:
        location += "?" + query
    if request.method in ("GET", "HEAD"):
        return web.HTTPMovedPermanently(location)
    return web.HTTPPermanentRedirect(location)


def _ignored_path(config: Config, path: str) -> bool:
    return any(pattern.search(path) for pattern in config.upstream.ignore_patterns)


async def handle_upstream_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/models")


async def handle_upstream(request: web.Request) -> web.StreamResponse:
    """``/upstream/<model>/<path>``: forward to that model's server untouched."""
    state = request.app[SERVER_STATE]
    config = state.config
    rest = request.rel_url.raw_path[len(UPSTREAM_PREFIX) :]
    pinned = pin_upstream_path(state.profiles.pins, rest)
    if pinned is not None:
        rest = pinned
    found = find_model_in_path(config, rest)
    if found is None:
        raise ModelNotFoundError(MODEL_NOT_FOUND)
    name, written, remaining = found
    if rest == written:  # the bare model, no trailing slash
        raise _redirect(request, f"{UPSTREAM_PREFIX}{written}/")
    query = request.rel_url.raw_query_string
    model_id = config.resolve_model_id(name)
    seen = observation(request)
    local = model_id is not None and state.router.handles(model_id)
    if seen is not None and (local or state.peers.handles(name)):
        inference = is_inference_route(request.method, remaining)
        seen.dispatched(
            request, model_id if local and model_id else name, remaining, None, inference
        )
    if model_id is not None and state.router.handles(model_id):
        if _ignored_path(config, remaining) and state.router.state_of(model_id) != "ready":
            raise ModelNotLoadedError(
                f"model {model_id} is not loaded; path matches upstream.ignorePaths"
            )
        if is_ignored_websocket(state, request, model_id):
            return await tunnel_ignored_websocket(request, state, model_id, remaining, query)
        return await serve_local(
            request, state, model_id, raw_path=remaining, raw_query=query, body=None
        )
    if state.peers.handles(name):
        passthrough = await _peer_request(request, state, name)
        return await state.peers.serve(request, passthrough, raw_path=remaining, requested=name)
    raise ModelNotFoundError(MODEL_NOT_FOUND)


async def _peer_request(request: web.Request, state: ServerState, name: str) -> ModelRequest:
    """What a peer is sent: untouched, unless ``name`` is not the peer's own model id.

    Then the body is read as an inference route would read it (JSON or form),
    so that the peer router can rewrite a ``model`` equal to ``name``; routing
    stays by the path's name whatever the body says.
    """
    query = request.rel_url.raw_query_string
    if state.peers.route_for(name).model == name:
        return ModelRequest(BodyKind.OTHER, name, False, query)
    read = await read_model_request(request)
    return dataclasses.replace(read, model=name)


async def handle_comfyui_root(request: web.Request) -> web.StreamResponse:
    raise _redirect(request, "/comfyui/")


async def handle_comfyui(request: web.Request) -> web.StreamResponse:
    """``/comfyui/<path>`` → the local ``comfyui_auto`` model; only ``/comfyui/`` may start it."""
    state: ServerState = request.app[SERVER_STATE]
    if COMFYUI_MODEL not in state.config.models or not state.router.handles(COMFYUI_MODEL):
        raise ModelNotFoundError(f"local model {COMFYUI_MODEL} not found")
    remaining = request.rel_url.raw_path[len("/comfyui") :]
    query = request.rel_url.raw_query_string
    if is_ignored_websocket(state, request, COMFYUI_MODEL):
        return await tunnel_ignored_websocket(request, state, COMFYUI_MODEL, remaining, query)
    if remaining != "/" and state.router.state_of(COMFYUI_MODEL) != "ready":
        raise ModelNotLoadedError(
            f"model {COMFYUI_MODEL} is not loaded; only /comfyui/ can start it"
        )
    seen = observation(request)
    if seen is not None:
        seen.dispatched(request, COMFYUI_MODEL, remaining, None, False)
    return await serve_local(
        request, state, COMFYUI_MODEL, raw_path=remaining, raw_query=query, body=None
    )


def add_passthrough_routes(app: web.Application) -> None:
    app.router.add_get("/upstream", handle_upstream_root)
    app.router.add_route("*", "/upstream/{tail:.*}", handle_upstream)
    app.router.add_route("*", "/comfyui", handle_comfyui_root)
    app.router.add_route("*", "/comfyui/{tail:.*}", handle_comfyui)
