"""The route table of one app (server spec §2), minus observability routes (a later step).

Each family lives in its own module; this one only says which exist, so the
whole HTTP surface can be read on one screen:

* :mod:`~modelswap.server.admin` — ``/health``, ``/wol-health``, ``/``,
  ``/v1/models``, ``/models``;
* :mod:`~modelswap.server.inference` — every model-dispatched route (§2.1);
* :mod:`~modelswap.server.management` — ``/running``, unloads, profiles;
* :mod:`~modelswap.server.passthrough` — ``/upstream``, ``/comfyui``;
* :mod:`~modelswap.server.timeline_api`, :mod:`~modelswap.server.processes_api`
  — ``/api/timeline``, ``/api/processes`` (modelswap only, see docs/api.md);
* :mod:`~modelswap.server.reload` — ``POST /api/config/reload`` (modelswap only);
* :mod:`~modelswap.server.ui_static` — ``/ui``, ``/ui/…``, ``/favicon.ico``;
* :mod:`~modelswap.ollama.routes` — Ollama's API under ``/ollama`` (and, when
  configured, on a listener of its own: :mod:`~modelswap.ollama.listener`).

aiohttp gives the Go mux behaviours the spec needs: ``GET`` routes answer
``HEAD``, a wrong method is a 405 with ``Allow``; unmatched paths are turned
into Go's plain ``404 page not found`` by the error middleware.
"""

from __future__ import annotations

from aiohttp import web

from modelswap.ollama.listener import add_ollama_api
from modelswap.server.activity_api import add_activity_routes
from modelswap.server.admin import add_admin_routes
from modelswap.server.context import ServerState
from modelswap.server.events import add_event_routes
from modelswap.server.inference import add_inference_routes
from modelswap.server.logs import add_log_routes
from modelswap.server.management import add_management_routes
from modelswap.server.metrics_routes import add_metrics_routes
from modelswap.server.passthrough import add_passthrough_routes
from modelswap.server.processes_api import add_processes_routes
from modelswap.server.reload import add_reload_routes
from modelswap.server.timeline_api import add_timeline_routes
from modelswap.server.ui_static import add_ui_routes


def add_routes(app: web.Application, state: ServerState) -> None:
    """Register every non-observability route on ``app``."""
    router = state.router
    add_admin_routes(
        app,
        lambda: state.config,
        is_loaded=lambda model_id: model_id in router.running_models(),
        active_pins=lambda: state.profiles.pins,
    )
    add_inference_routes(app)
    add_management_routes(app)
    add_passthrough_routes(app)
    add_event_routes(app)
    add_metrics_routes(app)
    add_activity_routes(app)
    add_log_routes(app)
    add_timeline_routes(app)
    add_processes_routes(app)
    add_reload_routes(app)
    add_ui_routes(app)
    add_ollama_api(app, state.config)
