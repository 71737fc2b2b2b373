"""Who hears about the router, and what they hear: change listeners, process changes, swap facts.

Observers (tests, metrics, the events feed, the timeline) are called
synchronously from the loop; one failing listener is logged and never stops
the loop (:mod:`.listeners`). Three kinds, one home:

* *change* listeners are called after every handled item and every process
  state change, with nothing — they re-read :meth:`LocalRouter.statistics`
  (this is what :meth:`RouterObservers.wait_for` waits on);
* *process* listeners get every ``StateChange`` of every process, current and
  future, so they follow a model across a reload that replaces its process;
* *fact* listeners get :mod:`.facts` as they happen. A swap's story is kept
  here from ``StartSwap`` until its ``SwapDone`` (or ``CancelSwap``), so each
  swap is told exactly once as started and once as finished.

Kept apart from :mod:`.runtime` because none of it decides anything: the loop
only reports to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from modelswap.core import events as e
from modelswap.process import StateChange
from modelswap.router.facts import (
    SWAP_CANCELLED,
    FactListener,
    RouterFact,
    SwapFinished,
    SwapStarted,
)
from modelswap.router.items import SwapTimes
from modelswap.router.listeners import Listeners

__all__ = ["RouterObservers"]

S = TypeVar("S")


class RouterObservers:
    """One router's listeners and the stories of its swaps in progress (loop-owned)."""

    def __init__(self, router_name: str) -> None:
        self._changes: Listeners[None] = Listeners(f"{router_name} router listener")
        self._processes: Listeners[StateChange] = Listeners(f"{router_name} process listener")
        self._facts: Listeners[RouterFact] = Listeners(f"{router_name} fact listener")
        self._swap_times: dict[int, SwapTimes] = {}

    # --- subscribing -------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        return self._changes.add(lambda _none: listener())

    def on_process_change(self, listener: Callable[[StateChange], None]) -> Callable[[], None]:
        return self._processes.add(listener)

    def subscribe_facts(self, listener: FactListener) -> Callable[[], None]:
        return self._facts.add(listener)

    async def wait_for(self, statistics: Callable[[], S], predicate: Callable[[S], bool]) -> S:
        """Wait until ``predicate(statistics())`` holds; re-checked on every change."""
        while True:
            stats = statistics()
            if predicate(stats):
                return stats
            changed = asyncio.get_running_loop().create_future()

            def wake(changed: asyncio.Future[None] = changed) -> None:
                if not changed.done():
                    changed.set_result(None)

            unsubscribe = self.subscribe(wake)
            try:
                await changed
            finally:
                unsubscribe()

    # --- telling ----------------------------------------------------------------------------

    def changed(self) -> None:
        self._changes.call(None)

    def process_changed(self, change: StateChange) -> None:
        self._processes.call(change)

    def swap_started(self, started: SwapStarted) -> SwapTimes:
        """Tell a committed swap; its story, which the swap worker completes."""
        times = SwapTimes(started)
        self._swap_times[started.swap_id] = times
        self._facts.call(started)
        return times

    def swap_done(self, event: e.SwapDone) -> SwapFinished | None:
        """Tell how a tracked swap ended; the fact if it succeeded (its waiters are granted).

        An untracked swap was cancelled by an unload or shutdown and was
        already told (:meth:`swap_cancelled`).
        """
        times = self._swap_times.pop(event.swap_id, None)
        if times is None:
            return None
        fact = times.finished(event.now, event.error)
        self._facts.call(fact)
        return fact if fact.error is None else None

    def swap_cancelled(self, swap_id: int, clock: Callable[[], float]) -> None:
        """An unload or shutdown dropped the swap: observers learn it ended, and why."""
        times = self._swap_times.pop(swap_id, None)
        if times is not None:
            self._facts.call(times.finished(clock(), SWAP_CANCELLED))
