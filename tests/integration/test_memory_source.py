"""The real memory source: psutil always; NVML only where a GPU answers (that test alone skips)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from modelswap.observability.footprint import ProcSample
from modelswap.observability.gpu import open_gpu_source
from modelswap.process.memory_source import SystemMemorySource, open_memory_source
from tests.fake_gpu import FakeGpu, gpu_sample


def test_rss_of_a_real_process_tree() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        source = SystemMemorySource(None)
        assert source.detected() == {}  # no GPU is not an error
        sizes = source.measure("m", os.getpid())
        assert sizes is not None and sizes["ram"] > 0 and "vram" not in sizes
        mine = source.measure("m", child.pid)
        assert mine is not None and mine["ram"] > 0
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    assert SystemMemorySource(None).measure("m", child.pid) is None  # gone


class PerDeviceGpu(FakeGpu):
    """FakeGpu plus the NVML source's per-device answer."""

    def process_memory_by_device(self) -> dict[int, dict[int, int]]:
        return {0: {os.getpid(): 100}, 1: {os.getpid(): 50, 1: 7}}


def test_gpu_memory_of_the_tree_per_device_and_detected_budget() -> None:
    gpu = PerDeviceGpu(
        readings=[gpu_sample(0, mem_total_mb=1024), gpu_sample(1, mem_total_mb=2048)],
        processes={os.getpid(): 150, 1: 7},
    )
    source = SystemMemorySource(gpu)
    assert source.detected() == {"vram:0": 1 << 30, "vram:1": 2 << 30, "vram": 3 << 30}
    sizes = source.measure("m", os.getpid())
    assert sizes is not None
    assert (sizes["vram"], sizes["vram:0"], sizes["vram:1"]) == (150, 100, 50)
    source.close()
    assert gpu.closed


def test_a_tree_reader_decides_which_pids_count() -> None:
    class OneProcess:
        def read_tree(self, pid: int) -> list[ProcSample] | None:
            return [ProcSample(pid, 1234, 0.0, datetime.now(UTC).timestamp())]

    gpu = FakeGpu(processes={42: 10, 43: 99})
    sizes = SystemMemorySource(gpu, OneProcess()).measure("m", 42)
    assert sizes == {"ram": 1234, "vram": 10}


def test_nvml_on_a_real_gpu() -> None:
    gpu = open_gpu_source()
    if gpu is None:
        pytest.skip("no NVIDIA GPU / NVML on this machine")
    gpu.close()
    source = open_memory_source()
    try:
        detected = source.detected()
        assert detected["vram"] > 0 and detected["vram:0"] > 0
        sizes = source.measure("m", os.getpid())
        assert sizes is not None and sizes["ram"] > 0 and "vram" in sizes
    finally:
        source.close()
