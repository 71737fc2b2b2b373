"""Management routes: running models, unloading, and the profiles API (server spec §7.3, §13).

These read the router's snapshots (``running_models``) for display only and
ask it to unload; they never decide anything from a snapshot. Unloading
blocks until the models are stopped. Model names here are concrete: profiles
and selectors do not apply.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from modelswap.errors import ClientError, ModelNotFoundError
from modelswap.server.context import SERVER_STATE
from modelswap.server.profiles import parse_active_request

NO_LOCAL_SERVER = "no local server found for requested model"


async def handle_running(request: web.Request) -> web.Response:
    """``{"running": [...]}`` for every local process that is not stopped, sorted by model."""
    state = request.app[SERVER_STATE]
    running: list[dict[str, Any]] = []
    processes = state.router.processes
    footprints = state.router.statistics().scheduler.footprints
    for model_id, process_state in sorted(state.router.running_models().items()):
        model = state.config.models.get(model_id)
        if model is None:  # removed by a config reload, finishing its last requests
            spec = processes[model_id].spec
            item: dict[str, Any] = {
                "model": model_id,
                "state": process_state,
                "cmd": spec.cmd,
                "proxy": spec.proxy,
                "ttl": int(spec.ttl),
                "name": "",
                "description": "",
            }
        else:
            item = {
                "model": model_id,
                "state": process_state,
                "cmd": model.cmd,
                "proxy": model.proxy,
                "ttl": model.ttl,
                "name": model.name,
                "description": model.description,
            }
        if model_id in footprints:  # memory routing: bytes per resource the policy counts
            item["footprint"] = dict(footprints[model_id])
        running.append(item)
    return web.json_response({"running": running})


async def handle_unload_all_text(request: web.Request) -> web.Response:
    await request.app[SERVER_STATE].router.unload()
    return web.Response(text="OK")


async def handle_unload_all_json(request: web.Request) -> web.Response:
    await request.app[SERVER_STATE].router.unload()
    return web.json_response({"msg": "ok"})


async def handle_unload_one(request: web.Request) -> web.Response:
    """Unload one model named by local ID or alias (the name may contain ``/``)."""
    state = request.app[SERVER_STATE]
    model_id = state.config.resolve_model_id(request.match_info["model"])
    if model_id is None:
        raise ModelNotFoundError("model not found")
    if not state.router.handles(model_id):
        raise ModelNotFoundError(NO_LOCAL_SERVER)
    await state.router.unload([model_id])
    return web.Response(text="OK")


async def handle_get_profiles(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVER_STATE].profiles.view())


async def handle_put_active_profile(request: web.Request) -> web.Response:
    state = request.app[SERVER_STATE]
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's limit
        raise ClientError("invalid profile request") from None
    state.profiles.set_active(parse_active_request(body))
    return web.json_response({"active": state.profiles.active})


def add_management_routes(app: web.Application) -> None:
    app.router.add_get("/running", handle_running)
    app.router.add_get("/unload", handle_unload_all_text)
    app.router.add_post("/api/models/unload", handle_unload_all_json)
    app.router.add_post("/api/models/unload/{model:.*}", handle_unload_one)
    app.router.add_get("/api/profiles", handle_get_profiles)
    app.router.add_put("/api/profiles/active", handle_put_active_profile)
