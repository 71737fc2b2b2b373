"""The scheduler's waiting line: priority insertion, stable order, positions.

Router spec §3.7. A queued request goes just before the first queued request
whose model priority is *strictly lower*, so equal priorities keep arrival
order and a drain that leaves items blocked keeps their relative order. Queues
are short (bounded by the sum of concurrency limits), so a list is the right
structure: every operation is a plain linear scan.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["RequestQueue"]


class RequestQueue:
    """Request IDs in service order, each with the priority it was inserted at."""

    def __init__(self) -> None:
        self._items: list[tuple[int, int]] = []  # (request_id, priority)

    def insert(self, request_id: int, priority: int) -> None:
        """Place ``request_id`` before the first entry of strictly lower priority."""
        for index, (_, other) in enumerate(self._items):
            if other < priority:
                self._items.insert(index, (request_id, priority))
                return
        self._items.append((request_id, priority))

    def remove(self, request_id: int) -> bool:
        """Drop ``request_id``; False if it was not queued."""
        for index, (rid, _) in enumerate(self._items):
            if rid == request_id:
                del self._items[index]
                return True
        return False

    def clear(self) -> list[int]:
        """Empty the queue, returning what was in it, in order."""
        ids = [rid for rid, _ in self._items]
        self._items.clear()
        return ids

    def positions(self) -> dict[int, int]:
        """Every queued request's 1-based position."""
        return {rid: index for index, (rid, _) in enumerate(self._items, start=1)}

    def __iter__(self) -> Iterator[int]:
        return iter([rid for rid, _ in self._items])

    def __contains__(self, request_id: object) -> bool:
        return any(rid == request_id for rid, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"<RequestQueue {[rid for rid, _ in self._items]}>"
