"""GPU readings behind one small seam: :class:`GpuSource`, with NVML as the real one.

The performance monitor and the hardware snapshot only ever see a
``GpuSource``; tests inject a hand-written fake, and a host without an NVIDIA
driver simply has none (:func:`open_gpu_source` returns ``None`` and logs once
at info, as llama-swap logs "GPU monitoring not available"). No GPU is not an
error.

Every method of a source may block (NVML talks to the driver), so callers run
them in a worker thread (``asyncio.to_thread``), never on the event loop.
NVML itself is thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

log = logging.getLogger("modelswap.performance")

MB = 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one poll (server spec §21); MB values are whole mebibytes."""

    timestamp: datetime
    id: int
    name: str
    uuid: str
    temp_c: int
    vram_temp_c: int
    gpu_util_pct: float
    mem_util_pct: float
    """VRAM in use, percent of total (as llama-swap reports it; not bus activity)."""
    mem_used_mb: int
    mem_total_mb: int
    fan_speed_pct: float
    power_draw_w: float


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """What does not change while we run: for ``/api/hardware``'s accelerators."""

    index: int
    name: str
    uuid: str
    vendor: str
    memory_total_bytes: int | None
    driver_version: str | None
    power_limit_watts: float | None


class GpuSource(Protocol):
    """Where GPU readings come from. Every method may block: call it in a thread."""

    def read(self, timestamp: datetime) -> list[GpuSample]:
        """One sample per GPU, sorted by id, all stamped ``timestamp``."""
        ...

    def devices(self) -> list[GpuDevice]:
        """The static inventory of the GPUs this source reads."""
        ...

    def process_memory(self) -> dict[int, int]:
        """GPU memory in use per process: pid → bytes, summed over every GPU.

        Only processes the driver reports (compute and graphics); a pid it
        does not list uses none. Pids are the driver's view (the host's PID
        namespace): inside a container they may not match ours.
        """
        ...

    def close(self) -> None:
        """Release the driver; the source is not used afterwards."""
        ...


GpuOpener = Callable[[], "GpuSource | None"]


def _or_default(read: Callable[[], T], default: T) -> T:
    """One NVML query; an unsupported one (fan on a passive card, …) gives ``default``.

    Queries are independent so one missing reading never loses the whole sample.
    """
    try:
        return read()
    except Exception:
        return default


def _running(query: Callable[[Any], Any], handle: Any) -> list[Any]:
    """One NVML running-processes query; unsupported or failing → none listed."""
    try:
        return list(query(handle))
    except Exception:
        return []


def _text(value: str | bytes) -> str:
    """Older NVML bindings return bytes, newer ones str."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class NvmlGpuSource:
    """NVIDIA GPUs through NVML (``nvidia-ml-py``, import name ``pynvml``).

    Built only by :func:`open_gpu_source` once ``nvmlInit()`` has succeeded;
    the device handles are looked up once (GPUs do not hot-plug in practice).
    """

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        count = int(nvml.nvmlDeviceGetCount())
        self._handles: list[Any] = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]

    def __repr__(self) -> str:
        return f"<NvmlGpuSource gpus={len(self._handles)}>"

    def read(self, timestamp: datetime) -> list[GpuSample]:
        return [self._sample(i, handle, timestamp) for i, handle in enumerate(self._handles)]

    def _sample(self, index: int, handle: Any, timestamp: datetime) -> GpuSample:
        nvml = self._nvml
        memory = _or_default(lambda: nvml.nvmlDeviceGetMemoryInfo(handle), None)
        used = int(memory.used) if memory is not None else 0
        total = int(memory.total) if memory is not None else 0
        util = _or_default(lambda: nvml.nvmlDeviceGetUtilizationRates(handle), None)
        return GpuSample(
            timestamp=timestamp,
            id=index,
            name=_or_default(lambda: _text(nvml.nvmlDeviceGetName(handle)), ""),
            uuid=_or_default(lambda: _text(nvml.nvmlDeviceGetUUID(handle)), ""),
            temp_c=_or_default(
                lambda: int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)), 0
            ),
            vram_temp_c=_or_default(lambda: self._memory_temp(handle), 0),
            gpu_util_pct=float(util.gpu) if util is not None else 0.0,
            mem_util_pct=used / total * 100.0 if total else 0.0,
            mem_used_mb=used // MB,
            mem_total_mb=total // MB,
            fan_speed_pct=_or_default(lambda: float(nvml.nvmlDeviceGetFanSpeed(handle)), 0.0),
            power_draw_w=_or_default(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 0.0),
        )

    def _memory_temp(self, handle: Any) -> int:
        """HBM/GDDR temperature where the driver reports it (0 elsewhere, like llama-swap)."""
        nvml = self._nvml
        (field,) = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_MEMORY_TEMP])
        if getattr(field, "nvmlReturn", 1) != 0:
            return 0
        return int(field.value.uiVal)

    def process_memory(self) -> dict[int, int]:
        used: dict[int, int] = {}
        for on_device in self.process_memory_by_device().values():
            for pid, memory in on_device.items():
                used[pid] = used.get(pid, 0) + memory
        return used

    def process_memory_by_device(self) -> dict[int, dict[int, int]]:
        """GPU index → (pid → bytes): the memory policy's per-device ``vram:N`` readings."""
        nvml = self._nvml
        by_device: dict[int, dict[int, int]] = {}
        for index, handle in enumerate(self._handles):
            on_device: dict[int, int] = {}
            for query in (
                nvml.nvmlDeviceGetComputeRunningProcesses,
                nvml.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                for process in _running(query, handle):
                    memory = getattr(process, "usedGpuMemory", None)
                    if memory is None:  # not available (e.g. Windows WDDM)
                        continue
                    pid = int(process.pid)
                    # A process in both lists holds one allocation, not two.
                    on_device[pid] = max(on_device.get(pid, 0), int(memory))
            by_device[index] = on_device
        return by_device

    def devices(self) -> list[GpuDevice]:
        driver = _or_default(lambda: _text(self._nvml.nvmlSystemGetDriverVersion()), None)
        return [self._device(i, handle, driver) for i, handle in enumerate(self._handles)]

    def _device(self, index: int, handle: Any, driver: str | None) -> GpuDevice:
        nvml = self._nvml
        memory = _or_default(lambda: nvml.nvmlDeviceGetMemoryInfo(handle), None)
        limit_mw = _or_default(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle), None)
        return GpuDevice(
            index=index,
            name=_or_default(lambda: _text(nvml.nvmlDeviceGetName(handle)), ""),
            uuid=_or_default(lambda: _text(nvml.nvmlDeviceGetUUID(handle)), ""),
            vendor="NVIDIA",
            memory_total_bytes=int(memory.total) if memory is not None else None,
            driver_version=driver,
            power_limit_watts=limit_mw / 1000.0 if limit_mw is not None else None,
        )

    def close(self) -> None:
        _or_default(self._nvml.nvmlShutdown, None)


def open_gpu_source() -> GpuSource | None:
    """NVML if the binding imports and the driver answers; else ``None`` (logged at info).

    Blocking (loads the driver library): call it in a thread.
    """
    try:
        import pynvml  # type: ignore[import-untyped]

        pynvml.nvmlInit()
    except Exception as error:
        log.info("GPU monitoring not available: %s", error)
        return None
    try:
        return NvmlGpuSource(pynvml)
    except Exception as error:
        log.info("GPU monitoring not available: %s", error)
        _or_default(pynvml.nvmlShutdown, None)
        return None
