"""Where the memory policy's measurements come from: one small seam, psutil + NVML behind it.

The memory policy (:mod:`modelswap.core.memory`) is pure; it learns what a
running model really uses through ``FootprintMeasured`` events. This module is
the edge that produces those numbers:

* ``ram`` — the RSS of the model's whole process tree (psutil, through
  :func:`~modelswap.observability.footprint.footprint_of`, the same reading
  ``/api/processes`` shows);
* ``vram`` — GPU memory NVML reports for any process of the tree, and
  ``vram:N`` per device when the GPU source can tell devices apart;

and the machine's totals, which are the default budget (``vram``, ``vram:N``).
No GPU is not an error: then only ``ram`` is measured and nothing is detected.

Tests inject a hand-written :class:`MemorySource`. Every method may block
(psutil reads /proc, NVML talks to the driver): call it in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from modelswap.observability.footprint import PsutilTreeReader, TreeReader, footprint_of
from modelswap.observability.gpu import GpuSource, open_gpu_source

__all__ = ["MemorySource", "MemorySourceOpener", "SystemMemorySource", "open_memory_source"]

log = logging.getLogger("modelswap.memory")


class MemorySource(Protocol):
    """Measurements for the memory policy. Every method may block: call it in a thread."""

    def detected(self) -> dict[str, int]:
        """The machine's memory the config may leave out: ``vram``, ``vram:N`` (bytes)."""
        ...

    def measure(self, model_id: str, pid: int) -> dict[str, int] | None:
        """What ``pid``'s process tree uses now (resource → bytes); None if it is gone."""
        ...

    def close(self) -> None:
        """Release the driver; the source is not used afterwards."""
        ...


class SystemMemorySource:
    """psutil for the tree's RSS, a :class:`GpuSource` (NVML) for its GPU memory."""

    def __init__(self, gpu: GpuSource | None, reader: TreeReader | None = None) -> None:
        self._gpu = gpu
        self._reader = reader or PsutilTreeReader()

    def __repr__(self) -> str:
        return f"<SystemMemorySource gpu={self._gpu!r}>"

    def detected(self) -> dict[str, int]:
        if self._gpu is None:
            return {}
        budget: dict[str, int] = {}
        for device in self._gpu.devices():
            if device.memory_total_bytes is not None:
                budget[f"vram:{device.index}"] = device.memory_total_bytes
        if budget:
            budget["vram"] = sum(budget.values())
        return budget

    def measure(self, model_id: str, pid: int) -> dict[str, int] | None:
        samples = self._reader.read_tree(pid)
        if not samples:
            return None
        gpu_total = self._gpu.process_memory() if self._gpu is not None else None
        footprint = footprint_of(samples, gpu_total)
        sizes = {"ram": footprint.rss_bytes}
        if footprint.gpu_bytes is not None:
            sizes["vram"] = footprint.gpu_bytes
        per_device = getattr(self._gpu, "process_memory_by_device", None)
        if callable(per_device):
            pids = {sample.pid for sample in samples}
            devices: Mapping[int, Mapping[int, int]] = per_device()
            for index, used in devices.items():
                on_device = sum(size for p, size in used.items() if p in pids)
                if on_device:
                    sizes[f"vram:{index}"] = on_device
        return sizes

    def close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()


MemorySourceOpener = Callable[[], MemorySource]


def open_memory_source() -> MemorySource:
    """psutil plus NVML when a GPU answers (no GPU: RSS only). Blocking: loads the driver."""
    return SystemMemorySource(open_gpu_source())
