"""Routes that need no model process: health, the root redirect, and the model list."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from modelswap.config import Config
from modelswap.server.listing import model_records

IsLoaded = Callable[[str], bool]


def _never_loaded(model_id: str) -> bool:
    return False


def add_admin_routes(
    app: web.Application, config: Config, is_loaded: IsLoaded | None = None
) -> None:
    """Register ``/health``, ``/wol-health``, ``/`` and ``/v1/models`` (``/models``)."""
    loaded_view = is_loaded or _never_loaded

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def root(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui")

    async def list_models(request: web.Request) -> web.Response:
        data = model_records(config, now=int(time.time()), is_loaded=loaded_view)
        headers = {}
        origin = request.headers.get("Origin")
        if origin:
            headers["Access-Control-Allow-Origin"] = origin
        return web.json_response({"object": "list", "data": data}, headers=headers)

    app.router.add_get("/health", health)
    app.router.add_get("/wol-health", health)
    app.router.add_get("/", root)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/models", list_models)
