"""router.md §8.1 #4, #5, #7, #8: which graceful timeout an unload gives each model.

The fakes ignore SIGTERM, so each stop lasts exactly its grace period before the
SIGKILL: the time from a model's ``stopping`` to its ``stopped`` shows which
timeout was used. Only bounds that a wrong timeout would break are asserted
(a 1 s grace used where 3 s was due, or a 45 s grace where 1 s was due).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelswap.process import StateChange
from modelswap.router.runtime import LocalRouter
from tests.integration.router_harness import TOGETHER, Lab, serve, settled


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        await lab.close()


class StopClock:
    """When each model entered ``stopping`` and ``stopped`` (loop time)."""

    def __init__(self, router: LocalRouter) -> None:
        self.stopping: dict[str, float] = {}
        self.stopped: dict[str, float] = {}
        for process in router.processes.values():
            process.on_state_change(self._seen)

    def _seen(self, change: StateChange) -> None:
        now = asyncio.get_running_loop().time()
        if change.new.value == "stopping":
            self.stopping[change.model_id] = now
        elif change.new.value == "stopped" and change.model_id in self.stopping:
            self.stopped[change.model_id] = now

    def grace(self, model_id: str) -> float:
        return self.stopped[model_id] - self.stopping[model_id]


async def test_s81_4_unload_one_uses_its_configured_unload_timeout(lab: Lab) -> None:
    lab.model("a", settings={"unloadTimeout": 3}, ignore_sigterm=True)
    lab.model("c", settings={"unloadTimeout": 1}, ignore_sigterm=True)
    router, _ = lab.build(TOGETHER.format(members="a, c"))
    clock = StopClock(router)
    await asyncio.gather(serve(router, "a"), serve(router, "c"))
    await router.unload(["a"])
    assert clock.grace("a") >= 2.9  # its own 3 s, not c's 1 s
    assert "c" not in clock.stopping
    assert router.running_models() == {"c": "ready"}
    await settled(router)


async def test_s81_5_unload_all_uses_each_configured_timeout(lab: Lab) -> None:
    lab.model("a", settings={"unloadTimeout": 3}, ignore_sigterm=True)
    lab.model("c", settings={"unloadTimeout": 1}, ignore_sigterm=True)
    router, _ = lab.build(TOGETHER.format(members="a, c"))
    clock = StopClock(router)
    await asyncio.gather(serve(router, "a"), serve(router, "c"))
    await router.unload()
    assert clock.grace("a") >= 2.9
    assert 0.9 <= clock.grace("c") < 2.9
    assert clock.stopped["c"] <= clock.stopping["a"]  # smaller bucket first
    assert router.running_models() == {}
    await settled(router)


async def test_s81_7_same_timeout_bucket_stops_in_parallel(lab: Lab) -> None:
    lab.model("a", settings={"unloadTimeout": 1}, ignore_sigterm=True)
    lab.model("c", settings={"unloadTimeout": 1}, ignore_sigterm=True)
    router, _ = lab.build(TOGETHER.format(members="a, c"))
    clock = StopClock(router)
    await asyncio.gather(serve(router, "a"), serve(router, "c"))
    await router.unload()
    first_stopped = min(clock.stopped.values())
    assert all(started < first_stopped for started in clock.stopping.values())
    assert clock.grace("a") >= 0.9 and clock.grace("c") >= 0.9
    await settled(router)


async def test_s81_8_positive_timeout_overrides_the_config(lab: Lab) -> None:
    lab.model("a", settings={"unloadTimeout": 45}, ignore_sigterm=True)
    router, _ = lab.build()
    clock = StopClock(router)
    await serve(router, "a")
    await router.unload(["a"], timeout=1)
    assert 0.9 <= clock.grace("a") < 30  # 1 s, nowhere near the configured 45 s
    await settled(router)
