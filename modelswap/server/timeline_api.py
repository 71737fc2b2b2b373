"""``GET /api/timeline[?since=<RFC3339>]``: the last hour of swaps, for the UI's timeline.

The data is kept by one :class:`~modelswap.observability.timeline.Timeline`
per app under :data:`TIMELINE`, created and fed by
:func:`~modelswap.server.recording.setup_recording` (the wiring point for
router facts and stored activity rows): :func:`attach_timeline` subscribes it
to every local process's state changes and to the router's facts; the
recorder's ``on_stored`` callback hands it each stored row.

The handler only validates ``since``, asks the router which swaps are still
live (so a swap cancelled by an unload ends as ``cancelled`` instead of
running forever), takes an immutable snapshot, and encodes it in a worker
thread — 20,000 request marks are a few MB of JSON, too much to build on the
event loop. See ``docs/api.md`` for the response.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from aiohttp import web

from modelswap.errors import ClientError
from modelswap.observability.performance import parse_rfc3339
from modelswap.observability.timeline import Timeline, TimelineSnapshot
from modelswap.router.runtime import LocalRouter
from modelswap.server.context import SERVER_STATE

__all__ = [
    "BAD_SINCE",
    "TIMELINE",
    "add_timeline_routes",
    "attach_timeline",
    "new_timeline",
]

BAD_SINCE = "invalid 'since' timestamp, use RFC3339 format"

TIMELINE: web.AppKey[Timeline] = web.AppKey("timeline", Timeline)


def new_timeline() -> Timeline:
    """A timeline whose fact times (the router's monotonic clock) map to wall clock.

    The offset is taken once, so a wall-clock step (NTP) never reorders facts
    already recorded against each other.
    """
    return Timeline(wall_offset=time.time() - time.monotonic())


def attach_timeline(timeline: Timeline, router: LocalRouter) -> Callable[[], None]:
    """Feed ``timeline`` from ``router``'s processes and facts; returns the detach function.

    Gives every local model a lane and opens an interval for any process not
    stopped at this moment (normally none: this runs before the router starts).
    """
    processes = router.processes
    timeline.add_models(processes)
    now = time.time()
    for model, process in processes.items():
        timeline.state_changed(model, process.state.value, now)
    # The router's listener follows a model across a config reload that replaces its process.
    detach = [router.on_process_change(timeline.on_state_change)]
    detach.append(router.subscribe_facts(timeline.on_fact))

    def detach_all() -> None:
        for undo in detach:
            undo()

    return detach_all


def _encode(snapshot: TimelineSnapshot) -> bytes:
    return json.dumps(snapshot.as_json(), separators=(",", ":")).encode()


async def _timeline(request: web.Request) -> web.Response:
    raw_since = request.query.get("since", "")
    since = None
    if raw_since:
        try:
            since = parse_rfc3339(raw_since).timestamp()
        except ValueError:
            raise ClientError(BAD_SINCE) from None
    timeline = request.app[TIMELINE]
    router = request.app[SERVER_STATE].router
    timeline.close_stale_swaps({swap.swap_id for swap in router.statistics().scheduler.swaps})
    body = await asyncio.to_thread(_encode, timeline.snapshot(since))
    return web.Response(body=body, content_type="application/json")


def add_timeline_routes(app: web.Application) -> None:
    """Register ``GET /api/timeline`` (reads ``app[TIMELINE]``)."""
    app.router.add_get("/api/timeline", _timeline)
