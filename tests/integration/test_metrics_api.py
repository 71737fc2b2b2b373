"""§21 over HTTP: ``/metrics``, ``/api/performance``, ``/api/version``, ``/api/hardware``.

The real app over real fake upstreams; the GPU is a hand-written source put in
through ``app[GPU_OPENER]`` (no driver needed). Nothing waits on time: the
monitor's first sample is taken before the app serves.
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

import modelswap
from modelswap.app import build_app
from modelswap.config import load_config_text
from modelswap.observability.performance import parse_rfc3339, rfc3339
from modelswap.server.metrics_routes import GPU_OPENER, METRICS
from modelswap.testing.fake_process import fake_upstream_env
from tests.fake_gpu import FakeGpu
from tests.integration.proxy_harness import serving
from tests.integration.router_harness import Fake
from tests.integration.server_harness import Server, config_text, fake, fakes_gone

pytestmark = [pytest.mark.timeout(60)]

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
MB = 1024 * 1024
Key = tuple[str, tuple[tuple[str, str], ...]]


@asynccontextmanager
async def serve(
    fakes: list[Fake], head: str = "", *, together: bool = True, gpu: FakeGpu | None = None
) -> AsyncIterator[Server]:
    """``build_app`` served on loopback, with ``gpu`` as its GPU source (default: none)."""
    text = config_text(fakes, head, together=together)
    app = build_app(
        load_config_text(text, "test.yaml", environ={}).config, base_env=fake_upstream_env()
    )
    app[GPU_OPENER] = lambda: gpu
    async with serving(app) as url:
        yield Server(url, app, {f.model_id: f for f in fakes})
    await fakes_gone(fakes)


async def chat(server: Server, model: str) -> None:
    async with (
        server.session() as s,
        s.post("/v1/chat/completions", json={"model": model, **CHAT}) as r,
    ):
        assert r.status == 200, await r.text()
        await r.read()


async def scrape(server: Server) -> tuple[str, dict[Key, float]]:
    """The raw exposition and its samples; parsing it is the format check."""
    async with server.session() as s, s.get("/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await r.text()
    parsed: dict[Key, float] = {}
    names = []
    for family in text_string_to_metric_families(text):
        names.append(family.name)
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert len(names) == len(set(names)), "a family written twice"
    return text, parsed


def key(name: str, /, **labels: str) -> Key:
    return (name, tuple(sorted(labels.items())))


async def get_json(server: Server, path: str) -> tuple[int, Any]:
    async with server.session() as s, s.get(path) as r:
        return r.status, await r.json()


async def test_metrics_count_swaps_as_upstream_starts_and_reexport_upstream_metrics(
    tmp_path: Path,
) -> None:
    fakes = [fake(tmp_path, "a", metrics=True), fake(tmp_path, "b")]
    async with serve(fakes) as server:
        _, parsed = await scrape(server)
        assert (
            parsed[key("llamaswap_memory_total_bytes")] == psutil.virtual_memory().total // MB * MB
        )
        assert key("llamaswap_cpu_util_percent", core="0") in parsed
        assert parsed[key("modelswap_swaps_total", model="a")] == 0
        assert parsed[key("modelswap_model_state", model="a", state="stopped")] == 1

        await chat(server, "a")
        await chat(server, "b")
        _, parsed = await scrape(server)
        for model in ("a", "b"):
            assert (
                parsed[key("modelswap_swaps_total", model=model)] == server.fakes[model].starts == 1
            )
            assert parsed[key("modelswap_model_state", model=model, state="ready")] == 1
            assert parsed[key("modelswap_inflight_requests", model=model)] == 0
        assert parsed[key("modelswap_queue_length")] == 0
        # a's own metrics, labelled; its own model label kept as exported_model.
        assert parsed[key("llamacpp:prompt_tokens_total", model="a")] == 10
        assert parsed[key("fake_completed_requests_total", exported_model="a", model="a")] == 1
        # b has none (its /metrics is a JSON echo): skipped, and remembered for this start.
        assert not [
            k for k in parsed if ("model", "b") in k[1] and not k[0].startswith("modelswap")
        ]
        scraper = server.app[METRICS].scraper
        assert scraper is not None
        assert scraper.without_metrics == {"b": 1}

        await server.unload_all()
        await chat(server, "a")
        _, parsed = await scrape(server)
        assert parsed[key("modelswap_swaps_total", model="a")] == server.fakes["a"].starts == 2
        assert (
            parsed[key("llamacpp:prompt_tokens_total", model="a")] == 10
        )  # the new process's count
        assert not [
            k for k in parsed if k[0] == "llamacpp:prompt_tokens_total" and ("model", "b") in k[1]
        ]


async def test_evictions_and_load_durations_come_from_router_facts(tmp_path: Path) -> None:
    fakes = [fake(tmp_path, "a"), fake(tmp_path, "b")]
    async with serve(fakes, together=False) as server:
        await chat(server, "a")
        await chat(server, "b")  # the group swaps: a is stopped first
        _, parsed = await scrape(server)
        assert parsed[key("modelswap_evictions_total", model="a", reason="group")] == 1
        assert key("modelswap_evictions_total", model="b", reason="group") not in parsed
        for model in ("a", "b"):
            assert parsed[key("modelswap_load_duration_seconds_count", model=model)] == 1
            assert parsed[key("modelswap_load_duration_seconds_sum", model=model)] > 0
        assert parsed[key("modelswap_model_state", model="a", state="stopped")] == 1


async def test_api_performance_history_and_after(tmp_path: Path) -> None:
    gpu = FakeGpu()
    # A period of an hour: the startup sample is the only one while the test runs.
    async with serve([fake(tmp_path, "a")], "performance:\n  every: 1h\n", gpu=gpu) as server:
        status, body = await get_json(server, "/api/performance")
        assert status == 200
        assert body["enabled"] is True
        assert len(body["sys_stats"]) == 1  # taken at startup
        assert len(body["gpu_stats"]) == 2
        last = body["sys_stats"][-1]
        assert last["mem_total_mb"] == psutil.virtual_memory().total // MB
        assert len(last["cpu_util_per_core"]) == psutil.cpu_count()
        assert {g["name"] for g in body["gpu_stats"]} == {"Fake GPU 0", "Fake GPU 1"}
        newest = parse_rfc3339(last["timestamp"])

        status, body = await get_json(server, f"/api/performance?after={rfc3339(newest)}")
        assert (status, body) == (200, {"enabled": True, "sys_stats": [], "gpu_stats": []})
        earlier = rfc3339(newest - timedelta(microseconds=1))
        status, body = await get_json(server, f"/api/performance?after={earlier}")
        assert status == 200
        assert [s["timestamp"] for s in body["sys_stats"]] == [last["timestamp"]]
        assert len(body["gpu_stats"]) == 2

        status, body = await get_json(server, "/api/performance?after=yesterday")
        assert status == 400
        assert body["error"]["message"] == "invalid 'after' timestamp, use RFC3339 format"
    assert gpu.closed
    assert threading.main_thread().name not in gpu.threads


async def test_gpu_gauges_and_hardware_from_the_gpu_source(tmp_path: Path) -> None:
    gpu = FakeGpu()
    async with serve([fake(tmp_path, "a")], gpu=gpu) as server:
        _, parsed = await scrape(server)
        labels = {"id": "1", "name": "Fake GPU 1", "uuid": "GPU-fake-1"}
        assert parsed[key("llamaswap_gpu_temperature_celsius", **labels)] == 61
        assert parsed[key("llamaswap_gpu_memory_total_bytes", **labels)] == 24576 * MB

        status, hw = await get_json(server, "/api/hardware")
        assert status == 200
        assert hw["schema_version"] == 1
        assert hw["capture"]["scope"] == "inference_host"
        assert hw["memory"] == {"capacity_bytes": psutil.virtual_memory().total}
        assert hw["cpu"]["logical_thread_count"] == psutil.cpu_count()
        assert parse_rfc3339(hw["captured_at"])
        assert [
            (a["index"], a["model"], a["memory"]["capacity_bytes"]) for a in hw["accelerators"]
        ] == [
            (0, "Fake GPU 0", 24576 * MB),
            (1, "Fake GPU 1", 24576 * MB),
        ]
        assert {"architecture", "operating_system", "environment"} <= set(hw)


async def test_hardware_detection_failure_is_503(tmp_path: Path) -> None:
    async with serve([fake(tmp_path, "a")], gpu=FakeGpu(fail_devices=True)) as server:
        status, body = await get_json(server, "/api/hardware")
    assert status == 503
    assert body["error"]["message"] == "hardware detection unavailable"


async def test_monitor_disabled(tmp_path: Path) -> None:
    gpu = FakeGpu()
    head = "performance:\n  disabled: true\n"
    async with serve([fake(tmp_path, "a")], head, gpu=gpu) as server:
        assert await get_json(server, "/api/performance") == (503, {"enabled": False})
        # modelswap's own families are still served (a documented difference).
        text, parsed = await scrape(server)
        assert "llamaswap_" not in text
        assert parsed[key("modelswap_queue_length")] == 0
        assert parsed[key("modelswap_swaps_total", model="a")] == 0
        assert gpu.closed and gpu.reads == 0  # only the hardware inventory was read
        status, hw = await get_json(server, "/api/hardware")
        assert status == 200
        assert len(hw["accelerators"]) == 2


async def test_api_version(tmp_path: Path) -> None:
    async with serve([fake(tmp_path, "a")]) as server:
        status, body = await get_json(server, "/api/version")
    assert status == 200
    assert set(body) == {"version", "commit", "build_date"}
    assert body["version"] == modelswap.__version__
    assert body["commit"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", body["commit"])
