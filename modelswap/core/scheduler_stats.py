"""What :meth:`FifoScheduler.statistics <modelswap.core.scheduler.FifoScheduler.statistics>`
returns: frozen snapshots for tests, ``/running``, metrics and the UI.

Kept apart from the scheduler so that readers of statistics (the router's
items, Prometheus) depend on plain data, not on the scheduling code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["SchedulerStats", "SwapInfo"]


@dataclass(frozen=True, slots=True)
class SwapInfo:
    """One active swap as seen by :meth:`FifoScheduler.statistics`."""

    swap_id: int
    model: str
    evict: tuple[str, ...]
    waiters: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A frozen snapshot of the scheduler, for tests, ``/running`` and metrics.

    ``queue`` is ``(request_id, model)`` in service order; ``unloading`` is
    ``(op_id, models)`` per unload still stopping; ``retiring`` the models a
    reload replaced or removed whose old process has not stopped yet;
    counters omit zero entries.
    """

    queue: tuple[tuple[int, str], ...]
    swaps: tuple[SwapInfo, ...]
    unloading: tuple[tuple[int, tuple[str, ...]], ...]
    in_flight: Mapping[str, int]
    reservations: Mapping[str, int]
    shutting_down: bool
    now: float
    retiring: tuple[str, ...] = ()
    footprints: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Per model that was measured or declares a size: bytes per resource the memory
    policy counts (max of declared and measured; measured as-is without a policy; an
    old process still draining after a reload also counts its old declaration)."""
