"""What one model's process tree costs right now: memory, GPU memory, CPU.

An upstream is rarely one process: ``llama-server`` may be wrapped by a shell
or a launcher, vLLM forks workers. So a model's footprint is measured over its
whole tree — the process modelswap started and every descendant — with psutil
(and, for GPU memory, the per-process usage NVML reports; see
:meth:`~modelswap.observability.gpu.GpuSource.process_memory`).

Three layers, so each can be tested and reused on its own (Step 13's
memory-aware eviction reuses :func:`measure_tree`):

* :class:`TreeReader` — where per-process readings come from
  (:class:`PsutilTreeReader` in production, a hand-written fake in tests);
* :func:`footprint_of` — pure: readings (+ the GPU's pid → bytes map) in,
  one :class:`Footprint` out;
* :class:`CpuRates` — pure: CPU seconds at two moments → percent, per pid,
  since the previous reading (the first one is 0.0).

Everything that reads the OS blocks: call it in a worker thread
(``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import psutil

__all__ = [
    "CpuRates",
    "Footprint",
    "ProcSample",
    "PsutilTreeReader",
    "TreeReader",
    "footprint_of",
    "measure_tree",
]


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One process of a tree at one moment."""

    pid: int
    rss_bytes: int
    cpu_seconds: float
    """User + system CPU time of this process (not of its children)."""
    created: float
    """Its start time, Unix seconds (psutil's ``create_time``)."""


@dataclass(frozen=True, slots=True)
class Footprint:
    """A process tree's cost: the root process plus ``children`` descendants."""

    rss_bytes: int
    gpu_bytes: int | None
    """GPU memory used by any process of the tree; None when no GPU source answered."""
    cpu_seconds: float
    children: int
    started: float
    """When the root process started (Unix seconds)."""


class TreeReader(Protocol):
    def read_tree(self, pid: int) -> list[ProcSample] | None:
        """The root ``pid`` first, then its living descendants; None if the root is gone."""
        ...


class PsutilTreeReader:
    """Reads a process tree with psutil; descendants that vanish mid-read are skipped."""

    def read_tree(self, pid: int) -> list[ProcSample] | None:
        try:
            root = psutil.Process(pid)
            first = self._sample(root)
            children = root.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return None
        samples = [first]
        for child in children:
            try:
                samples.append(self._sample(child))
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        return samples

    @staticmethod
    def _sample(process: psutil.Process) -> ProcSample:
        with process.oneshot():
            times = process.cpu_times()
            return ProcSample(
                pid=process.pid,
                rss_bytes=int(process.memory_info().rss),
                cpu_seconds=float(times.user + times.system),
                created=float(process.create_time()),
            )


def footprint_of(
    samples: Sequence[ProcSample], gpu_memory: Mapping[int, int] | None = None
) -> Footprint:
    """Sum a tree's readings (root first); ``gpu_memory`` maps pid → GPU bytes used."""
    if not samples:
        raise ValueError("a process tree has at least its root")
    gpu = None
    if gpu_memory is not None:
        gpu = sum(gpu_memory.get(sample.pid, 0) for sample in samples)
    return Footprint(
        rss_bytes=sum(sample.rss_bytes for sample in samples),
        gpu_bytes=gpu,
        cpu_seconds=sum(sample.cpu_seconds for sample in samples),
        children=len(samples) - 1,
        started=samples[0].created,
    )


_PSUTIL = PsutilTreeReader()


def measure_tree(
    pid: int,
    *,
    gpu_memory: Mapping[int, int] | None = None,
    reader: TreeReader = _PSUTIL,
) -> Footprint | None:
    """The footprint of ``pid``'s tree now; None if ``pid`` is gone. Blocking."""
    samples = reader.read_tree(pid)
    return footprint_of(samples, gpu_memory) if samples else None


class CpuRates:
    """CPU percent per root pid since its previous reading (pure: times are inputs).

    100.0 is one core busy; a tree using four cores reads 400.0. The first
    reading of a pid is 0.0, as psutil's ``cpu_percent(None)``. A descendant
    that exits takes its CPU time out of the tree's sum; the drop is clamped
    at 0 rather than reported as negative use.
    """

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float]] = {}

    def rate(self, pid: int, cpu_seconds: float, now: float) -> float:
        previous = self._last.get(pid)
        self._last[pid] = (cpu_seconds, now)
        if previous is None:
            return 0.0
        cpu_before, then = previous
        elapsed = now - then
        if elapsed <= 0:
            return 0.0
        return max(0.0, cpu_seconds - cpu_before) / elapsed * 100.0

    def keep_only(self, pids: Iterable[int]) -> None:
        """Forget pids no longer measured (their numbers may be reused)."""
        keep = set(pids)
        self._last = {pid: last for pid, last in self._last.items() if pid in keep}
