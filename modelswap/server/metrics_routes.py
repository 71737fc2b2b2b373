"""``/metrics``, ``/api/performance``, ``/api/version`` and ``/api/hardware`` (server spec §21).

:func:`setup_metrics` builds the app's :class:`PrometheusMetrics` under
:data:`METRICS` (the router's facts feed it from here; finished requests reach
it through the recorder's ``metrics`` sink) and one cleanup context that, on
startup, opens the GPU source, captures the hardware snapshot and the version,
and starts the performance monitor — its first sample is taken before the app
serves, so ``/metrics`` has data at once.
Everything that may block (NVML, file reads) runs in worker threads.

With ``performance.disabled`` there is no monitor: ``/api/performance`` is 503
``{"enabled":false}`` as in llama-swap, but ``/metrics`` still answers 200 with
modelswap's own families and the upstreams' (only the ``llamaswap_*`` host
and GPU gauges are missing). llama-swap answers 503 there; modelswap's request
and swap metrics do not depend on the host sampler, and a scrape that fails
would lose them too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from yarl import URL

from modelswap.config import Config, PerformanceConfig
from modelswap.errors import ClientError, ServiceUnavailableError
from modelswap.observability.gpu import GpuOpener, open_gpu_source
from modelswap.observability.hardware import capture_hardware
from modelswap.observability.performance import (
    PerformanceMonitor,
    gpu_sample_json,
    parse_rfc3339,
    sys_sample_json,
    utc_now,
)
from modelswap.observability.prometheus import CONTENT_TYPE, PrometheusMetrics
from modelswap.observability.upstream_metrics import ScrapeTarget, UpstreamScraper
from modelswap.observability.version import UNKNOWN, version_info
from modelswap.process import ProcessState
from modelswap.process.spec import join_url
from modelswap.router.runtime import LocalRouter

log = logging.getLogger("modelswap.metrics")

BAD_AFTER = "invalid 'after' timestamp, use RFC3339 format"
NO_HARDWARE = "hardware detection unavailable"


@dataclass(slots=True)
class HostInfo:
    """What the startup learned about the host (filled in by the cleanup context)."""

    performance: PerformanceConfig
    monitor: PerformanceMonitor | None = None
    hardware: dict[str, Any] | None = None
    version: dict[str, str] = field(
        default_factory=lambda: {"version": UNKNOWN, "commit": UNKNOWN, "build_date": UNKNOWN}
    )


METRICS: web.AppKey[PrometheusMetrics] = web.AppKey("metrics", PrometheusMetrics)
"""The app's metrics: ``observe(record)`` per finished request, ``on_fact(fact)`` per fact."""
HOST_INFO: web.AppKey[HostInfo] = web.AppKey("host_info", HostInfo)
GPU_OPENER: web.AppKey[GpuOpener] = web.AppKey("gpu_opener")
"""Optional: what opens the GPU source at startup (default NVML); tests set a fake."""


def scrape_targets(router: LocalRouter) -> list[ScrapeTarget]:
    """Every ready local model's ``<proxy>/metrics``, tagged with its process start count."""
    targets = []
    for model, process in router.processes.items():
        stats = process.statistics()
        if stats.state is not ProcessState.READY:
            continue
        try:
            base = URL(process.base_url())
        except (ServiceUnavailableError, ValueError):
            continue
        targets.append(ScrapeTarget(model, str(join_url(base, "/metrics")), stats.starts))
    return targets


def setup_metrics(app: web.Application, config: Config, router: LocalRouter) -> PrometheusMetrics:
    """Create ``app[METRICS]`` and ``app[HOST_INFO]``; start and stop them with the app."""
    scraper = UpstreamScraper(lambda: scrape_targets(router))
    metrics = PrometheusMetrics(router.statistics, scraper=scraper)
    app[METRICS] = metrics
    router.subscribe_facts(metrics.on_fact)
    app[HOST_INFO] = HostInfo(config.performance)
    app.cleanup_ctx.append(_lifecycle)
    return metrics


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    host = app[HOST_INFO]
    metrics = app[METRICS]
    opener = app.get(GPU_OPENER, open_gpu_source)
    gpu = await asyncio.to_thread(opener)
    try:
        devices = await asyncio.to_thread(gpu.devices) if gpu is not None else []
        host.hardware = await asyncio.to_thread(capture_hardware, devices, utc_now())
    except Exception:
        log.warning("hardware detection failed", exc_info=True)
    host.version = await asyncio.to_thread(version_info)
    monitor = None
    if host.performance.disabled:
        if gpu is not None:
            await asyncio.to_thread(gpu.close)
    else:
        monitor = PerformanceMonitor(host.performance.every, gpu=gpu)
        await monitor.start()
        host.monitor = metrics.monitor = monitor
    try:
        yield
    finally:
        if monitor is not None:
            await monitor.stop()
        await metrics.close()


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _performance(request: web.Request) -> web.Response:
    monitor = request.app[HOST_INFO].monitor
    if monitor is None:
        return web.json_response({"enabled": False}, status=503)
    raw_after = request.query.get("after", "")
    after = None
    if raw_after:
        try:
            after = parse_rfc3339(raw_after)
        except ValueError:
            raise ClientError(BAD_AFTER) from None
    sys_samples, gpu_samples = monitor.history(after)
    # As llama-swap's JSON: an empty history is null, an empty filtered one is [].
    empty: list[Any] | None = None if after is None else []
    return web.json_response(
        {
            "enabled": True,
            "sys_stats": [sys_sample_json(s) for s in sys_samples] if sys_samples else empty,
            "gpu_stats": [gpu_sample_json(g) for g in gpu_samples] if gpu_samples else empty,
        }
    )


async def _version(request: web.Request) -> web.Response:
    return web.json_response(request.app[HOST_INFO].version)


async def _hardware(request: web.Request) -> web.Response:
    snapshot = request.app[HOST_INFO].hardware
    if snapshot is None:
        raise ServiceUnavailableError(NO_HARDWARE)
    return web.json_response(snapshot)


def add_metrics_routes(app: web.Application) -> None:
    """Register the §21 routes; they read what :func:`setup_metrics` put on the app."""
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/api/performance", _performance)
    app.router.add_get("/api/version", _version)
    app.router.add_get("/api/hardware", _hardware)
