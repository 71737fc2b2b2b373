"""Work in progress: the swaps the scheduler started and the unloads still stopping.

Router spec §3.5, §3.6, §3.9, §3.11. A swap has a target, the models it
evicts, and the requests waiting on it (in join order); a request for a model
being loaded joins its swap instead of starting another. An unload is kept as
a pseudo-swap with no target that evicts its models (§9 #2): requests for
those models, and swaps that would start or evict them, wait until it has
stopped them, while every other model keeps routing.

Kept apart from :mod:`.scheduler` so the rules about what in-progress work
blocks — join, collide, "being evicted", "being unloaded" — live in one
place next to the data they read. Pure bookkeeping: no events, no decisions.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from modelswap.core.scheduler_stats import SwapInfo

__all__ = ["Swap", "SwapTable"]


@dataclass(slots=True)
class Swap:
    """One swap in progress: load ``target`` after stopping ``evict``."""

    swap_id: int
    target: str
    evict: tuple[str, ...]
    waiters: list[int] = field(default_factory=list)


class SwapTable:
    """Active swaps in start order, at most one per target, and pending unloads by op ID.

    Swap IDs are unique for the table's life, so a late ``SwapDone`` of a
    dropped swap can never resolve a newer swap of the same model (§9 #3).
    """

    def __init__(self) -> None:
        self._swaps: dict[int, Swap] = {}  # insertion order = start order
        self._swap_of: dict[str, int] = {}  # target -> swap_id
        self._unloads: dict[int, tuple[str, ...]] = {}  # op_id -> models
        self._ids = itertools.count(1)

    # --- swaps -------------------------------------------------------------------------

    def start(self, target: str, evict: tuple[str, ...], waiter: int) -> int:
        """Record a new swap to ``target`` with its first waiter; its new swap ID."""
        swap_id = next(self._ids)
        self._swaps[swap_id] = Swap(swap_id, target, evict, [waiter])
        self._swap_of[target] = swap_id
        return swap_id

    def join(self, model: str, request_id: int) -> int | None:
        """Add a waiter to the swap loading ``model``; its swap ID, or None if there is none."""
        swap_id = self._swap_of.get(model)
        if swap_id is not None:
            self._swaps[swap_id].waiters.append(request_id)
        return swap_id

    def leave(self, swap_id: int, request_id: int) -> None:
        """A waiter left (cancelled); the swap itself keeps running (§3.10)."""
        self._swaps[swap_id].waiters.remove(request_id)

    def finish(self, swap_id: int) -> Swap | None:
        """Remove a swap that reported done; None if it was dropped or reported twice."""
        swap = self._swaps.pop(swap_id, None)
        if swap is not None:
            del self._swap_of[swap.target]
        return swap

    def drop(self, target: str) -> Swap | None:
        """Remove the swap loading ``target`` (an unload cancels it), if any."""
        swap_id = self._swap_of.pop(target, None)
        return None if swap_id is None else self._swaps.pop(swap_id)

    def drop_all(self) -> list[Swap]:
        """Remove every swap (shutdown), in start order."""
        swaps = list(self._swaps.values())
        self._swaps.clear()
        self._swap_of.clear()
        return swaps

    def loading(self, model: str) -> bool:
        """Whether a swap is loading ``model``."""
        return model in self._swap_of

    def targets(self) -> Iterable[str]:
        """The models being loaded (they count as running for the policy, §3.5)."""
        return self._swap_of.keys()

    def being_evicted(self, model: str) -> bool:
        return any(model in swap.evict for swap in self._swaps.values())

    def collides(self, target: str, evict: tuple[str, ...]) -> bool:
        """§3.6: a swap to ``target`` evicting ``evict`` would touch what other work holds.

        Another swap collides when it loads a model we would evict, evicts our
        target, or evicts a model we would evict too; an unload when it stops
        our target or a model we would evict.
        """
        wanted = set(evict)
        for swap in self._swaps.values():
            if swap.target == target:
                continue
            if swap.target in wanted or target in swap.evict or wanted.intersection(swap.evict):
                return True
        return any(
            target in models or wanted.intersection(models) for models in self._unloads.values()
        )

    # --- unloads ------------------------------------------------------------------------

    def begin_unload(self, op_id: int, models: tuple[str, ...]) -> None:
        self._unloads[op_id] = models

    def end_unload(self, op_id: int) -> bool:
        """The unload's stops are done; False if ``op_id`` was not pending."""
        return self._unloads.pop(op_id, None) is not None

    def end_unloads(self) -> list[int]:
        """Every pending unload is complete (shutdown stopped everything); their op IDs."""
        op_ids = list(self._unloads)
        self._unloads.clear()
        return op_ids

    def unloading(self, model: str) -> bool:
        """Whether a pending unload is stopping ``model``."""
        return any(model in models for models in self._unloads.values())

    # --- reading --------------------------------------------------------------------------

    def swap_infos(self) -> tuple[SwapInfo, ...]:
        return tuple(
            SwapInfo(s.swap_id, s.target, s.evict, tuple(s.waiters)) for s in self._swaps.values()
        )

    def unload_items(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        return tuple(self._unloads.items())

    @property
    def swap_count(self) -> int:
        return len(self._swaps)

    @property
    def unload_count(self) -> int:
        return len(self._unloads)

    def __repr__(self) -> str:
        return f"<SwapTable swaps={len(self._swaps)} unloads={len(self._unloads)}>"
