"""One process's TTL: request accounting, this run's ``keep_alive`` override, the monitor task.

Spec router.md §2.8. The rule itself is pure (:func:`.state.ttl_expired`);
this module feeds it: it counts requests in flight and remembers the last use
(written synchronously by the forwarder's ``track_request``), holds the TTL
in force (the config's ``ttl`` or an Ollama ``keep_alive`` for the current
run), and runs the monitor that ticks until the rule says "unload".

The monitor only *reports* (``on_due``); the process's controller re-checks
the rule in its own step before it stops anything, so a request that arrives
between the monitor's look and the stop keeps the model (§9.7). Kept apart
from :mod:`.managed` because it is its own clock with its own task, and the
controller only arms, disarms and asks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterator

from modelswap.process.child import Child
from modelswap.process.state import ttl_expired

__all__ = ["IMMEDIATE_TTL", "TTL_TICK", "TtlTimer"]

TTL_TICK = 1.0  # router.md §2.8
IMMEDIATE_TTL = 1e-9
"""``keep_alive(0)``: idle for any time at all is long enough."""


class TtlTimer:
    """The TTL of one ManagedProcess; ``on_due(child)`` is called once the rule fires."""

    def __init__(
        self,
        config_ttl: float,
        on_due: Callable[[Child], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        tick: float = TTL_TICK,
    ) -> None:
        self._config_ttl = config_ttl
        self._on_due = on_due
        self._clock = clock
        self._tick = tick
        self._override: float | None = None  # keep_alive(); cleared when leaving READY
        self._monitor: asyncio.Task[None] | None = None
        self.in_flight = 0
        self.last_use: float | None = None

    @property
    def ttl(self) -> float:
        """The TTL in force: the config's ``ttl``, or this run's ``keep_alive``."""
        return self._config_ttl if self._override is None else self._override

    # --- request accounting (synchronous, from the forwarder) --------------------------

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Count one request in flight; its end is the model's last use."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.last_use = self._clock()

    def touch(self) -> None:
        """Idle time counts from now (readiness, §9.7)."""
        self.last_use = self._clock()

    # --- the override --------------------------------------------------------------------

    def set_override(self, ttl: float | None) -> None:
        """Use ``ttl`` for this run: 0 = unload as soon as idle, inf = never, None = config."""
        if ttl is not None:
            # ttl_expired treats 0 as "never": the smallest positive TTL means "now".
            ttl = IMMEDIATE_TTL if ttl == 0 else 0.0 if math.isinf(ttl) else ttl
        self._override = ttl

    def end_run(self) -> None:
        """The process left READY: a ``keep_alive`` lasts one run."""
        self._override = None

    # --- the monitor ---------------------------------------------------------------------

    def expired(self) -> bool:
        """The rule, now: idle longer than the TTL with nothing in flight."""
        last_use = self.last_use if self.last_use is not None else self._clock()
        return ttl_expired(self._clock(), last_use, self.in_flight, self.ttl)

    @property
    def armed(self) -> bool:
        """Whether a monitor was started and not disarmed since (tests: ttl 0 arms none)."""
        return self._monitor is not None

    def arm(self, child: Child | None) -> None:
        """Start watching ``child``'s run (nothing without a TTL or a child)."""
        if self.ttl > 0 and child is not None:
            self._monitor = asyncio.create_task(self._watch(child))

    async def disarm(self) -> None:
        """Stop the monitor and wait until it has ended."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor

    def cancel(self) -> None:
        """Synchronous last resort (the controller is ending): cancel the monitor."""
        if self._monitor is not None:
            self._monitor.cancel()

    async def _watch(self, child: Child) -> None:
        """Tick until the TTL rule says "unload", then hand the decision to the controller."""
        while not self.expired():
            await asyncio.sleep(self._tick)
        self._on_due(child)
