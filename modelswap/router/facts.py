"""Facts the local router publishes as they happen: plain data for observers.

The router already knows every fact worth showing — a swap was committed (its
target, what it evicts and why), the evictees stopped, the target became ready
or failed. It publishes each once, synchronously, to every listener registered
with :meth:`LocalRouter.subscribe_facts`. Listeners are observers (the events
hub, Prometheus, the activity store's load history): they must not block and
must not call back into the router. Nothing in ``core/`` knows about them.

Times are the router's ``clock`` (monotonic seconds) — durations, not dates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["SWAP_CANCELLED", "FactListener", "RouterFact", "SwapFinished", "SwapStarted"]

SWAP_CANCELLED = "cancelled"
"""``SwapFinished.error`` of a swap an unload or shutdown cancelled."""


@dataclass(frozen=True, slots=True)
class SwapStarted:
    """A swap was committed: stop ``evict`` (in parallel), then load ``model``.

    ``reason`` says why the evictees must go: the eviction policy's name
    (``group``, ``matrix``), or ``maxWait`` when the swap serves a request
    that had waited past the starvation bound.
    """

    swap_id: int
    model: str
    evict: tuple[str, ...]
    reason: str
    started: float


@dataclass(frozen=True, slots=True)
class SwapFinished:
    """A swap ended: ``error`` None means ``model`` is ready.

    ``evicted`` is when the evictees had stopped (== ``started`` when there
    were none); ``finished`` when the target was ready or had failed. A swap
    cancelled by an unload or shutdown finishes with ``error`` ==
    :data:`SWAP_CANCELLED` when it is cancelled.
    """

    swap_id: int
    model: str
    evict: tuple[str, ...]
    reason: str
    started: float
    evicted: float
    finished: float
    error: str | None

    @property
    def evict_seconds(self) -> float:
        return max(0.0, self.evicted - self.started)

    @property
    def load_seconds(self) -> float:
        """How long the target took to become ready (excluding the evictions)."""
        return max(0.0, self.finished - self.evicted)


RouterFact: TypeAlias = SwapStarted | SwapFinished
FactListener = Callable[[RouterFact], None]
