"""``GET /api/metrics/activity`` and ``GET /api/metrics/stats`` (server spec §17).

Thin handlers over the :class:`~modelswap.observability.activity_store.ActivityStore`
kept under :data:`ACTIVITY_STORE`: the query string is validated by the pure
:func:`~modelswap.observability.activity_query.parse_activity_query` (a bad
parameter is a 400 with the spec's message), the query runs, the page is
returned as JSON. A store failure is a 500 ``failed to get activity`` /
``failed to get activity stats``; the cause goes to the log only.

The SQLite calls and the JSON encoding run in a worker thread
(``asyncio.to_thread``), never on the event loop. Measured here: a default
page (25 rows) takes ~0.5 ms, but a 999-row page ~16 ms (building the rows),
and ``stats`` over a 20 000-row file store ~35 ms; a file store is unbounded,
and the store's lock may be held by the recorder's writer thread for a batch
commit. The thread hop costs ~0.1 ms on an admin route.

:func:`setup_activity_store` creates the store from the config and closes it
when the app is cleaned up; register it before any part that writes to it
(the recorder) so that part's cleanup runs first.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from modelswap.config import Config
from modelswap.errors import ModelswapError
from modelswap.observability.activity_query import parse_activity_query
from modelswap.observability.activity_store import ActivityStore

__all__ = [
    "ACTIVITY_STORE",
    "ActivityStoreError",
    "add_activity_routes",
    "create_activity_store",
    "setup_activity_store",
]

log = logging.getLogger("modelswap.server.activity")

ACTIVITY_STORE: web.AppKey[ActivityStore] = web.AppKey("activity_store", ActivityStore)


class ActivityStoreError(ModelswapError):
    """The activity store failed a query (ours): 500 with the spec's fixed sentence."""

    status = 500


def create_activity_store(
    config: Config, *, has_capture: Callable[[int], bool] | None = None
) -> ActivityStore:
    """The store the config asks for: ``store.path`` → a file, else in memory."""
    path = config.store.path.strip() if config.store is not None else ""
    return ActivityStore(path or None, config.metrics_max_in_memory, has_capture=has_capture)


def setup_activity_store(
    app: web.Application, config: Config, *, has_capture: Callable[[int], bool] | None = None
) -> ActivityStore:
    """Create the app's store under :data:`ACTIVITY_STORE`; it is closed on cleanup.

    ``has_capture(row_id)`` (the capture cache's lookup) fills each row's ``has_capture``.
    """
    store = create_activity_store(config, has_capture=has_capture)
    app[ACTIVITY_STORE] = store

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            app[ACTIVITY_STORE].close()

    app.cleanup_ctx.append(lifecycle)
    return store


async def _json_off_loop(produce: Callable[[], Any], failure: str) -> web.Response:
    """Run the query *and* encode its JSON in a worker thread (a 999-row page is ~0.5 MB)."""
    try:
        text = await asyncio.to_thread(lambda: json.dumps(produce()))
    except Exception:
        log.exception(failure)
        raise ActivityStoreError(failure) from None
    return web.Response(text=text, content_type="application/json")


async def handle_activity(request: web.Request) -> web.Response:
    """One page of activity rows, filtered and sorted by the query string."""
    query = parse_activity_query(request.query.items())
    store = request.app[ACTIVITY_STORE]
    return await _json_off_loop(lambda: store.activity(query), "failed to get activity")


async def handle_stats(request: web.Request) -> web.Response:
    """Totals and rate histograms, over every row or ``?model=X``'s."""
    model = request.query.get("model", "").strip() or None
    store = request.app[ACTIVITY_STORE]
    return await _json_off_loop(lambda: store.stats(model), "failed to get activity stats")


def add_activity_routes(app: web.Application) -> None:
    app.router.add_get("/api/metrics/activity", handle_activity)
    app.router.add_get("/api/metrics/stats", handle_stats)
