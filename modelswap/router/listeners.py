"""A list of synchronous listeners: subscribe with an unsubscribe handle, call them all safely.

The router tells observers (tests, metrics, the events feed, the timeline)
what happened by calling them synchronously from its loop; one failing
listener is logged and must never stop the loop or the other listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger("modelswap.router")

__all__ = ["Listeners"]


class Listeners(Generic[T]):
    """Listeners taking one value of type ``T``; ``what`` names them in error logs."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._listeners: list[Callable[[T], None]] = []

    def __len__(self) -> int:
        return len(self._listeners)

    def add(self, listener: Callable[[T], None]) -> Callable[[], None]:
        """Subscribe ``listener``; returns the (idempotent) unsubscribe function."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def call(self, value: T) -> None:
        """Call every listener with ``value``; a failing one is logged, the rest still run."""
        for listener in list(self._listeners):
            try:
                listener(value)
            except Exception:
                log.exception("%s failed", self._what)
