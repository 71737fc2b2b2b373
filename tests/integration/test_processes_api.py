"""``GET /api/processes`` over the real app and real fake upstreams.

Ground truth: the fakes' event logs (the pid that is listening), psutil's view
of their process trees (the grandchild ``--fork-grandchild`` leaves), and a
fake GPU source whose per-process answer the test sets once the pids are known.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from modelswap.app import build_app
from modelswap.config import load_config_text
from modelswap.server.metrics_routes import GPU_OPENER
from modelswap.testing.fake_process import fake_upstream_env
from tests.fake_gpu import FakeGpu
from tests.integration.proxy_harness import serving
from tests.integration.router_harness import DEADLINE, Fake
from tests.integration.server_harness import Server, config_text, fake, fakes_gone, post_chat

pytestmark = [pytest.mark.timeout(60)]

MB = 1024 * 1024


@asynccontextmanager
async def serve(fakes: list[Fake], gpu: FakeGpu | None) -> AsyncIterator[Server]:
    text = config_text(fakes)
    app = build_app(
        load_config_text(text, "t.yaml", environ={}).config, base_env=fake_upstream_env()
    )
    app[GPU_OPENER] = lambda: gpu
    async with serving(app) as url:
        yield Server(url, app, {f.model_id: f for f in fakes})
    await fakes_gone(fakes)


async def processes(session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    async with session.get("/api/processes") as resp:
        assert resp.status == 200, await resp.text()
        rows: list[dict[str, Any]] = (await resp.json())["processes"]
        return rows


async def test_running_models_with_their_trees(tmp_path: Path) -> None:
    fakes = [fake(tmp_path, "a", fork_grandchild=True), fake(tmp_path, "b")]
    async with serve(fakes, gpu=None) as server, server.session() as session:
        assert await processes(session) == []  # nothing loaded yet
        await post_chat(session, "a")
        await post_chat(session, "b")
        pid_a = fakes[0].events("listening")[-1]["pid"]
        pid_b = fakes[1].events("listening")[-1]["pid"]
        grandchildren = psutil.Process(pid_a).children(recursive=True)

        first = await processes(session)
        assert [(p["model"], p["state"], p["pid"]) for p in first] == [
            ("a", "ready", pid_a),
            ("b", "ready", pid_b),
        ]
        a, b = first
        assert a["children"] == len(grandchildren) >= 1 and b["children"] == 0
        own_rss = psutil.Process(pid_b).memory_info().rss
        assert 0.5 * own_rss <= b["rss_bytes"] <= 2 * own_rss
        assert a["rss_bytes"] > psutil.Process(pid_a).memory_info().rss  # + the grandchild
        assert all(p["cpu_percent"] == 0.0 for p in first)  # the first reading of each pid
        assert all(0 < p["uptime_s"] < DEADLINE * 3 for p in first)
        assert all(p["gpu_memory_bytes"] is None for p in first)  # no GPU: null, no error

        for _ in range(100):  # work for a's server between two readings
            await post_chat(session, "a")
        second = await processes(session)
        assert second[0]["cpu_percent"] > 0.0
        assert second[0]["uptime_s"] >= a["uptime_s"]

        await server.unload_all()
        assert await processes(session) == []


async def test_gpu_memory_per_tree_from_the_gpu_source(tmp_path: Path) -> None:
    gpu = FakeGpu()
    fakes = [fake(tmp_path, "a", fork_grandchild=True), fake(tmp_path, "b")]
    async with serve(fakes, gpu=gpu) as server, server.session() as session:
        await post_chat(session, "a")
        await post_chat(session, "b")
        pid_a = fakes[0].events("listening")[-1]["pid"]
        (grandchild,) = psutil.Process(pid_a).children(recursive=True)
        gpu.processes = {pid_a: 5 * MB, grandchild.pid: 7 * MB, 1: 99 * MB}
        rows = {p["model"]: p for p in await processes(session)}
        assert rows["a"]["gpu_memory_bytes"] == 12 * MB  # the whole tree, nobody else's
        assert rows["b"]["gpu_memory_bytes"] == 0  # a GPU, but b uses none of it
        assert threading.main_thread().name not in gpu.threads  # the driver: off the loop
    assert gpu.closed
