"""Memory-aware eviction through the real app, real fake upstreams and an injected memory source.

The memory source is the only thing replaced (the GPU driver is not on this
machine): it reports a detected ``vram`` budget and, per model, what the
model's process tree "uses". Ground truth for what ran is the fakes' own event
logs; waits are on the watcher's measurements and the router's notifications.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from modelswap.app import ROUTER_KEY, build_app
from modelswap.config import load_config_text
from modelswap.errors import ConfigError
from modelswap.server.events import EVENTS_FEED
from modelswap.server.footprints_setup import FOOTPRINTS
from modelswap.testing.fake_process import fake_upstream_env
from tests.integration.proxy_harness import serving
from tests.integration.router_harness import DEADLINE, Fake
from tests.integration.server_harness import fake, fakes_gone, post_chat

pytestmark = [pytest.mark.timeout(90)]

GiB = 1 << 30


class FakeMemory:
    """A :class:`~modelswap.process.memory_source.MemorySource` answering from dicts."""

    def __init__(self, detected: dict[str, int], sizes: dict[str, dict[str, int]]) -> None:
        self._detected = detected
        self.sizes = sizes
        self.measured: list[tuple[str, int]] = []
        self.threads: set[str] = set()
        self.closed = False

    def detected(self) -> dict[str, int]:
        return dict(self._detected)

    def measure(self, model_id: str, pid: int) -> dict[str, int] | None:
        self.threads.add(threading.current_thread().name)
        self.measured.append((model_id, pid))
        return dict(self.sizes.get(model_id, {}))

    def close(self) -> None:
        self.closed = True


def config(fakes: list[Fake], store: Path, budget: str = "") -> str:
    models = "\n".join(f.yaml() + "\n    resources: {vram: 10GiB}" for f in fakes)
    return (
        f"healthCheckTimeout: 15\nstore:\n  path: {store}\nmodels:\n{models}\n"
        f"routing:\n  resources: {{{budget}}}\n"
    )


@asynccontextmanager
async def serve(text: str, memory: FakeMemory, fakes: list[Fake]) -> AsyncIterator[Any]:
    loaded = load_config_text(text, "t.yaml", environ={}).config
    app = build_app(loaded, base_env=fake_upstream_env(), memory_opener=lambda: memory)
    counter = Measurements()
    app[FOOTPRINTS].on_measured(counter)
    app[MEASUREMENTS] = counter
    async with serving(app) as url:
        yield app, url
    assert memory.closed
    await fakes_gone(fakes)


class Measurements:
    """Counts the watcher's measurements per model (registered before anything starts)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._changed = asyncio.Event()

    def __call__(self, model_id: str, _sizes: dict[str, int]) -> None:
        self.counts[model_id] = self.counts.get(model_id, 0) + 1
        self._changed.set()

    async def wait(self, app: Any, model: str, count: int = 1) -> None:
        async with asyncio.timeout(DEADLINE):
            while self.counts.get(model, 0) < count:
                self._changed.clear()
                await self._changed.wait()
        await app[ROUTER_KEY].wait_idle()  # the report has reached the scheduler


MEASUREMENTS: web.AppKey[Measurements] = web.AppKey("measurements", Measurements)


async def measured(app: Any, model: str, count: int = 1) -> None:
    """Wait until ``model`` has been measured ``count`` times (the watcher's own signal)."""
    await app[MEASUREMENTS].wait(app, model, count)


