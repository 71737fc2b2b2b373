"""Expected load times: each model's recent load durations → "~12 s, from the last 5 loads".

:class:`LoadEstimates` keeps, per model, the durations of its last few
successful loads (``SwapFinished.load_seconds``: the time from the evictions'
end to the model answering its health check). It is fed by the router's facts
on the event loop and seeded at startup from the activity store's ``loads``
table, so a file-backed store keeps the estimates across restarts. The
estimate is the median of the last :data:`KEEP` loads — robust to the one cold
load after a reboot that took three times as long.

:class:`LoadProgress` turns the same facts into ``loadProgress`` events on
``/api/events`` while a model loads: at the start, then once a second, then a
last one when it is ready or failed — so a UI can draw a progress bar with an
ETA without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelswap.router.facts import SWAP_CANCELLED, RouterFact, SwapFinished, SwapStarted

__all__ = ["KEEP", "LoadEstimate", "LoadEstimates", "LoadProgress"]

KEEP = 5
"""Loads an estimate is taken from."""


@dataclass(frozen=True, slots=True)
class LoadEstimate:
    seconds: float
    samples: int

    def describe(self) -> str:
        """``~12 s, from the last 5 loads`` (``from 1 load`` for a single one)."""
        shown = f"{self.seconds:.1f}" if self.seconds < 10 else f"{self.seconds:.0f}"
        loads = "the last load" if self.samples == 1 else f"the last {self.samples} loads"
        return f"~{shown} s, from {loads}"


class LoadEstimates:
    """Recent load durations per model (loop-owned; fed by :meth:`observe`)."""

    def __init__(self, history: Mapping[str, Iterable[float]] | None = None) -> None:
        self._loads: dict[str, deque[float]] = {}
        for model, seconds in (history or {}).items():
            # ``history`` lists newest first (as the store returns it).
            for value in reversed(list(seconds)[:KEEP]):
                self._add(model, value)

    def __repr__(self) -> str:
        return f"<LoadEstimates models={sorted(self._loads)}>"

    def _add(self, model: str, seconds: float) -> None:
        self._loads.setdefault(model, deque(maxlen=KEEP)).append(seconds)

    def observe(self, fact: RouterFact) -> None:
        """Remember the load time of every successful swap."""
        if isinstance(fact, SwapFinished) and fact.error is None:
            self._add(fact.model, fact.load_seconds)

    def expected(self, model: str) -> LoadEstimate | None:
        loads = self._loads.get(model)
        if not loads:
            return None
        return LoadEstimate(statistics.median(loads), len(loads))


Publish = Callable[[str, Any], None]


def _phase(error: str | None) -> str:
    if error is None:
        return "ready"
    return "cancelled" if error == SWAP_CANCELLED else "failed"


class LoadProgress:
    """Publishes ``loadProgress`` events while swaps run (see module docstring).

    Payload: ``{"model", "swap_id", "phase": "evicting"|"loading"|"ready"|"failed"|"cancelled",
    "evicting": [...], "elapsed_ms", "expected_ms" (null: no history yet),
    "samples"}``; ``elapsed_ms`` counts from the swap's start.
    """

    def __init__(
        self,
        estimates: LoadEstimates,
        publish: Publish,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._estimates = estimates
        self._publish = publish
        self._interval = interval
        self._clock = clock
        self._running: dict[int, tuple[SwapStarted, asyncio.Task[None]]] = {}

    def observe(self, fact: RouterFact) -> None:
        if isinstance(fact, SwapStarted):
            self._emit(fact, "evicting" if fact.evict else "loading")
            task = asyncio.get_running_loop().create_task(
                self._tick(fact), name=f"modelswap.load-progress[{fact.model}]"
            )
            self._running[fact.swap_id] = (fact, task)
        else:
            started = self._running.pop(fact.swap_id, None)
            if started is not None:
                started[1].cancel()
                self._emit(started[0], _phase(fact.error), fact.finished)

    def _emit(self, fact: SwapStarted, phase: str, now: float | None = None) -> None:
        estimate = self._estimates.expected(fact.model)
        elapsed = (self._clock() if now is None else now) - fact.started
        self._publish(
            "loadProgress",
            {
                "model": fact.model,
                "swap_id": fact.swap_id,
                "phase": phase,
                "evicting": list(fact.evict),
                "elapsed_ms": round(max(0.0, elapsed) * 1000.0),
                "expected_ms": None if estimate is None else round(estimate.seconds * 1000.0),
                "samples": 0 if estimate is None else estimate.samples,
            },
        )

    async def _tick(self, fact: SwapStarted) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._emit(fact, "loading")

    def snapshot(self) -> list[SwapStarted]:
        """Swaps in progress (for a late ``/api/events`` client)."""
        return [fact for fact, _ in self._running.values()]

    async def close(self) -> None:
        tasks = [task for _, task in self._running.values()]
        self._running.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
