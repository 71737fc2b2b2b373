"""Routes that need no model process: health, the root redirect, and the model list."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from aiohttp import web

from modelswap.config import Config
from modelswap.server.listing import model_records

IsLoaded = Callable[[str], bool]
ActivePins = Callable[[], Mapping[str, str]]


def _never_loaded(model_id: str) -> bool:
    return False


def _no_pins() -> Mapping[str, str]:
    return {}


def add_admin_routes(
    app: web.Application,
    config: Config | Callable[[], Config],
    is_loaded: IsLoaded | None = None,
    active_pins: ActivePins | None = None,
) -> None:
    """Register ``/health``, ``/wol-health``, ``/`` and ``/v1/models`` (``/models``).

    ``active_pins`` is read per request, so the listing follows profile switches;
    ``config`` may be a function too, read per request (config reloads).
    """
    current = config if callable(config) else (lambda: config)
    loaded_view = is_loaded or _never_loaded
    pins_view = active_pins or _no_pins

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def root(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui")

    async def list_models(request: web.Request) -> web.Response:
        data = model_records(
            current(), now=int(time.time()), is_loaded=loaded_view, active_pins=pins_view()
        )
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
