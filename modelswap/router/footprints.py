"""Measure each model once it is ready, and again while it runs; tell the router and observers.

The edge half of memory-aware eviction: the pure policy only sees
``FootprintMeasured`` events. This watcher listens to the router's facts; when
a swap finishes with its target ready, it measures the target's process tree
through a :class:`~modelswap.process.memory_source.MemorySource` in a worker
thread and reports the result with :meth:`LocalRouter.report_footprint`. A
model's memory grows after it is ready (the KV cache is allocated on the first
request), so ready models are measured again every ``interval`` seconds.

``persist`` (the activity store, so footprints survive restarts) runs in the
worker thread after each measurement; observers on the loop (the
``/api/events`` feed) register with :meth:`FootprintWatcher.on_measured`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from modelswap.process import ProcessState
from modelswap.process.memory_source import MemorySource
from modelswap.router.facts import RouterFact, SwapFinished
from modelswap.router.runtime import LocalRouter

__all__ = ["MEASURE_INTERVAL", "FootprintListener", "FootprintWatcher"]

log = logging.getLogger("modelswap.memory")

MEASURE_INTERVAL = 30.0
"""Seconds between measurements of a ready model (a KV cache grows after readiness)."""

FootprintListener = Callable[[str, dict[str, int]], None]


class FootprintWatcher:
    """Owns its measuring tasks; :meth:`aclose` cancels and awaits them."""

    def __init__(
        self,
        router: LocalRouter,
        source: MemorySource,
        *,
        interval: float = MEASURE_INTERVAL,
        persist: FootprintListener | None = None,
    ) -> None:
        self._router = router
        self._source = source
        self._persist = persist
        self._interval = interval
        self._listeners: list[FootprintListener] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self.measured = 0

    def __repr__(self) -> str:
        return f"<FootprintWatcher measured={self.measured} tasks={len(self._tasks)}>"

    def on_measured(self, listener: FootprintListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        """Subscribe to the router's facts and start the periodic re-measure (on the loop)."""
        self._unsubscribe = self._router.subscribe_facts(self._on_fact)
        if self._interval > 0:
            self._spawn(self._every_interval())

    def _on_fact(self, fact: RouterFact) -> None:
        if isinstance(fact, SwapFinished) and fact.error is None:
            self._spawn(self.measure(fact.model))

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def measure(self, model_id: str) -> dict[str, int] | None:
        """Measure ``model_id`` now if it is running; report and return what was read."""
        process = self._router.processes.get(model_id)
        pid = process.pid if process is not None else None
        if pid is None:
            return None
        try:
            sizes = await asyncio.to_thread(self._measure_and_persist, model_id, pid)
        except Exception:
            log.exception("measuring %s failed", model_id)
            return None
        if sizes is None:
            return None
        self.measured += 1
        self._router.report_footprint(model_id, sizes)
        await self._router.wait_idle()  # listeners read the router: it must know already
        for listener in list(self._listeners):
            try:
                listener(model_id, sizes)
            except Exception:
                log.exception("footprint listener failed")
        return sizes

    def _measure_and_persist(self, model_id: str, pid: int) -> dict[str, int] | None:
        """In the worker thread: read the tree, then write it to the store (both block)."""
        sizes = self._source.measure(model_id, pid)
        if sizes is not None and self._persist is not None:
            try:
                self._persist(model_id, sizes)
            except Exception:
                log.exception("persisting the footprint of %s failed", model_id)
        return sizes

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            for model_id, process in self._router.processes.items():
                if process.state is ProcessState.READY:
                    await self.measure(model_id)

    async def aclose(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._source.close)
