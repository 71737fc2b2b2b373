"""The scheduler's optional starvation bound (``maxWait``, ``minResidency``; router spec §9 #1).

llama-swap has no bound at all: a model that keeps receiving requests is never
evicted, so a queued request for another model can wait for ever. With
``max_wait`` > 0 the scheduler's fast path to a ready model yields to the
*anchor*, the queued request that has waited longest: once the anchor has
waited more than ``max_wait`` *while that model was resident*
(:mod:`.residency`: the time other models held the machine does not count),
a model the anchor's swap would evict stops taking new work (the new requests
queue behind the anchor), so its in-flight count drains and the swap can
start. That is what makes the bound cost nothing where nobody starves: under
a uniform load a long wait is a sum of many short turns, while a starving
request waits on one model that never lets go (bench/churn_sim.py;
BENCHMARKS.md). A model ready for less than ``min_residency`` is exempt, so
two starving models cannot make each other thrash.

Kept apart from :mod:`.scheduler` because it is one rule with its own state
(the residency clock and when each model last became ready), which the
scheduler only feeds and asks one question. Pure: times are inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from modelswap.core.residency import Residency

__all__ = ["StarvationBound"]


class StarvationBound:
    """``max_wait`` > 0 turns the bound on; ``min_residency`` protects a fresh model (seconds).

    The residency clock and ready times are kept even while the bound is off,
    so a reload that turns it on finds them current.
    """

    def __init__(self, max_wait: float = 0.0, min_residency: float = 0.0) -> None:
        if max_wait < 0 or min_residency < 0:
            raise ValueError("max_wait and min_residency must be >= 0")
        self._max_wait = max_wait
        self._min_residency = min_residency
        self._residency = Residency()
        self._ready_since: dict[str, float] = {}

    @property
    def max_wait(self) -> float:
        """The bound in seconds (0 = off)."""
        return self._max_wait

    @property
    def enabled(self) -> bool:
        return self._max_wait > 0

    def configure(self, max_wait: float, min_residency: float) -> None:
        """New settings from a config reload (validated by the config schema)."""
        self._max_wait, self._min_residency = max_wait, min_residency

    # --- what the scheduler reports ----------------------------------------------------

    def sweep(self, view: Mapping[str, str], now: float) -> None:
        """End the residency of models the view no longer shows ready (TTL stop, crash)."""
        if self.enabled:
            self._residency.sweep(view, now)

    def arrival(self, now: float) -> dict[str, float]:
        """What a request arriving now remembers: every model's residency clock."""
        return self._residency.snapshot(now) if self.enabled else {}

    def became_ready(self, model: str, now: float) -> None:
        self._ready_since[model] = now
        self._residency.start(model, now)

    def stopping(self, models: Iterable[str], now: float) -> None:
        """``models`` are being evicted or unloaded: their residency ends."""
        self._residency.stop(models, now)

    def retired(self, model: str) -> None:
        """A reload replaced ``model``'s process: its successor is not ready yet."""
        self._ready_since.pop(model, None)

    # --- the one question ----------------------------------------------------------------

    def blocks(
        self,
        model: str,
        anchor_model: str,
        anchor_arrival: Mapping[str, float],
        now: float,
        anchor_evicts: Callable[[str], bool],
    ) -> bool:
        """Whether a fast path to ready ``model`` must yield to the anchor.

        ``anchor_arrival`` is the anchor's :meth:`arrival` snapshot;
        ``anchor_evicts(model)`` says whether the anchor's swap would evict
        ``model`` (asked last: it runs the eviction policy).
        """
        if not self.enabled or anchor_model == model:
            return False
        if self._residency.waited_on(model, anchor_arrival, now) <= self._max_wait:
            return False
        since = self._ready_since.get(model)
        if since is not None and now - since < self._min_residency:
            return False
        return anchor_evicts(model)

    def __repr__(self) -> str:
        return f"<StarvationBound max_wait={self._max_wait} {self._residency!r}>"
