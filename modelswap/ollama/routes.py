"""The Ollama routes: ``/``, ``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/version``,
``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``.

Registered under a prefix: ``/ollama`` on the main listener (``/api/version``
there is llama-swap's), and ``""`` on the optional listener of their own
(:mod:`modelswap.ollama.listener`). Inference requests resolve the name
(:mod:`~modelswap.ollama.names`), translate the body
(:mod:`~modelswap.ollama.request`), apply the model's filters like the OpenAI
routes, and go through :func:`~modelswap.server.dispatch.serve_local` with a
translating forwarder (:mod:`~modelswap.ollama.relay`): the same admission,
queue, swap, 429 and observation as every other inference route. They serve
local models (IDs and aliases); peers and selectors are not offered here.

Every error is Ollama's ``{"error": "..."}`` (the app's error middleware
gives these paths that shape, auth's 401 included) with the status: 400 for
a bad request, 404 for an unknown model (``model "x" not found, try pulling
it first``, which clients recognise), 429 with ``Retry-After`` at a model's
concurrency limit, 5xx for upstream and load failures.

``keep_alive`` is applied once the request was served: 0 unloads the model
as soon as nothing else is in flight, a duration becomes the model's TTL for
the rest of its run, a negative one keeps it loaded. A request that only
loads (no messages / prompt) with ``keep_alive: 0`` unloads without loading.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from modelswap import __version__
from modelswap.errors import ModelNotFoundError
from modelswap.ollama import listing, names
from modelswap.ollama import request as req_map
from modelswap.ollama.relay import Translation
from modelswap.ollama.response import load_response
from modelswap.process.state import ProcessState
from modelswap.server.context import SERVER_STATE, ServerState
from modelswap.server.dispatch import serve_local
from modelswap.server.errors import OLLAMA_ERROR_PREFIXES
from modelswap.server.extract import read_body
from modelswap.server.filters import apply_json_filters, filter_plan
from modelswap.server.json_body import encode_json
from modelswap.server.recording import observation

log = logging.getLogger("modelswap.ollama")

PREFIX = "/ollama"
OLLAMA_VERSION = "0.12.0"
"""What ``/api/version`` reports: the Ollama API this translation follows."""
RUNNING_TEXT = "Ollama is running"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Builder = Callable[[Mapping[str, Any], str], req_map.UpstreamCall]
BUILDERS: dict[str, Builder] = {
    "chat": req_map.chat_call,
    "generate": req_map.generate_call,
    "embed": req_map.embed_call,
    "embeddings": req_map.embeddings_call,
}


OLLAMA_INFERENCE_PATHS = frozenset(
    f"{prefix}/api/{kind}" for prefix in (PREFIX, "") for kind in BUILDERS
)
"""What the recording middleware observes (activity rows, Server-Timing), under
``/ollama`` and at the plain paths of the own listener, which shares the middleware."""


async def root(request: web.Request) -> web.Response:
    return web.Response(text=RUNNING_TEXT)


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": OLLAMA_VERSION, "modelswap": __version__})


def _file_stat(path: str | None) -> tuple[int, float]:
    if path is None:
        return 0, 0.0
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0.0
    return st.st_size, st.st_mtime


def _facts(state: ServerState, model_id: str) -> tuple[listing.ModelFacts, str | None]:
    model = state.config.models[model_id]
    path = names.model_file(model.cmd)
    size, modified = _file_stat(path)
    facts = listing.ModelFacts(
        model_id,
        size=size,
        modified=modified,
        details=names.details(path),
        context=model.capabilities.context,
        capabilities=listing.capabilities(model),
    )
    return facts, path


async def tags(request: web.Request) -> web.Response:
    state = request.app[SERVER_STATE]
    entries = [(name, _facts(state, model_id)[0]) for name, model_id in names.listed(state.config)]
    return web.json_response(listing.tags(entries, time.time()))


async def ps(request: web.Request) -> web.Response:
    state = request.app[SERVER_STATE]
    now = time.monotonic()
    footprints = state.router.statistics().scheduler.footprints
    running: list[listing.Running] = []
    for model_id, process in state.router.processes.items():
        if process.state is not ProcessState.READY:
            continue
        st = process.statistics()
        idle = 0.0 if st.in_flight or st.last_use is None else max(0.0, now - st.last_use)
        facts = _facts(state, model_id)[0]
        footprint = footprints.get(model_id, {})
        running.append(listing.Running(facts, idle, process.ttl, footprint))
    return web.json_response(listing.ps(running, time.time()))


async def show(request: web.Request) -> web.Response:
    state = request.app[SERVER_STATE]
    body = req_map.parse_body(await read_body(request))
    name = req_map.model_field(body)
    model_id = names.resolve(state.config, name)
    if model_id is None:
        raise ModelNotFoundError(_not_found(name))
    facts, path = _facts(state, model_id)
    payload = listing.show(facts, state.config.models[model_id], path, time.time())
    return web.json_response(payload)


def _not_found(name: str) -> str:
    return f'model "{name}" not found, try pulling it first'


def _inference(kind: str) -> Handler:
    build = BUILDERS[kind]

    async def handler(request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        state = request.app[SERVER_STATE]
        body = req_map.parse_body(await read_body(request))
        name = req_map.model_field(body)
        model_id = names.resolve(state.config, name)
        if model_id is None or not state.router.handles(model_id):
            raise ModelNotFoundError(_not_found(name))
        keep_alive = req_map.parse_keep_alive(body.get("keep_alive"))
        requested = names.requested_name(state.config, name)
        call = build(body, requested)
        if call.ignored:
            log.debug("[%s] ollama options ignored: %s", model_id, ", ".join(call.ignored))
        if call.load_only and keep_alive == 0:  # "unload this model": never load it for that
            state.router.keep_alive(model_id, 0)
            return web.json_response(load_response(kind, name, time.time(), unload=True))
        document, _ = apply_json_filters(call.body, filter_plan(state.config, requested))
        data = encode_json(document)
        seen = observation(request)
        if seen is not None and not call.load_only:
            seen.dispatched(request, model_id, call.path, data, True)
        translation = Translation(call, name, started)
        try:
            return await serve_local(
                request,
                state,
                model_id,
                raw_path=call.path,
                raw_query="",
                body=data,
                streaming=call.stream,
                forward=translation.forward,
            )
        finally:
            if keep_alive is not None and translation.granted:
                state.router.keep_alive(model_id, keep_alive)

    return handler


def add_ollama_routes(app: web.Application, prefix: str = PREFIX) -> None:
    """Register the Ollama API under ``prefix`` (``""``: Ollama's own paths).

    Errors under the prefix take Ollama's shape (:data:`OLLAMA_ERROR_PREFIXES`).
    """
    app[OLLAMA_ERROR_PREFIXES] = (*app.get(OLLAMA_ERROR_PREFIXES, ()), prefix + "/")
    app.router.add_get(prefix + "/", root)
    if prefix:
        app.router.add_get(prefix, root)
    app.router.add_get(prefix + "/api/version", version)
    app.router.add_get(prefix + "/api/tags", tags)
    app.router.add_get(prefix + "/api/ps", ps)
    app.router.add_post(prefix + "/api/show", show)
    for kind in BUILDERS:
        app.router.add_post(f"{prefix}/api/{kind}", _inference(kind))
