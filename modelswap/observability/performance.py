"""The performance monitor (server spec §21): host and GPU samples of the last hour.

One :class:`PerformanceMonitor` per app. It takes a sample when started (so
``/metrics`` and ``/api/performance`` have data at once) and then every
``performance.every`` seconds, and keeps the samples of the last hour for
``GET /api/performance`` and the ``llamaswap_*`` gauges of ``/metrics``.

Sampling never blocks the event loop: the host figures come from psutil reads
of ``/proc`` that take microseconds, and CPU utilisation is computed from two
``cpu_times`` snapshots (our own, not psutil's process-global
``cpu_percent`` state, which several apps in one process would share);
the GPU source, which may block in the driver, runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import psutil

from modelswap.observability.gpu import MB, GpuSample, GpuSource

log = logging.getLogger("modelswap.performance")

RETENTION = 3600.0
"""Seconds of samples kept (llama-swap keeps the last hour)."""


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp (as Go's ``time.RFC3339`` parses it); ValueError otherwise.

    Stricter than :meth:`datetime.fromisoformat`, which also takes bare dates
    and timestamps without an offset.
    """
    upper = text.upper()
    if not _RFC3339.fullmatch(upper):
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    return datetime.fromisoformat(upper)


def rfc3339(timestamp: datetime) -> str:
    """``2024-05-01T12:00:00.123456Z`` (UTC, as Go's RFC3339Nano would write it)."""
    return timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class NetIo:
    name: str
    bytes_recv: int
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class SysSample:
    """The host at one poll (server spec §21); MB values are whole mebibytes.

    ``mem_free_mb`` is what psutil calls *available* (free plus reclaimable
    cache): the memory a new model could actually get.
    """

    timestamp: datetime
    cpu_util_per_core: tuple[float, ...]
    mem_total_mb: int
    mem_used_mb: int
    mem_free_mb: int
    swap_total_mb: int
    swap_used_mb: int
    load_avg_1: float
    load_avg_5: float
    load_avg_15: float
    net_io: tuple[NetIo, ...]


def sys_sample_json(sample: SysSample) -> dict[str, Any]:
    return {
        "timestamp": rfc3339(sample.timestamp),
        "cpu_util_per_core": list(sample.cpu_util_per_core),
        "mem_total_mb": sample.mem_total_mb,
        "mem_used_mb": sample.mem_used_mb,
        "mem_free_mb": sample.mem_free_mb,
        "swap_total_mb": sample.swap_total_mb,
        "swap_used_mb": sample.swap_used_mb,
        "load_avg_1": sample.load_avg_1,
        "load_avg_5": sample.load_avg_5,
        "load_avg_15": sample.load_avg_15,
        "net_io": [
            {"name": n.name, "bytes_recv": n.bytes_recv, "bytes_sent": n.bytes_sent}
            for n in sample.net_io
        ],
    }


def gpu_sample_json(sample: GpuSample) -> dict[str, Any]:
    return {
        "timestamp": rfc3339(sample.timestamp),
        "id": sample.id,
        "name": sample.name,
        "uuid": sample.uuid,
        "temp_c": sample.temp_c,
        "vram_temp_c": sample.vram_temp_c,
        "gpu_util_pct": sample.gpu_util_pct,
        "mem_util_pct": sample.mem_util_pct,
        "mem_used_mb": sample.mem_used_mb,
        "mem_total_mb": sample.mem_total_mb,
        "fan_speed_pct": sample.fan_speed_pct,
        "power_draw_w": sample.power_draw_w,
    }


class CpuTimes(NamedTuple):
    """One core's counters reduced to what utilisation needs (seconds)."""

    busy: float
    total: float


def cpu_times() -> list[CpuTimes]:
    """Per-core busy/total seconds; idle and iowait count as not busy (as in psutil)."""
    cores = []
    for t in psutil.cpu_times(percpu=True):
        # On Linux guest time is already inside user/nice; don't count it twice.
        total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        idle = t.idle + getattr(t, "iowait", 0.0)
        cores.append(CpuTimes(total - idle, total))
    return cores


def cpu_percents(before: Sequence[CpuTimes], after: Sequence[CpuTimes]) -> tuple[float, ...]:
    """Per-core utilisation (0–100) between two snapshots; a core with no elapsed time is 0."""
    result = []
    for old, new in zip(before, after, strict=False):
        elapsed = new.total - old.total
        busy = new.busy - old.busy
        pct = 0.0 if elapsed <= 0 else min(100.0, max(0.0, busy / elapsed * 100.0))
        result.append(round(pct, 2))
    return tuple(result)


def _is_loopback(name: str) -> bool:
    return name == "lo" or name.startswith("lo0") or name.lower().startswith("loopback")


