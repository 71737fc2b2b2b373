"""The performance monitor: sample shapes, the one-hour window, ``after``, GPU sources."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from modelswap.observability.gpu import open_gpu_source
from modelswap.observability.performance import (
    CpuTimes,
    NetIo,
    PerformanceMonitor,
    SysReader,
    SysSample,
    cpu_percents,
    gpu_sample_json,
    parse_rfc3339,
    rfc3339,
    sys_sample_json,
)
from tests.fake_gpu import FakeGpu, gpu_sample

T0 = datetime(2026, 1, 1, tzinfo=UTC)

SYS_KEYS = {
    "timestamp",
    "cpu_util_per_core",
    "mem_total_mb",
    "mem_used_mb",
    "mem_free_mb",
    "swap_total_mb",
    "swap_used_mb",
    "load_avg_1",
    "load_avg_5",
    "load_avg_15",
    "net_io",
}
GPU_KEYS = {
    "timestamp",
    "id",
    "name",
    "uuid",
    "temp_c",
    "vram_temp_c",
    "gpu_util_pct",
    "mem_util_pct",
    "mem_used_mb",
    "mem_total_mb",
    "fan_speed_pct",
    "power_draw_w",
}


def sys_sample(timestamp: datetime) -> SysSample:
    return SysSample(
        timestamp=timestamp,
        cpu_util_per_core=(12.5, 80.0),
        mem_total_mb=32000,
        mem_used_mb=12000,
        mem_free_mb=20000,
        swap_total_mb=2048,
        swap_used_mb=16,
        load_avg_1=1.5,
        load_avg_5=1.0,
        load_avg_15=0.5,
        net_io=(NetIo("eth0", 1000, 2000),),
    )


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def monitor(clock: Clock, gpu: FakeGpu | None = None) -> PerformanceMonitor:
    return PerformanceMonitor(5.0, gpu=gpu, read_sys=sys_sample, wall=clock)


# --- pure helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00Z", T0),
        ("2026-01-01T01:00:00+01:00", T0),
        ("2026-01-01T00:00:00.5Z", T0 + timedelta(milliseconds=500)),
        ("2026-01-01T00:00:00.123456789Z", T0 + timedelta(microseconds=123456)),
        ("2026-01-01t00:00:00z", T0),
    ],
)
def test_rfc3339_accepted(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01",  # a date is not a timestamp
        "2026-01-01T00:00:00",  # no offset
        "2026-01-01 00:00:00Z",  # space separator
        "2026-01-01T00:00:00+0100",  # offset without colon
        "2026-13-01T00:00:00Z",  # month 13
        "yesterday",
        " 2026-01-01T00:00:00Z",
    ],
)
def test_rfc3339_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


def test_rfc3339_written_in_utc_with_z() -> None:
    assert rfc3339(T0 + timedelta(microseconds=5)) == "2026-01-01T00:00:00.000005Z"
    assert parse_rfc3339(rfc3339(T0)) == T0


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ([CpuTimes(0, 0)], [CpuTimes(5, 10)], (50.0,)),
        ([CpuTimes(1, 10)], [CpuTimes(1, 20)], (0.0,)),  # idle
        ([CpuTimes(0, 0)], [CpuTimes(10, 10)], (100.0,)),
        ([CpuTimes(3, 3)], [CpuTimes(3, 3)], (0.0,)),  # no time passed: 0, not a crash
        ([CpuTimes(0, 0), CpuTimes(0, 0)], [CpuTimes(1, 4), CpuTimes(3, 4)], (25.0, 75.0)),
    ],
)
def test_cpu_percents(
    before: list[CpuTimes], after: list[CpuTimes], expected: tuple[float, ...]
) -> None:
    assert cpu_percents(before, after) == expected


def test_real_sys_sample_has_the_spec_shape() -> None:
    sample = SysReader()(T0)
    assert len(sample.cpu_util_per_core) == psutil.cpu_count()
    assert all(0.0 <= pct <= 100.0 for pct in sample.cpu_util_per_core)
    assert sample.mem_total_mb == psutil.virtual_memory().total // (1024 * 1024)
    assert 0 < sample.mem_used_mb < sample.mem_total_mb
    assert all(not nic.name.startswith("lo") for nic in sample.net_io)
    data = sys_sample_json(sample)
    assert set(data) == SYS_KEYS
    assert data["timestamp"] == "2026-01-01T00:00:00Z"
    assert all(set(nic) == {"name", "bytes_recv", "bytes_sent"} for nic in data["net_io"])


def test_gpu_sample_json_has_the_spec_shape() -> None:
    data = gpu_sample_json(gpu_sample(1, timestamp=T0))
    assert set(data) == GPU_KEYS
    assert (data["id"], data["uuid"], data["mem_total_mb"]) == (1, "GPU-fake-1", 24576)


def test_no_nvidia_driver_is_no_gpu_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", "modelswap.performance")
    source = open_gpu_source()
    if source is not None:
        source.close()
        pytest.skip("this host has an NVIDIA driver")
    assert "GPU monitoring not available" in caplog.text


# --- the monitor ------------------------------------------------------------------------


async def test_start_takes_the_first_sample_at_once_and_stop_closes_the_gpu() -> None:
    clock = Clock()
    gpu = FakeGpu()
    m = monitor(clock, gpu)
    await m.start()
    try:
        sys_samples, gpu_samples = m.history()
        assert [s.timestamp for s in sys_samples] == [T0]
        assert [(g.id, g.timestamp) for g in gpu_samples] == [(0, T0), (1, T0)]
        assert threading.main_thread().name not in gpu.threads  # NVML never on the loop
    finally:
        await m.stop()
    assert gpu.closed
    await m.stop()  # idempotent


async def test_samples_older_than_an_hour_are_dropped() -> None:
    clock = Clock()
    m = monitor(clock, FakeGpu())
    for _ in range(4):  # T0, +1200, +2400, +3600
        await m.sample_now()
        clock.advance(1200)
    sys_samples, gpu_samples = m.history()
    # At +3600 the T0 sample is exactly an hour old: gone.
    assert [s.timestamp for s in sys_samples] == [
        T0 + timedelta(seconds=s) for s in (1200, 2400, 3600)
    ]
    assert len(gpu_samples) == 6
    assert min(g.timestamp for g in gpu_samples) == T0 + timedelta(seconds=1200)


async def test_after_keeps_strictly_newer_samples() -> None:
    clock = Clock()
    m = monitor(clock, FakeGpu())
    for _ in range(3):
        await m.sample_now()
        clock.advance(5)
    sys_after, gpu_after = m.history(after=T0 + timedelta(seconds=5))
    assert [s.timestamp for s in sys_after] == [T0 + timedelta(seconds=10)]
    assert {g.timestamp for g in gpu_after} == {T0 + timedelta(seconds=10)}
    assert m.history(after=T0 + timedelta(seconds=10)) == ([], [])
    assert len(m.history(after=T0 - timedelta(seconds=1))[0]) == 3


async def test_latest_gpus_is_one_sample_per_gpu_sorted_by_id() -> None:
    clock = Clock()
    gpu = FakeGpu(readings=[gpu_sample(2), gpu_sample(0)])
    m = monitor(clock, gpu)
    await m.sample_now()
    clock.advance(5)
    gpu.readings = [gpu_sample(2, temp_c=90), gpu_sample(0, temp_c=10)]
    await m.sample_now()
    latest = m.latest_gpus()
    assert [(g.id, g.temp_c) for g in latest] == [(0, 10), (2, 90)]
    latest_sys = m.latest_sys()
    assert latest_sys is not None
    assert latest_sys.timestamp == T0 + timedelta(seconds=5)


async def test_without_gpu_only_host_samples() -> None:
    m = monitor(Clock())
    await m.sample_now()
    assert len(m.history()[0]) == 1
    assert m.history()[1] == []
    assert m.latest_gpus() == []
    assert not m.has_gpu


async def test_a_failing_first_sample_does_not_fail_startup() -> None:
    def broken(timestamp: datetime) -> SysSample:
        raise OSError("/proc is gone")

    m = PerformanceMonitor(5.0, read_sys=broken, wall=Clock())
    await m.start()
    try:
        assert m.failures == 1
        assert m.history() == ([], [])
    finally:
        await m.stop()
