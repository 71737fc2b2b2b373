"""The eviction-policy contract: the one replaceable decision inside the scheduler.

The scheduler knows *when* a swap may happen (queueing, collisions, busy models);
a policy knows only *what* must stop for a target to run (router spec §4.1).
Group swapping (:mod:`.groups`) and the matrix solver (:mod:`.matrix_policy`)
are the two shipped policies; a new one (say, GPU-memory driven) is one new
module with a class that satisfies :class:`EvictionPolicy` — nothing else in
the scheduler or runtime changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from modelswap.core.decisions import LogLevel

__all__ = ["EvictionPolicy", "LogLevel"]


@runtime_checkable
class EvictionPolicy(Protocol):
    """Pure answers to "what if ``target`` were started now?".

    ``running`` is sorted, duplicate-free, and may contain ``target``: it holds
    every model that is starting, ready or stopping, plus the targets of swaps
    the scheduler has committed to but which may not have started yet (router
    spec §3.5).
    """

    def eviction_for(self, target: str, running: Sequence[str]) -> tuple[str, ...]:
        """The models of ``running`` to stop before ``target`` may run.

        Must be pure and deterministic: the scheduler asks it for every arrival
        and for every queued request on every drain, most answers are thrown
        away. The result keeps ``running``'s order and never contains ``target``.
        """
        ...

    def describe_swap(self, target: str, running: Sequence[str]) -> tuple[LogLevel, str] | None:
        """A log line for a swap the scheduler has just committed to, or None.

        Asked exactly once per committed swap with the same ``running`` as the
        :meth:`eviction_for` call that produced it. Core code cannot log, so the
        policy returns ``(level, text)`` and the runtime writes it.
        """
        ...
