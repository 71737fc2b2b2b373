"""The starvation bound's clock: how long each model has been resident (ready), in total.

``maxWait`` should fire where one model starves a request, not where a busy
machine merely makes everybody queue. The difference, measured with
``bench/churn_sim.py``: a starving request waits on *one* model that keeps
taking new work, while under a uniform load near capacity a long wait is a
sum of many other models' short turns. So the bound counts only the time a
queued request has waited *while the model it must evict was resident*: its
arrival takes a :meth:`Residency.snapshot`, and the time waited on ``m`` is
``clock(m) - snapshot[m]``. Counting from arrival alone added 4–13 % swaps on
the uniform trace without lowering its worst wait; this clock adds none
(BENCHMARKS.md).

Pure: times are inputs. A model's residency starts when its swap reports
ready and ends when a swap starts evicting it, an unload stops it, or a view
shows it no longer ready (TTL stop, crash).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["Residency"]


class Residency:
    """Accumulated ready time per model; a model is resident between start() and stop()."""

    def __init__(self) -> None:
        self._total: dict[str, float] = {}
        self._since: dict[str, float] = {}

    def start(self, model: str, now: float) -> None:
        self._since.setdefault(model, now)

    def stop(self, models: Iterable[str], now: float) -> None:
        for model in models:
            since = self._since.pop(model, None)
            if since is not None:
                self._total[model] = self._total.get(model, 0.0) + max(0.0, now - since)

    def sweep(self, view: Mapping[str, str], now: float) -> None:
        """End the residency of every model the view no longer shows ready."""
        self.stop([m for m in self._since if str(view.get(m, "stopped")) != "ready"], now)

    def clock(self, model: str, now: float) -> float:
        """Seconds ``model`` has been resident in total, up to ``now``."""
        since = self._since.get(model)
        running = max(0.0, now - since) if since is not None else 0.0
        return self._total.get(model, 0.0) + running

    def snapshot(self, now: float) -> dict[str, float]:
        """Every model's clock now (for a request's arrival)."""
        return {m: self.clock(m, now) for m in self._total.keys() | self._since.keys()}

    def waited_on(self, model: str, snapshot: Mapping[str, float], now: float) -> float:
        """How long, since ``snapshot`` was taken, ``model`` has been resident."""
        return self.clock(model, now) - snapshot.get(model, 0.0)

    def __repr__(self) -> str:
        return f"<Residency resident={sorted(self._since)}>"
