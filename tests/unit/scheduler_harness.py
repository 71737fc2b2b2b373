"""A tiny synchronous driver for FifoScheduler tests: a fake policy and a programmable view.

Nothing here simulates processes beyond what a test sets: the view is a dict the
test edits (``h.view["a"] = "ready"``), exactly the advisory snapshot the real
runtime passes in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelswap.core import decisions as d
from modelswap.core import events as e
from modelswap.core.policy import LogLevel
from modelswap.core.scheduler import FifoScheduler, SchedulerStats


class FakePolicy:
    """``evicts[target]`` lists what target evicts *if running*; everything else coexists."""

    def __init__(self, evicts: Mapping[str, Iterable[str]] | None = None) -> None:
        self.evicts = {t: frozenset(ms) for t, ms in (evicts or {}).items()}
        self.described: list[tuple[str, tuple[str, ...]]] = []

    def eviction_for(self, target: str, running: Sequence[str]) -> tuple[str, ...]:
        wanted = self.evicts.get(target, frozenset())
        return tuple(m for m in running if m != target and m in wanted)

    def describe_swap(self, target: str, running: Sequence[str]) -> tuple[LogLevel, str] | None:
        self.described.append((target, tuple(running)))
        return None


def mutual(*models: str) -> FakePolicy:
    """Every model evicts every other one (one model at a time)."""
    return FakePolicy({m: set(models) - {m} for m in models})


class Harness:
    """Feeds events with the current view; remembers every decision per request."""

    def __init__(
        self,
        models: Iterable[str],
        policy: Any = None,
        view: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        self.s = FifoScheduler(list(models), policy or FakePolicy(), **options)
        self.view: dict[str, str] = dict(view or {})
        self.now = 0.0
        self.log: list[d.Decision] = []

    def __call__(self, event: e.Event) -> list[d.Decision]:
        out = self.s.handle(event, dict(self.view))
        assert not [x for x in out if isinstance(x, d.Diagnostic)], out
        self.log.extend(out)
        return out

    # --- events with defaults -------------------------------------------------------

    def req(self, rid: int, model: str, now: float | None = None) -> list[d.Decision]:
        if now is not None:
            self.now = now
        return self(e.RequestArrived(rid, model, self.now))

    def swap_done(
        self, swap_id: int, error: str | None = None, now: float | None = None
    ) -> list[d.Decision]:
        """Report a swap; on success its target becomes ready and its evictees stopped."""
        if now is not None:
            self.now = now
        started = self.started(swap_id)
        for model in started.evict:
            self.view[model] = "stopped"
        self.view[started.model] = "ready" if error is None else "stopped"
        return self(e.SwapDone(swap_id, error, self.now))

    def serve_done(self, rid: int, now: float | None = None) -> list[d.Decision]:
        if now is not None:
            self.now = now
        return self(e.ServeDone(rid, self.now))

    def cancel(self, rid: int) -> list[d.Decision]:
        return self(e.Cancelled(rid))

    def unload(self, op_id: int, *models: str) -> list[d.Decision]:
        return self(e.UnloadRequested(op_id, models or None))

    def stops_done(self, op_id: int, *stopped: str) -> list[d.Decision]:
        for model in stopped:
            self.view[model] = "stopped"
        return self(e.StopsDone(op_id, self.now))

    # --- queries -----------------------------------------------------------------------

    @property
    def stats(self) -> SchedulerStats:
        return self.s.statistics()

    def started(self, swap_id: int) -> d.StartSwap:
        found = [x for x in self.log if isinstance(x, d.StartSwap) and x.swap_id == swap_id]
        assert len(found) == 1, f"swap {swap_id} started {len(found)} times"
        return found[0]

    def swaps_started(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(x.model, x.evict) for x in self.log if isinstance(x, d.StartSwap)]

    def served(self, model: str | None = None) -> list[int]:
        return [
            x.request_id
            for x in self.log
            if isinstance(x, d.GrantServe) and (model is None or x.model == model)
        ]

    def errored(self) -> list[int]:
        return [x.request_id for x in self.log if isinstance(x, d.GrantError)]

    def queue(self) -> list[int]:
        return [rid for rid, _ in self.stats.queue]


def kinds(decisions: Iterable[d.Decision]) -> list[str]:
    """Decision class names, for compact assertions about order."""
    return [type(x).__name__ for x in decisions]
