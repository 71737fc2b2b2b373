"""A config reload as the router sees it: new process definitions and new scheduling rules.

Built from a :class:`~modelswap.config.Config` by
:func:`modelswap.router.build.router_update` (the only place that reads routing
settings out of the config) and applied by
:meth:`~modelswap.router.runtime.LocalRouter.reconfigure` as one event of the
router's loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modelswap.core import events as e
from modelswap.core.memory import MemoryPolicy
from modelswap.core.policy import EvictionPolicy
from modelswap.process import ProcessSpec

__all__ = ["RouterUpdate"]


@dataclass(frozen=True, slots=True)
class RouterUpdate:
    """Everything a reload changes in a router (see module docstring)."""

    specs: Mapping[str, ProcessSpec]
    """One definition per model the router serves from now on."""
    policy: EvictionPolicy
    limits: Mapping[str, int] = field(default_factory=dict)
    priority: Mapping[str, int] = field(default_factory=dict)
    max_wait: float = 0.0
    min_residency: float = 0.0
    health_check_timeout: float = 0.0
    """The shutdown grace (≤ 0: keep the current one)."""
    memory: MemoryPolicy | None = None
    """The memory policy (budgets, declared sizes; None: memory routing off)."""

    def event(self, replace: frozenset[str], now: float) -> e.Reconfigured:
        """The scheduler's event for this update; ``replace`` comes from the process table."""
        return e.Reconfigured(
            frozenset(self.specs),
            self.policy,
            now,
            limits=self.limits,
            priority=self.priority,
            max_wait=self.max_wait,
            min_residency=self.min_residency,
            replace=replace,
            memory=self.memory,
        )