async def test_models_share_the_detected_budget_and_measured_memory_evicts(
    tmp_path: Path,
) -> None:
    fakes = [fake(tmp_path, m) for m in ("a", "b", "c")]
    # No vram budget in the config: the detected (NVML) total, 32 GiB, is the budget.
    memory = FakeMemory({"vram": 32 * GiB, "vram:0": 32 * GiB}, {"b": {"vram": 9 * GiB}})
    text = config(fakes, tmp_path / "store.db")
    async with serve(text, memory, fakes) as (app, url):
        async with aiohttp.ClientSession(url) as session:
            await post_chat(session, "a")
            await measured(app, "a")
            await post_chat(session, "b")
            await measured(app, "b")
            # Not one at a time: a and b run side by side (30 of 32 GiB declared).
            assert {m: f.starts for m, f in zip("abc", fakes, strict=True)} == {
                "a": 1,
                "b": 1,
                "c": 0,
            }
            async with session.get("/running") as resp:
                running = {r["model"]: r for r in (await resp.json())["running"]}
            assert running["a"]["state"] == running["b"]["state"] == "ready"
            assert running["a"]["footprint"]["vram"] == 10 * GiB
            # a is measured bigger than it declared: 14 + 10 + 10 > 32.
            memory.sizes["a"] = {"vram": 14 * GiB, "ram": GiB}
            await app[FOOTPRINTS].measure("a")
            await app[ROUTER_KEY].wait_idle()
            async with session.get("/running") as resp:
                running = {r["model"]: r for r in (await resp.json())["running"]}
            assert running["a"]["footprint"] == {"ram": GiB, "vram": 14 * GiB, "vram:0": 0}
            status = {m["id"]: m for m in app[EVENTS_FEED].model_status()}
            assert status["a"]["footprint"]["vram"] == 14 * GiB
            async with session.get("/ollama/api/ps") as resp:
                loaded = {m["model"]: m for m in (await resp.json())["models"]}
            assert (loaded["a:latest"]["size"], loaded["a:latest"]["size_vram"]) == (
                15 * GiB,
                14 * GiB,
            )
            await post_chat(session, "b")  # b used last: a is the least recently used
            await post_chat(session, "c")
            stats = app[ROUTER_KEY].statistics()
            assert stats.state("a") == "stopped"
            assert stats.state("b") == stats.state("c") == "ready"
            async with session.get("/api/timeline") as resp:
                swaps = (await resp.json())["swaps"]
            assert [(w["model"], w["evict"], w["reason"]) for w in swaps] == [
                ("a", [], "group"),
                ("b", [], "group"),
                ("c", ["a"], "memory"),
            ]
        pids = {f.model_id: f.events("listening")[0]["pid"] for f in fakes}
        assert ("a", pids["a"]) in memory.measured and ("b", pids["b"]) in memory.measured
        assert "MainThread" not in memory.threads  # measured off the event loop

    # A restart with the same file-backed store remembers a's measured 14 GiB.
    memory2 = FakeMemory({"vram": 32 * GiB}, {})
    async with serve(text, memory2, fakes) as (app, _url):
        router = app[ROUTER_KEY]
        await router.wait_idle()
        assert router.statistics().scheduler.footprints["a"]["vram"] == 14 * GiB
        assert router.statistics().scheduler.footprints["b"]["vram"] == 10 * GiB


async def test_no_resources_keeps_llama_swap_default_group(tmp_path: Path) -> None:
    fakes = [fake(tmp_path, m) for m in ("a", "b")]
    opened: list[bool] = []

    def opener() -> FakeMemory:
        opened.append(True)
        return FakeMemory({}, {})

    models = "\n".join(f.yaml() for f in fakes)
    loaded = load_config_text(f"models:\n{models}\n", "t.yaml", environ={}).config
    app = build_app(loaded, base_env=fake_upstream_env(), memory_opener=opener)
    async with serving(app) as url, aiohttp.ClientSession(url) as session:
        await post_chat(session, "a")
        await post_chat(session, "b")  # the (default) group: b evicts a
        assert app[ROUTER_KEY].statistics().state("a") == "stopped"
        async with session.get("/running") as resp:
            assert [r for r in (await resp.json())["running"] if "footprint" in r] == []
    assert opened == []  # no resources configured: no memory source at all
    await fakes_gone(fakes)


def test_a_model_larger_than_the_detected_budget_is_a_config_error(tmp_path: Path) -> None:
    fakes = [fake(tmp_path, "a")]
    memory = FakeMemory({"vram": 8 * GiB}, {})
    loaded = load_config_text(config(fakes, tmp_path / "s.db"), "t.yaml", environ={}).config
    with pytest.raises(ConfigError, match='model "a" can never fit: it needs 10GiB of vram'):
        build_app(loaded, base_env=fake_upstream_env(), memory_opener=lambda: memory)
    assert memory.closed
