"""``GET /api/processes``: CPU, memory and GPU memory of every running local model.

For each local model that has a process (starting, ready or stopping), its
whole process tree is measured (:mod:`modelswap.observability.footprint`):
resident memory, CPU percent since the previous call of this route, GPU memory
per NVML's per-process accounting, and how many descendants it has.

One :class:`ProcessMeter` per app keeps what must live between calls — the
CPU readings of the last call, and the GPU source (opened on the first call,
through the same ``app[GPU_OPENER]`` the performance monitor uses, and closed
with the app). No GPU, or a driver that cannot tell per-process use, is
``gpu_memory_bytes: null``, never an error. Every OS and driver call runs in
a worker thread; calls are serialised so two clients cannot interleave their
CPU readings. See ``docs/api.md`` for the response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from modelswap.observability.footprint import (
    CpuRates,
    PsutilTreeReader,
    TreeReader,
    measure_tree,
)
from modelswap.observability.gpu import GpuOpener, GpuSource, open_gpu_source
from modelswap.server.context import SERVER_STATE
from modelswap.server.metrics_routes import GPU_OPENER

__all__ = ["PROCESS_METER", "ProcessMeter", "RunningProcess", "add_processes_routes"]

log = logging.getLogger("modelswap.server.processes")


@dataclass(frozen=True, slots=True)
class RunningProcess:
    """A local model with a process, as listed when the request arrived."""

    model: str
    state: str
    pid: int


class ProcessMeter:
    """Measures running models' process trees; one per app (module doc)."""

    def __init__(
        self,
        *,
        reader: TreeReader | None = None,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader or PsutilTreeReader()
        self._wall = wall
        self._clock = clock
        self._rates = CpuRates()
        self._lock = asyncio.Lock()
        self._gpu: GpuSource | None = None
        self._gpu_opened = False

    def __repr__(self) -> str:
        return f"<ProcessMeter gpu={self._gpu is not None} opened={self._gpu_opened}>"

    async def measure(
        self, running: Sequence[RunningProcess], opener: GpuOpener = open_gpu_source
    ) -> list[dict[str, Any]]:
        """One row per process still alive, in ``running``'s order."""
        async with self._lock:
            if not self._gpu_opened:
                self._gpu_opened = True
                self._gpu = await asyncio.to_thread(_open_quietly, opener)
            return await asyncio.to_thread(self._measure_all, running)

    async def close(self) -> None:
        async with self._lock:
            gpu, self._gpu = self._gpu, None
            if gpu is not None:
                await asyncio.to_thread(gpu.close)

    def _measure_all(self, running: Sequence[RunningProcess]) -> list[dict[str, Any]]:
        gpu_memory = None
        if self._gpu is not None:
            try:
                gpu_memory = self._gpu.process_memory()
            except Exception as error:  # the driver went away: report memory as unknown
                log.debug("per-process GPU memory unavailable: %s", error)
        rows = []
        for proc in running:
            footprint = measure_tree(proc.pid, gpu_memory=gpu_memory, reader=self._reader)
            if footprint is None:  # exited since it was listed
                continue
            cpu = self._rates.rate(proc.pid, footprint.cpu_seconds, self._clock())
            rows.append(
                {
                    "model": proc.model,
                    "state": proc.state,
                    "pid": proc.pid,
                    "uptime_s": round(max(0.0, self._wall() - footprint.started), 3),
                    "cpu_percent": round(cpu, 2),
                    "rss_bytes": footprint.rss_bytes,
                    "gpu_memory_bytes": footprint.gpu_bytes,
                    "children": footprint.children,
                }
            )
        self._rates.keep_only(proc.pid for proc in running)
        return rows


def _open_quietly(opener: GpuOpener) -> GpuSource | None:
    try:
        return opener()
    except Exception as error:
        log.info("per-process GPU memory not available: %s", error)
        return None


PROCESS_METER: web.AppKey[ProcessMeter] = web.AppKey("process_meter", ProcessMeter)


async def _processes(request: web.Request) -> web.Response:
    router = request.app[SERVER_STATE].router
    running = [
        RunningProcess(model, process.state.value, pid)
        for model, process in sorted(router.processes.items())
        if (pid := process.pid) is not None
    ]
    opener = request.app.get(GPU_OPENER, open_gpu_source)
    rows = await request.app[PROCESS_METER].measure(running, opener)
    return web.json_response({"processes": rows})


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[PROCESS_METER].close()


def add_processes_routes(app: web.Application) -> None:
    """Register ``GET /api/processes`` and its meter (closed with the app)."""
    app[PROCESS_METER] = ProcessMeter()
    app.router.add_get("/api/processes", _processes)
    app.cleanup_ctx.append(_lifecycle)
