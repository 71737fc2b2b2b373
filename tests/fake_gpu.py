"""A hand-written :class:`~modelswap.observability.gpu.GpuSource` for tests (no driver needed)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime

from modelswap.observability.gpu import GpuDevice, GpuSample


def gpu_sample(index: int = 0, **fields: object) -> GpuSample:
    """A plausible reading of GPU ``index``; ``fields`` override (``timestamp`` too)."""
    base = GpuSample(
        timestamp=datetime.fromisoformat("2026-01-01T00:00:00+00:00"),
        id=index,
        name=f"Fake GPU {index}",
        uuid=f"GPU-fake-{index}",
        temp_c=60 + index,
        vram_temp_c=0,
        gpu_util_pct=50.5,
        mem_util_pct=25.0,
        mem_used_mb=6144,
        mem_total_mb=24576,
        fan_speed_pct=40.0,
        power_draw_w=250.5,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@dataclass
class FakeGpu:
    """Reads ``readings`` (one template per GPU), stamped with the poll's time.

    Records the threads it was called from and whether it was closed, so tests
    can check that the driver is never called on the event loop and is released.
    """

    readings: list[GpuSample] = field(default_factory=lambda: [gpu_sample(0), gpu_sample(1)])
    fail_devices: bool = False
    processes: dict[int, int] = field(default_factory=dict)
    """What :meth:`process_memory` reports: pid → GPU bytes."""
    closed: bool = False
    reads: int = 0
    threads: set[str] = field(default_factory=set)

    def read(self, timestamp: datetime) -> list[GpuSample]:
        self.threads.add(threading.current_thread().name)
        self.reads += 1
        return [replace(r, timestamp=timestamp) for r in self.readings]

    def devices(self) -> list[GpuDevice]:
        self.threads.add(threading.current_thread().name)
        if self.fail_devices:
            raise RuntimeError("driver went away")
        return [
            GpuDevice(
                index=r.id,
                name=r.name,
                uuid=r.uuid,
                vendor="NVIDIA",
                memory_total_bytes=r.mem_total_mb * 1024 * 1024,
                driver_version="999.1",
                power_limit_watts=300.0,
            )
            for r in self.readings
        ]

    def process_memory(self) -> dict[int, int]:
        self.threads.add(threading.current_thread().name)
        return dict(self.processes)

    def close(self) -> None:
        self.closed = True
