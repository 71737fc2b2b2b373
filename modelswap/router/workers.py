"""The router's slow work: swaps, unload/shutdown stops, retirements; each reports back.

The loop never awaits a process. When a decision needs one started or
stopped, the loop spawns one of these coroutines (it owns the task) and goes
on; the coroutine does the slow part and ends by posting exactly one event —
``SwapDone``, ``StopsDone`` or ``ModelRetired`` — that the loop handles like
any other. The decision to start is always taken inside the process
(``ensure_ready``), never from a state read (#946).

Kept apart from :mod:`.runtime` so it is visible that these tasks touch no
router state: they get the processes they act on when the decision is taken
and talk back only through ``post``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from modelswap.core import decisions as d
from modelswap.core import events as e
from modelswap.errors import ModelswapError
from modelswap.process import ManagedProcess
from modelswap.router.items import SwapTimes

__all__ = ["RouterWorkers"]

log = logging.getLogger("modelswap.router")


class RouterWorkers:
    """The coroutines one router's loop spawns; ``closing()`` quiets expected failures."""

    def __init__(
        self,
        name: str,
        post: Callable[[e.Event], None],
        clock: Callable[[], float],
        closing: Callable[[], bool],
        every_process: Callable[[], Iterable[ManagedProcess]],
    ) -> None:
        self._name = name
        self._post = post
        self._clock = clock
        self._closing = closing
        self._every_process = every_process

    async def swap(
        self,
        swap: d.StartSwap,
        times: SwapTimes,
        target: ManagedProcess,
        evictees: Sequence[ManagedProcess],
    ) -> None:
        """Stop the evictees, then make the target ready; report ``SwapDone`` (§3.8).

        Evictees get their own ``unloadTimeout`` as grace, not the global
        ``healthCheckTimeout`` llama-swap uses (§9 #5). Cancelled only by
        ``CancelSwap`` (unload, shutdown): then no report is sent. The
        processes were taken from the table when the swap was decided, so a
        reload in between cannot redirect it to another definition.
        """
        error: str | None = None
        try:
            if evictees:
                await self._stop_all(evictees, None)
            times.evicted = self._clock()
            await target.ensure_ready()
        except ModelswapError as exc:
            error = exc.message
        except Exception as exc:  # a bug below us: fail the waiters, keep the router
            log.exception("%s router: swap to %s crashed", self._name, swap.model)
            error = str(exc) or type(exc).__name__
        if error is not None and not self._closing():
            log.warning("%s router: swap to %s failed: %s", self._name, swap.model, error)
        self._post(e.SwapDone(swap.swap_id, error, self._clock()))

    async def stop_models(
        self, stop: d.StopModels, grace: float, processes: Sequence[ManagedProcess]
    ) -> None:
        """Unload or shutdown stops: all in parallel, then (shutdown) tear everything down."""
        await self._stop_all(processes, grace)
        if stop.reason == "shutdown":
            await asyncio.gather(*(p.shutdown() for p in self._every_process()))
        self._post(e.StopsDone(stop.op_id, self._clock()))

    async def retire(self, process: ManagedProcess) -> None:
        """A reload replaced or removed this drained process: stop it, then report.

        The grace is the model's ``unloadTimeout``. The process is torn down
        before ``ModelRetired`` puts its successor in place, so the old and the
        new definition never run at the same time.
        """
        await self._stop_one(process, process.spec.unload_timeout)
        await process.shutdown()
        self._post(e.ModelRetired(process.model_id, self._clock()))

    async def _stop_all(self, processes: Sequence[ManagedProcess], grace: float | None) -> None:
        """Stop ``processes`` in parallel (grace None: each model's unloadTimeout)."""
        async with asyncio.TaskGroup() as group:
            for process in processes:
                timeout = process.spec.unload_timeout if grace is None else grace
                group.create_task(self._stop_one(process, timeout))

    async def _stop_one(self, process: ManagedProcess, grace: float) -> None:
        try:
            await process.stop(grace)
        except ModelswapError as exc:
            level = logging.DEBUG if self._closing() else logging.WARNING
            log.log(level, "%s router: stopping %s: %s", self._name, process.model_id, exc)
