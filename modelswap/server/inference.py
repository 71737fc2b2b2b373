"""The model-dispatched ("inference") routes: server spec §2.1 and the §5 pipeline.

Per request, in order (auth and CORS already ran as middlewares):

1. **extract** the model (§3), reading the body only when it carries the model;
2. **profile rewrite** (§7.2): an exact pin replaces the requested name
   wherever the request carries it; a disabled pin means "no model";
3. **selector** (§8): a selector name is replaced by the target it picks; a
   spillover reservation is held until the request ends (``finally``), or
   given back at once for an ignored websocket;
4. no model now → 404 ``no model id could be identified`` — unless the local
   router is shutting down: its shutdown check precedes model extraction
   (router spec §3.2 step 1), so that is 500 ``unspecific error: <router> is
   shutting down`` even for a request without a model;
5. **filters** (§9.2) on the bytes to send (``useModelName`` changes only the
   body, never the routing name);
6. **dispatch** (§9.1): the local router if it serves the real name, else the
   peer router, else 404 ``no router for requested model``.

Llama-swap extracts before rewriting; extraction here is the one body read,
and the rewrites work on its :class:`ModelRequest`, so the order of 1–3 is
not observable. The prefixes ``/v`` and ``/audioapi`` are stripped only from
the path sent upstream; ``request.path`` (access log, loading-stream rule)
keeps the client's path.
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from modelswap.errors import ModelNotFoundError, RouterShuttingDownError
from modelswap.server.context import SERVER_STATE, ServerState
from modelswap.server.dispatch import is_ignored_websocket, serve_local, tunnel_ignored_websocket
from modelswap.server.extract import ModelRequest, read_model_request
from modelswap.server.filters import apply_filters, filter_plan
from modelswap.server.profiles import pinned_target
from modelswap.server.recording import observation
from modelswap.server.rewrite import replace_model
from modelswap.server.selectors import Choice

NO_ROUTER_MESSAGE = "no router for requested model"

JSON_POST_PATHS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/reranking",
    "/rerank",
    "/v1/rerank",
    "/v1/reranking",
    "/infill",
    "/completion",
    "/v1/audio/speech",
    "/v1/audio/voices",
    "/v1/images/generations",
    "/v1/audio/transcriptions",
    "/v1/images/edits",
    "/sdapi/v1/txt2img",
    "/sdapi/v1/img2img",
    "/audioapi/v1/tasks/run",
)
"""POST routes (JSON or multipart; extraction tells them apart by Content-Type)."""

GET_PATHS = ("/v1/audio/voices", "/sdapi/v1/loras", "/props")
"""GET routes carrying the model in ``?model=`` (HEAD answered too)."""

INFERENCE_ROUTES = frozenset(
    [("POST", path) for path in JSON_POST_PATHS] + [("GET", path) for path in GET_PATHS]
)
"""(method, path) of the inference routes an ``/upstream/<model>`` rest may name (§15)."""

VERSIONLESS_PATHS = tuple(
    "/v" + tail
    for tail in (
        "/chat/completions",
        "/responses",
        "/completions",
        "/messages",
        "/messages/count_tokens",
        "/embeddings",
        "/rerank",
        "/reranking",
    )
)
"""``/v/...``: forwarded with the leading ``/v`` removed."""

OBSERVED_INFERENCE_PATHS = frozenset(JSON_POST_PATHS + VERSIONLESS_PATHS + GET_PATHS)
"""Every inference route's path: the recording middleware observes these (§15, §16)."""

_STRIPPED_PREFIXES = ("/v/", "/audioapi/")


def is_inference_route(method: str, path: str) -> bool:
    """Whether ``method path`` is an inference route (an ``/upstream`` rest, server spec §15)."""
    return (method, path) in INFERENCE_ROUTES


def upstream_path(raw_path: str) -> str:
    """The path sent upstream: ``/v/x`` → ``/x``, ``/audioapi/v1/x`` → ``/v1/x``, else as is."""
    for prefix in _STRIPPED_PREFIXES:
        if raw_path.startswith(prefix):
            return raw_path[len(prefix) - 1 :]
    return raw_path


def _rewrite(request: ModelRequest, target: str) -> ModelRequest:
    """The request routed to ``target`` (a disabled pin ``""`` leaves it with no model)."""
    if not target:
        return dataclasses.replace(request, model="")
    rewritten = replace_model(request, target)
    if rewritten.model != target:  # nothing to rewrite in the bytes; route by the target anyway
        rewritten = dataclasses.replace(rewritten, model=target)
    return rewritten


def _require_model(state: ServerState, model_request: ModelRequest) -> str:
    """The routing name; with none, 500 while the local router shuts down, else 404."""
    if not model_request.model and state.router.statistics().shutting_down:
        raise RouterShuttingDownError(f"{state.router.name} is shutting down")
    return model_request.require_model()


async def handle_inference(request: web.Request) -> web.StreamResponse:
    """One model-dispatched request, through the whole pipeline (module docstring)."""
    state = request.app[SERVER_STATE]
    model_request = await read_model_request(request)
    pinned = pinned_target(state.profiles.pins, model_request.model)
    if pinned is not None and model_request.model:
        model_request = _rewrite(model_request, pinned)
    choice: Choice | None = None
    try:
        if model_request.model and state.selectors.is_selector(model_request.model):
            seen = observation(request)
            if seen is not None:
                seen.metadata["selector"] = model_request.model
            choice = state.selectors.choose(model_request.model, state.router.state_of)
            model_request = _rewrite(model_request, choice.target)  # failure: released below
        name = _require_model(state, model_request)
        return await _dispatch(request, state, model_request, name, choice)
    finally:
        if choice is not None:
            choice.release()


async def _dispatch(
    request: web.Request,
    state: ServerState,
    model_request: ModelRequest,
    name: str,
    choice: Choice | None,
) -> web.StreamResponse:
    raw_path = upstream_path(request.rel_url.raw_path)
    model_id = state.config.resolve_model_id(name)
    local = model_id is not None and state.router.handles(model_id)
    if model_id is not None and local and is_ignored_websocket(state, request, model_id):
        if choice is not None:
            choice.release()  # no lasting reservation for an ignored websocket (§8)
        return await tunnel_ignored_websocket(
            request, state, model_id, raw_path, model_request.query_string
        )
    filtered = apply_filters(model_request, filter_plan(state.config, name))
    seen = observation(request)
    if seen is not None and ((model_id is not None and local) or state.peers.handles(name)):
        seen.dispatched(
            request, model_id if local and model_id else name, raw_path, filtered.data, True
        )
    if model_id is not None and local:
        return await serve_local(
            request,
            state,
            model_id,
            raw_path=raw_path,
            raw_query=filtered.query_string,
            body=filtered.data,
            streaming=filtered.stream,
            loading_allowed=True,
        )
    if state.peers.handles(name):
        return await state.peers.serve(request, filtered, raw_path=raw_path, requested=name)
    raise ModelNotFoundError(NO_ROUTER_MESSAGE)


def add_inference_routes(app: web.Application) -> None:
    """Register every route of server spec §2.1."""
    for path in JSON_POST_PATHS + VERSIONLESS_PATHS:
        app.router.add_post(path, handle_inference)
    for path in GET_PATHS:
        app.router.add_get(path, handle_inference)
