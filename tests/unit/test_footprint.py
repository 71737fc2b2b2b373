"""Process-tree footprints (pure parts), CPU rates, and NVML's per-process GPU memory.

Pure: the psutil reader is replaced by a fake tree here (the real one is
exercised in tests/integration/test_processes_api.py); the NVML source runs
against a hand-written stand-in for the ``pynvml`` module.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from modelswap.observability.footprint import (
    CpuRates,
    ProcSample,
    footprint_of,
    measure_tree,
)
from modelswap.observability.gpu import NvmlGpuSource

MB = 1024 * 1024


@dataclass
class FakeTree:
    trees: dict[int, list[ProcSample]]

    def read_tree(self, pid: int) -> list[ProcSample] | None:
        return self.trees.get(pid)


def sample(pid: int, rss_mb: int, cpu: float, created: float = 100.0) -> ProcSample:
    return ProcSample(pid=pid, rss_bytes=rss_mb * MB, cpu_seconds=cpu, created=created)


def test_footprint_sums_the_whole_tree() -> None:
    tree = [sample(10, 100, 2.0, created=50.0), sample(11, 30, 1.5), sample(12, 5, 0.25)]
    fp = footprint_of(tree, gpu_memory={11: 4000 * MB, 12: 96 * MB, 99: 1})
    assert (fp.rss_bytes, fp.gpu_bytes, fp.cpu_seconds, fp.children, fp.started) == (
        135 * MB,
        4096 * MB,
        3.75,
        2,
        50.0,
    )


def test_no_gpu_source_is_none_and_no_listed_process_is_zero() -> None:
    tree = [sample(10, 1, 0.0)]
    assert footprint_of(tree).gpu_bytes is None
    assert footprint_of(tree, gpu_memory={}).gpu_bytes == 0


def test_measure_tree_gone_root_is_none() -> None:
    reader = FakeTree({10: [sample(10, 1, 0.0)]})
    assert measure_tree(10, reader=reader) is not None
    assert measure_tree(11, reader=reader) is None
    with pytest.raises(ValueError):
        footprint_of([])


def test_cpu_rates_since_previous_reading() -> None:
    rates = CpuRates()
    assert rates.rate(10, cpu_seconds=5.0, now=100.0) == 0.0  # first reading
    assert rates.rate(10, cpu_seconds=6.0, now=102.0) == 50.0  # 1 s of CPU in 2 s
    assert rates.rate(10, cpu_seconds=10.0, now=103.0) == 400.0  # four cores busy
    assert rates.rate(10, cpu_seconds=9.0, now=104.0) == 0.0  # a child exited: clamped
    assert rates.rate(10, cpu_seconds=9.0, now=104.0) == 0.0  # no time passed
    assert rates.rate(20, cpu_seconds=1.0, now=104.0) == 0.0  # another pid: its own first
    rates.keep_only([20])
    assert rates.rate(10, cpu_seconds=20.0, now=105.0) == 0.0  # forgotten: first again


class FakeNvml:
    """The slice of ``pynvml`` that :class:`NvmlGpuSource` uses for process memory."""

    def __init__(self, compute: list[list[Any]], graphics: list[list[Any]]) -> None:
        self.compute = compute
        self.graphics = graphics

    def nvmlDeviceGetCount(self) -> int:
        return len(self.compute)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        return self.compute[handle]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Any]:
        if self.graphics[handle] is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.graphics[handle]


def proc(pid: int, used: int | None) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=used)


def test_nvml_process_memory_sums_gpus_without_double_counting() -> None:
    nvml = FakeNvml(
        compute=[[proc(10, 1000), proc(11, None)], [proc(10, 500)]],
        graphics=[[proc(10, 1000), proc(12, 7)], None],  # gpu 1: query unsupported
    )
    source = NvmlGpuSource(nvml)
    # pid 10: 1000 on gpu 0 (in both lists: one allocation) + 500 on gpu 1;
    # pid 11's usage is unknown to the driver: not listed.
    assert source.process_memory() == {10: 1500, 12: 7}
