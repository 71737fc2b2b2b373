"""Memory-aware eviction across config reloads: the real app, fake upstreams, injected memory.

The config is a file the app reloads (``POST /api/config/reload``); the memory
source is the one of tests/integration/test_memory_routing.py (the GPU driver
is not on this machine). What ran is read from the fakes' own event logs and
the router's timeline; waits are on the reload's answer and the router.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelswap.app import ROUTER_KEY, build_app
from modelswap.router.runtime import LocalRouter
from modelswap.server.reload import ConfigSource
from modelswap.testing.fake_process import fake_upstream_env
from tests.integration.proxy_harness import serving
from tests.integration.router_harness import Fake
from tests.integration.server_harness import fake, fakes_gone, post_chat
from tests.integration.test_memory_routing import FakeMemory, GiB, config

pytestmark = [pytest.mark.timeout(90)]


@asynccontextmanager
async def reloadable(
    path: Path, text: str, memory: FakeMemory, fakes: list[Fake]
) -> AsyncIterator[tuple[Any, aiohttp.ClientSession]]:
    """Serve the config file at ``path``; every child gone and the source closed after."""
    path.write_text(text)
    source = ConfigSource(str(path), environ={})
    app = build_app(
        source.load().config,
        base_env=fake_upstream_env(),
        source=source,
        memory_opener=lambda: memory,
    )
    async with serving(app) as url, aiohttp.ClientSession(url) as session:
        yield app, session
    assert memory.closed
    await fakes_gone(fakes)


async def reload(session: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
    async with session.post("/api/config/reload") as resp:
        return resp.status, await resp.json()


def states(router: LocalRouter) -> dict[str, str]:
    stats = router.statistics()
    return {m: stats.state(m) for m in sorted(router.processes)}


async def test_a_new_budget_decides_the_next_swap(tmp_path: Path) -> None:
    fakes = [fake(tmp_path, m) for m in ("a", "b", "c")]  # each declares 10 GiB of vram
    store, path = tmp_path / "store.db", tmp_path / "config.yaml"
    memory = FakeMemory({}, {})
    async with reloadable(path, config(fakes, store, "vram: 16GiB"), memory, fakes) as (
        app,
        session,
    ):
        router = app[ROUTER_KEY]
        await post_chat(session, "a")
        await post_chat(session, "b")  # 20 > 16: b evicts a
        assert states(router) == {"a": "stopped", "b": "ready", "c": "stopped"}

        path.write_text(config(fakes, store, "vram: 32GiB"))
        status, body = await reload(session)
        assert status == 200, body
        assert body["summary"]["sections"] == ["routing.resources"]
        assert body["summary"]["unchanged"] == ["a", "b", "c"]  # no model restarts
        b_pid = router.processes["b"].pid
        await post_chat(session, "a")  # 20 <= 32: a starts beside b
        assert states(router) == {"a": "ready", "b": "ready", "c": "stopped"}
        assert router.processes["b"].pid == b_pid
        assert [f.starts for f in fakes] == [2, 1, 0]

        path.write_text(config(fakes, store, "vram: 16GiB"))
        status, body = await reload(session)
        assert status == 200, body
        # A reload stops nothing by itself: the new budget applies to the next swap.
        assert states(router) == {"a": "ready", "b": "ready", "c": "stopped"}
        await post_chat(session, "c")  # 10 + 20 > 16: both must go for c
        assert states(router) == {"a": "stopped", "b": "stopped", "c": "ready"}
        async with session.get("/api/timeline") as resp:
            swaps = (await resp.json())["swaps"]
        assert [(w["model"], w["evict"], w["reason"]) for w in swaps] == [
            ("a", [], "group"),
            ("b", ["a"], "memory"),
            ("a", [], "group"),
            ("c", ["a", "b"], "memory"),
        ]


async def test_a_reload_that_cannot_fit_the_detected_budget_changes_nothing(
    tmp_path: Path,
) -> None:
    fakes = [fake(tmp_path, m) for m in ("a", "b")]
    store, path = tmp_path / "store.db", tmp_path / "config.yaml"
    # No budget in the config: the detected 32 GiB (NVML at startup) is the budget.
    memory = FakeMemory({"vram": 32 * GiB}, {})
    text = config(fakes, store)
    async with reloadable(path, text, memory, fakes) as (app, session):
        router = app[ROUTER_KEY]
        await post_chat(session, "a")
        path.write_text(text.replace("resources: {vram: 10GiB}", "resources: {vram: 40GiB}", 1))
        status, body = await reload(session)
        assert status == 422, body
        assert body["error"]["code"] == "invalid_config"
        [problem] = body["error"]["problems"]
        assert problem["key"] == "models.a.resources"
        assert 'model "a" can never fit: it needs 40GiB of vram' in problem["message"]
        # Nothing changed: the old declaration still counts, and a and b still fit together.
        assert router.statistics().scheduler.footprints["a"]["vram"] == 10 * GiB
        await post_chat(session, "b")
        assert states(router) == {"a": "ready", "b": "ready"}


async def test_a_reload_can_turn_memory_routing_on(tmp_path: Path) -> None:
    fakes = [fake(tmp_path, m) for m in ("a", "b")]
    store, path = tmp_path / "store.db", tmp_path / "config.yaml"
    plain = (
        f"healthCheckTimeout: 15\nstore:\n  path: {store}\nmodels:\n"
        + "\n".join(f.yaml() for f in fakes)
        + "\n"
    )
    memory = FakeMemory({}, {})
    memory.closed = True  # never opened: no resources at startup
    async with reloadable(path, plain, memory, fakes) as (app, session):
        router = app[ROUTER_KEY]
        await post_chat(session, "a")
        await post_chat(session, "b")  # llama-swap's (default) group: one at a time
        assert states(router) == {"a": "stopped", "b": "ready"}
        path.write_text(config(fakes, store, "vram: 32GiB"))
        status, body = await reload(session)
        assert status == 200, body
        assert body["summary"]["updated"] == ["a", "b"]  # declared sizes: no restart
        assert any("memory routing was off at startup" in w for w in body["warnings"])
        await post_chat(session, "a")  # shared by the budget now: 20 <= 32
        assert states(router) == {"a": "ready", "b": "ready"}
