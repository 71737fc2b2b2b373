"""Wiring of memory-aware eviction's edge: measurement source, watcher, store, events.

Only used when the config turns memory routing on (``routing.resources`` or a
model's ``resources``). On startup, footprints remembered by a file-backed
activity store are handed to the router first, so the policy knows what a
model really uses before it is started again; then every readiness is
measured (:class:`~modelswap.router.footprints.FootprintWatcher`), persisted
and announced as a ``modelStatus`` event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from modelswap.process.memory_source import MemorySource
from modelswap.router.footprints import FootprintWatcher
from modelswap.router.runtime import LocalRouter
from modelswap.server.activity_api import ACTIVITY_STORE
from modelswap.server.events import EVENTS_FEED

__all__ = ["FOOTPRINTS", "setup_footprints"]

FOOTPRINTS: web.AppKey[FootprintWatcher] = web.AppKey("footprints", FootprintWatcher)


def setup_footprints(app: web.Application, router: LocalRouter, source: MemorySource) -> None:
    """Register the watcher's lifecycle; register after the router's so it closes first."""
    store = app[ACTIVITY_STORE]

    def persist(model_id: str, sizes: dict[str, int]) -> None:
        store.record_footprint(model_id, sizes, time.time())

    watcher = FootprintWatcher(router, source, persist=persist)
    app[FOOTPRINTS] = watcher

    def announce(_model_id: str, _sizes: dict[str, int]) -> None:
        feed = app.get(EVENTS_FEED)
        if feed is not None:
            feed.publish_model_status()

    watcher.on_measured(announce)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        remembered = await asyncio.to_thread(store.footprints)
        for model_id, sizes in sorted(remembered.items()):
            router.report_footprint(model_id, sizes)
        watcher.start()
        try:
            yield
        finally:
            await watcher.aclose()

    app.cleanup_ctx.append(lifecycle)
