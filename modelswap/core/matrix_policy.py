"""Matrix eviction policy: :class:`~.matrix.CompiledMatrix` behind the policy contract.

The solver (:meth:`CompiledMatrix.solve`) already is a pure "what if"; this
adapter only narrows its answer to :class:`~.policy.EvictionPolicy` and turns
the §4.3.11 swap-start log into returned text (core code does not log).

Router spec §9 #9 (the "target already running" shortcut trusts a *stopping*
target) is fixed in the scheduler, not here: the scheduler leaves the target
out of ``running`` while its process is ``stopping`` (see
:meth:`FifoScheduler._running_for`). The solver then does a real solve, so a
model being stopped by TTL that comes back evicts the incompatible models it
would otherwise have silently coexisted with. Other stopping models stay in
``running`` — evicting a dying model is a harmless wait, while ignoring it could
start an incompatible model before its memory is free; their evict cost still
counts, which only biases towards sets that keep them (they leave anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

from modelswap.core.decisions import LogLevel
from modelswap.core.matrix import CompiledMatrix

__all__ = ["MatrixPolicy"]


class MatrixPolicy:
    """:class:`~.policy.EvictionPolicy` answering from a compiled matrix (§4.3)."""

    def __init__(self, compiled: CompiledMatrix) -> None:
        self.compiled = compiled

    def eviction_for(self, target: str, running: Sequence[str]) -> tuple[str, ...]:
        """§4.3.5: the cheapest set containing ``target``; evict what it leaves out."""
        return self.compiled.solve(target, running).evict

    def describe_swap(self, target: str, running: Sequence[str]) -> tuple[LogLevel, str] | None:
        """The §4.3.11 line: info for evictions and cold starts, debug otherwise."""
        choice = self.compiled.solve(target, running)
        return choice.log_level, choice.log_line(target)

    def __repr__(self) -> str:
        return f"<MatrixPolicy sets={list(self.compiled.evaluation_order)}>"
