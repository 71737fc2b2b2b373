"""The router loop's vocabulary: its queue items, its bookkeeping records, its statistics.

Plain data owned by :class:`~modelswap.router.runtime.LocalRouter`'s loop,
kept apart so the runtime module reads as behaviour only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from modelswap.core import events as e
from modelswap.core.scheduler import SchedulerStats
from modelswap.process import ProcessStatistics
from modelswap.router.facts import SwapFinished, SwapStarted
from modelswap.router.ticket import LocalTicket
from modelswap.router.update import RouterUpdate

__all__ = ["Barrier", "Item", "Op", "Posted", "Reload", "RouterStatistics", "SwapTimes"]


@dataclass(frozen=True, slots=True)
class RouterStatistics:
    """A snapshot for tests, ``/running`` and metrics (design.md rule 10).

    ``tickets`` counts requests the loop still tracks (admitted and not yet
    finished); ``swap_workers`` and ``tasks`` the tasks the router owns;
    ``undelivered_grants`` serve grants whose handler had already gone. After
    every request has ended, all three are 0 and ``in_flight``/``reservations``
    are empty.
    """

    name: str
    scheduler: SchedulerStats
    processes: Mapping[str, ProcessStatistics]
    tickets: int
    swap_workers: int
    tasks: int
    undelivered_grants: int
    shutting_down: bool
    closed: bool

    @property
    def in_flight(self) -> Mapping[str, int]:
        return self.scheduler.in_flight

    @property
    def reservations(self) -> Mapping[str, int]:
        return self.scheduler.reservations

    @property
    def queue(self) -> tuple[tuple[int, str], ...]:
        return self.scheduler.queue

    def state(self, model_id: str) -> str:
        return self.processes[model_id].state.value


@dataclass(slots=True)
class Op:
    """A caller waiting for an unload or shutdown, and the grace its stops use."""

    done: asyncio.Future[str | None]
    grace: float


@dataclass(slots=True)
class Posted:
    """One queue item: an event plus what the loop must register with it."""

    event: e.Event
    ticket: LocalTicket | None = None
    op: Op | None = None


@dataclass(slots=True)
class Barrier:
    """Resolved when the loop reaches it: everything posted before it is handled."""

    done: asyncio.Future[None]


@dataclass(slots=True)
class Reload:
    """A config reload (see :meth:`LocalRouter.reconfigure`)."""

    update: RouterUpdate
    done: asyncio.Future[None]
    on_applied: Callable[[], None] | None = None


Item = Posted | Barrier | Reload


@dataclass(slots=True)
class SwapTimes:
    """A committed swap's story so far (loop-owned; the worker sets ``evicted``)."""

    started: SwapStarted
    evicted: float | None = None

    def finished(self, now: float, error: str | None) -> SwapFinished:
        fact = self.started
        return SwapFinished(
            fact.swap_id,
            fact.model,
            fact.evict,
            fact.reason,
            fact.started,
            self.evicted if self.evicted is not None else fact.started,
            now,
            error,
        )
