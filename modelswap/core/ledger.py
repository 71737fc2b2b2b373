"""Per-model counters: reservations (the concurrency limit) and router-level in-flight.

Router spec §3.3 and §3.10. A reservation is held from admission until the
request is served to completion, fails or is cancelled, so the limit counts
waiting, queued and serving requests together. In-flight counts delivered (or
not yet known to be undelivered) serve grants and is what keeps a model from
being evicted while it serves.

llama-swap panics when a counter would go below zero. Here (router spec §9 #24)
the counter is clamped at zero and the violation is returned as text, which the
scheduler turns into a :class:`~.decisions.Diagnostic`: one wrong count must not
take every model down, but it must be loud. Tests assert it never happens.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Ledger"]


class Ledger:
    """Two non-negative counters per model; zero entries are removed."""

    def __init__(self) -> None:
        self._reserved: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}

    def reserved(self, model: str) -> int:
        return self._reserved.get(model, 0)

    def in_flight(self, model: str) -> int:
        return self._in_flight.get(model, 0)

    def reserve(self, model: str) -> None:
        self._reserved[model] = self._reserved.get(model, 0) + 1

    def release(self, model: str) -> str | None:
        """Give back one reservation; the violation text if there was none."""
        return _decrement(self._reserved, model, "reservation")

    def start_serving(self, model: str) -> None:
        self._in_flight[model] = self._in_flight.get(model, 0) + 1

    def stop_serving(self, model: str) -> str | None:
        """One fewer request in flight; the violation text if there was none."""
        return _decrement(self._in_flight, model, "in-flight request")

    @property
    def reservations(self) -> Mapping[str, int]:
        return dict(self._reserved)

    @property
    def in_flight_counts(self) -> Mapping[str, int]:
        return dict(self._in_flight)


def _decrement(counts: dict[str, int], model: str, what: str) -> str | None:
    current = counts.get(model, 0)
    if current <= 0:
        counts.pop(model, None)
        return f"released a {what} of model {model!r} that was not held (clamped at 0)"
    if current == 1:
        del counts[model]
    else:
        counts[model] = current - 1
    return None
