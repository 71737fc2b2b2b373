"""The last hour of swaps, as data for ``GET /api/timeline``: :class:`Timeline`.

The UI's timeline draws one lane per model — when it was starting, ready and
stopping — with each request as a mark from arrival to service and the swap
that made it wait. Every piece already exists as a fact somewhere; this module
only keeps the last hour of them, bounded, in one place:

* process state changes (``ManagedProcess.on_state_change``) become
  :class:`StateInterval` s — an interval per ``starting``/``ready``/``stopping``
  stretch; ``stopped`` is the absence of one, and the open interval has
  ``end is None``;
* router facts (:mod:`modelswap.router.facts`) become :class:`SwapMark` s,
  opened by ``SwapStarted`` and completed by ``SwapFinished``;
* stored activity rows (the recorder's ``on_stored`` callback) become
  :class:`RequestMark` s, keyed by their activity row id.

All times are wall-clock Unix seconds. Router facts carry the router's
monotonic clock; ``wall_offset`` (``time.time() - time.monotonic()``, taken
once) converts them, so a wall-clock step never reorders the picture.

Every method is synchronous and cheap (called on the event loop by the
publishers); nothing here does I/O. Entries are immutable, so a
:class:`TimelineSnapshot` can be encoded in a worker thread while new facts
arrive. Bounded twice: by age (the window, one hour) and by count (oldest
dropped first, counted in :attr:`TimelineStatistics.dropped`).

A swap cancelled by an unload or shutdown finishes with the error
``cancelled`` (the router publishes that fact when it cancels it);
:meth:`Timeline.close_stale_swaps` remains as a backstop that ends any open
swap the router no longer runs the same way.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from modelswap.observability.records import RequestRecord
from modelswap.process.state import StateChange
from modelswap.router.facts import RouterFact, SwapFinished, SwapStarted

__all__ = [
    "CANCELLED",
    "RequestMark",
    "StateInterval",
    "SwapMark",
    "Timeline",
    "TimelineSnapshot",
    "TimelineStatistics",
]

WINDOW = 3600.0
"""Seconds of history kept and served (the last hour)."""
MAX_REQUESTS = 20_000
MAX_SWAPS = 5_000
MAX_INTERVALS = 5_000
"""Per model: a model swapped in and out every second for an hour stays within it."""
SHOWN_STATES = frozenset({"starting", "ready", "stopping"})
CANCELLED = "cancelled"
"""The error of a swap that ended without a ``SwapFinished`` fact (unload, shutdown)."""


@dataclass(frozen=True, slots=True)
class StateInterval:
    """One stretch of one model in ``starting``, ``ready`` or ``stopping``."""

    model: str
    state: str
    start: float
    end: float | None = None
    """None while the model is still in this state."""

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "state": self.state, "from": self.start, "to": self.end}


@dataclass(frozen=True, slots=True)
class SwapMark:
    """One swap: stop ``evict``, then load ``model``; ``finished`` None while it runs."""

    id: int
    model: str
    evict: tuple[str, ...]
    reason: str
    started: float
    evicted: float | None = None
    """When the evictees had stopped (None while it runs)."""
    finished: float | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "evict": list(self.evict),
            "reason": self.reason,
            "started": self.started,
            "evicted": self.evicted,
            "finished": self.finished,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class RequestMark:
    """One recorded request: arrival → grant → end, and the swap it waited for."""

    id: int
    """The activity row id (``/api/metrics/activity``)."""
    model: str
    arrived: float
    granted: float | None
    ended: float
    status: int
    swap_id: int | None
    queue_ms: float
    load_ms: float | None

    @classmethod
    def from_record(cls, row_id: int, record: RequestRecord) -> RequestMark:
        explain = record.explain
        return cls(
            id=row_id,
            model=record.model,
            arrived=record.started_wall,
            granted=record.granted_wall,
            ended=record.ended_wall,
            status=record.status,
            swap_id=record.swap_id,
            queue_ms=round(explain.queue_ms, 3) if explain is not None else 0.0,
            load_ms=(
                round(explain.load_ms, 3)
                if explain is not None and explain.load_ms is not None
                else None
            ),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "arrived": self.arrived,
            "granted": self.granted,
            "ended": self.ended,
            "status": self.status,
            "swap_id": self.swap_id,
            "queue_ms": self.queue_ms,
            "load_ms": self.load_ms,
        }


@dataclass(frozen=True, slots=True)
class TimelineSnapshot:
    """What ``GET /api/timeline`` returns, as immutable data (encode it anywhere)."""

    now: float
    since: float
    models: tuple[str, ...]
    states: tuple[StateInterval, ...]
    swaps: tuple[SwapMark, ...]
    requests: tuple[RequestMark, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "since": self.since,
            "models": list(self.models),
            "states": [s.as_json() for s in self.states],
            "swaps": [s.as_json() for s in self.swaps],
            "requests": [r.as_json() for r in self.requests],
        }


@dataclass(frozen=True, slots=True)
class TimelineStatistics:
    intervals: int
    swaps: int
    requests: int
    dropped: int
    """Entries dropped by a count cap before they aged out."""


class Timeline:
    """The last ``window`` seconds of state intervals, swaps and requests (module doc)."""

    def __init__(
        self,
        models: Iterable[str] = (),
        *,
        clock: Callable[[], float] = time.time,
        wall_offset: float = 0.0,
        window: float = WINDOW,
        max_requests: int = MAX_REQUESTS,
        max_swaps: int = MAX_SWAPS,
        max_intervals: int = MAX_INTERVALS,
    ) -> None:
        self._clock = clock
        self._wall_offset = wall_offset
        self._window = window
        self._max_requests = max_requests
        self._max_swaps = max_swaps
        self._max_intervals = max_intervals
        self._intervals: dict[str, deque[StateInterval]] = {}
        self._swaps: dict[int, SwapMark] = {}  # insertion order = start order
        self._requests: deque[RequestMark] = deque()
        self._dropped = 0
        self.add_models(models)

    def __repr__(self) -> str:
        st = self.statistics()
        return (
            f"<Timeline models={len(self._intervals)} intervals={st.intervals} "
            f"swaps={st.swaps} requests={st.requests} dropped={st.dropped}>"
        )

    def statistics(self) -> TimelineStatistics:
        return TimelineStatistics(
            intervals=sum(len(lane) for lane in self._intervals.values()),
            swaps=len(self._swaps),
            requests=len(self._requests),
            dropped=self._dropped,
        )

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted(self._intervals))

    def add_models(self, models: Iterable[str]) -> None:
        """Give these models a lane (requests for models without one are ignored)."""
        for model in models:
            self._intervals.setdefault(model, deque())

    # --- inputs -------------------------------------------------------------------------

    def on_state_change(self, change: StateChange) -> None:
        """A ``ManagedProcess.on_state_change`` listener: the change happened now."""
        self.state_changed(change.model_id, change.new.value, self._clock())

    def state_changed(self, model: str, state: str, at: float) -> None:
        """``model`` entered ``state`` at ``at``: close its open interval, maybe open one."""
        lane = self._intervals.setdefault(model, deque())
        if lane and lane[-1].end is None:
            if lane[-1].state == state:
                return
            lane[-1] = replace(lane[-1], end=max(at, lane[-1].start))
        if state in SHOWN_STATES:
            lane.append(StateInterval(model, state, at))
            if len(lane) > self._max_intervals:
                lane.popleft()
                self._dropped += 1
        self._prune(self._clock())

    def on_fact(self, fact: RouterFact) -> None:
        """A ``LocalRouter.subscribe_facts`` listener (fact times are monotonic)."""
        wall = self._wall_offset
        if isinstance(fact, SwapStarted):
            self._swaps[fact.swap_id] = SwapMark(
                fact.swap_id, fact.model, fact.evict, fact.reason, fact.started + wall
            )
            while len(self._swaps) > self._max_swaps:
                del self._swaps[next(iter(self._swaps))]
                self._dropped += 1
        elif isinstance(fact, SwapFinished):
            mark = SwapMark(
                fact.swap_id,
                fact.model,
                fact.evict,
                fact.reason,
                fact.started + wall,
                fact.evicted + wall,
                fact.finished + wall,
                fact.error,
            )
            if fact.swap_id in self._swaps or len(self._swaps) < self._max_swaps:
                self._swaps[fact.swap_id] = mark  # replacing keeps its place in the order
        self._prune(self._clock())

    def on_stored(self, stored: Sequence[tuple[int, RequestRecord]]) -> None:
        """The recorder's ``on_stored`` listener: one mark per stored row of a known model."""
        for row_id, record in stored:
            if record.model in self._intervals:
                self._requests.append(RequestMark.from_record(row_id, record))
        overflow = len(self._requests) - self._max_requests
        for _ in range(max(0, overflow)):
            self._requests.popleft()
            self._dropped += 1
        self._prune(self._clock())

    def close_stale_swaps(self, live: Collection[int]) -> int:
        """End every open swap not in ``live`` as ``cancelled`` (now); how many were ended.

        A swap cancelled by an unload or shutdown publishes no fact, so the
        timeline cannot see it end; the router's scheduler knows which swaps
        are still live.
        """
        now = self._clock()
        stale = [m for m in self._swaps.values() if m.finished is None and m.id not in live]
        for mark in stale:
            at = max(now, mark.started)
            self._swaps[mark.id] = replace(mark, finished=at, error=CANCELLED)
        return len(stale)

    # --- output -------------------------------------------------------------------------

    def snapshot(self, since: float | None = None) -> TimelineSnapshot:
        """What overlaps ``[since, now]``; ``since`` is clamped to the window (default: all)."""
        now = self._clock()
        self._prune(now)
        start = now - self._window
        if since is not None and since > start:
            start = since
        states = [
            interval
            for lane in self._intervals.values()
            for interval in lane
            if interval.end is None or interval.end >= start
        ]
        states.sort(key=lambda s: (s.start, s.model))
        swaps = tuple(m for m in self._swaps.values() if m.finished is None or m.finished >= start)
        requests = sorted(
            (r for r in self._requests if r.ended >= start), key=lambda r: (r.arrived, r.id)
        )
        return TimelineSnapshot(now, start, self.models, tuple(states), swaps, tuple(requests))

    def _prune(self, now: float) -> None:
        """Drop what ended before the window (an open entry is never dropped by age)."""
        cutoff = now - self._window
        for lane in self._intervals.values():
            while lane and lane[0].end is not None and lane[0].end < cutoff:
                lane.popleft()
        while self._swaps:
            oldest = next(iter(self._swaps.values()))
            if oldest.finished is None or oldest.finished >= cutoff:
                break
            del self._swaps[oldest.id]
        requests = self._requests
        while requests and requests[0].ended < cutoff:
            requests.popleft()