class SysReader:
    """Reads one :class:`SysSample`; remembers the previous CPU snapshot for utilisation.

    Loopback interfaces are left out of ``net_io``: our own proxying to local
    upstreams runs over them and would double every byte a client moved.
    """

    def __init__(self) -> None:
        self._cpu = cpu_times()

    def __call__(self, timestamp: datetime) -> SysSample:
        now_cpu = cpu_times()
        per_core = cpu_percents(self._cpu, now_cpu)
        self._cpu = now_cpu
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        load1, load5, load15 = psutil.getloadavg()
        nics = psutil.net_io_counters(pernic=True)
        return SysSample(
            timestamp=timestamp,
            cpu_util_per_core=per_core,
            mem_total_mb=memory.total // MB,
            mem_used_mb=memory.used // MB,
            mem_free_mb=memory.available // MB,
            swap_total_mb=swap.total // MB,
            swap_used_mb=swap.used // MB,
            load_avg_1=round(load1, 2),
            load_avg_5=round(load5, 2),
            load_avg_15=round(load15, 2),
            net_io=tuple(
                NetIo(name, io.bytes_recv, io.bytes_sent)
                for name, io in sorted(nics.items())
                if not _is_loopback(name)
            ),
        )


SysRead = Callable[[datetime], SysSample]


class PerformanceMonitor:
    """Samples the host (and GPUs, when a :class:`GpuSource` is given) every ``every`` s.

    The monitor owns ``gpu`` from construction on and closes it in
    :meth:`stop`. ``read_sys`` and ``wall`` are the seams tests use instead of
    psutil and the clock.
    """

    def __init__(
        self,
        every: float,
        *,
        gpu: GpuSource | None = None,
        read_sys: SysRead | None = None,
        wall: Callable[[], datetime] = utc_now,
        retention: float = RETENTION,
    ) -> None:
        self.every = every
        self._gpu = gpu
        self._read_sys = read_sys if read_sys is not None else SysReader()
        self._wall = wall
        self._retention = timedelta(seconds=retention)
        self._sys: deque[SysSample] = deque()
        self._gpus: deque[GpuSample] = deque()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def __repr__(self) -> str:
        running = self._task is not None and not self._task.done()
        return (
            f"<PerformanceMonitor every={self.every}s sys={len(self._sys)} "
            f"gpu={len(self._gpus)} gpu_source={self._gpu is not None} running={running}>"
        )

    @property
    def has_gpu(self) -> bool:
        return self._gpu is not None

    async def start(self) -> None:
        """Take the first sample now, then keep sampling in a task owned by the monitor."""
        await self._sample_logged()
        self._task = asyncio.create_task(self._run(), name="performance-monitor")

    async def stop(self) -> None:
        """Stop sampling and release the GPU source (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        gpu, self._gpu = self._gpu, None
        if gpu is not None:
            await asyncio.shield(asyncio.to_thread(gpu.close))

    async def sample_now(self) -> None:
        """Take one sample of the host and of every GPU, and drop what is over an hour old."""
        timestamp = self._wall()
        self._sys.append(self._read_sys(timestamp))
        if self._gpu is not None:
            self._gpus.extend(await asyncio.to_thread(self._gpu.read, timestamp))
        self._prune(timestamp)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self._sample_logged()

    async def _sample_logged(self) -> None:
        try:
            await self.sample_now()
        except Exception:
            self.failures += 1
            if self.failures == 1:  # a broken sensor would otherwise log every period
                log.exception("performance sample failed")

    def _prune(self, now: datetime) -> None:
        cutoff = now - self._retention
        while self._sys and self._sys[0].timestamp <= cutoff:
            self._sys.popleft()
        while self._gpus and self._gpus[0].timestamp <= cutoff:
            self._gpus.popleft()

    # --- reading ---------------------------------------------------------------------

    def history(self, after: datetime | None = None) -> tuple[list[SysSample], list[GpuSample]]:
        """Samples oldest first; with ``after``, only those strictly newer."""
        if after is None:
            return list(self._sys), list(self._gpus)
        return (
            [s for s in self._sys if s.timestamp > after],
            [g for g in self._gpus if g.timestamp > after],
        )

    def latest_sys(self) -> SysSample | None:
        return self._sys[-1] if self._sys else None

    def latest_gpus(self) -> list[GpuSample]:
        """The newest sample of each GPU, sorted by id."""
        latest: dict[int, GpuSample] = {}
        for sample in self._gpus:
            previous = latest.get(sample.id)
            if previous is None or sample.timestamp >= previous.timestamp:
                latest[sample.id] = sample
        return [latest[i] for i in sorted(latest)]
