"""Streaming: many concurrent SSE streams through modelswap vs direct, and modelswap's RSS.

Run: ``python3 bench/streaming.py [--quick]`` (``bench/run.py`` runs it too).

Why it is measured this way: a proxy's cost on a stream is not its first byte
but what it adds to *every* chunk while hundreds of other streams are
flowing, and how much memory each open stream pins. The fake upstream writes
chunk *i* of a stream ``i × interval`` after the response started, so on the
client ``delay_i = arrival_i − request_sent − i × interval`` is chunk *i*'s
delivery delay: connect, admission and the proxy's per-chunk forwarding,
plus sleep overshoot (identical on both paths). The first chunk's delay is
also shown alone (it carries the fixed per-request cost). The same load is run
direct and through modelswap; the difference of the percentiles is what
modelswap adds per chunk under that load. Streams are opened in a short ramp
(batches of 200 every 10 ms) and last long enough (40 × 50 ms) for all N to
be open at once; the report prints the peak it saw.

modelswap's RSS (its own pid, not the upstream's) is sampled from a thread
every 20 ms and its peak reported. The fd limit is raised first; modelswap and
its upstream inherit it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import psutil
from loadgen import (
    CHAT_BODY,
    Goal,
    ModelswapProcess,
    Report,
    loop_factory,
    percentile,
    raise_fd_limit,
    wait_ok,
)
from proxy_overhead import PATH, baseline_checkout, write_config

from modelswap.testing.fake_process import free_port

T = TypeVar("T")
GOAL_RSS_MB = 150.0
RAMP_BATCH = 200
RAMP_PAUSE = 0.01
STREAM_BODY = {**CHAT_BODY, "stream": True}


@dataclass(frozen=True, slots=True)
class StreamRun:
    """One load of N concurrent streams against one target."""

    target: str
    streams: int
    ok: int
    peak_open: int
    ttfb: list[float]  # first chunk arrival − request sent
    lateness: list[float]  # every chunk: arrival − request sent − i × interval
    wall: float


class _Open:
    """Counts streams whose headers arrived and that have not ended (one event loop)."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


async def _one_stream(
    session: aiohttp.ClientSession,
    url: str,
    interval: float,
    opened: _Open,
    ttfb: list[float],
    lateness: list[float],
) -> bool:
    sent = time.perf_counter()
    arrivals: list[float] = []
    async with session.post(url, json=STREAM_BODY) as resp:
        if resp.status != 200:
            await resp.read()
            return False
        opened.enter()
        try:
            async for line in resp.content:  # one SSE "data:" line per frame
                if line.startswith(b"data:"):
                    arrivals.append(time.perf_counter())
        finally:
            opened.leave()
    if not arrivals:
        return False
    ttfb.append(arrivals[0] - sent)
    lateness.extend(t - sent - i * interval for i, t in enumerate(arrivals))
    return True


async def stream_load(target: str, url: str, streams: int, interval: float) -> StreamRun:
    """Open ``streams`` concurrent streams in a short ramp and wait for all of them."""
    opened = _Open()
    ttfb: list[float] = []
    lateness: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    began = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks: list[asyncio.Task[bool]] = []
        for start in range(0, streams, RAMP_BATCH):
            for _ in range(min(RAMP_BATCH, streams - start)):
                tasks.append(
                    asyncio.create_task(_one_stream(session, url, interval, opened, ttfb, lateness))
                )
            await asyncio.sleep(RAMP_PAUSE)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    ok = sum(1 for r in results if r is True)
    return StreamRun(target, streams, ok, opened.peak, ttfb, lateness, time.perf_counter() - began)


class RssSampler:
    """Peak RSS of one pid, sampled from a thread (the event loop is busy with streams)."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self._proc = psutil.Process(pid)
        self._every = every
        self._stop = threading.Event()
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _run_async(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """A fresh (uv)loop per load, so one run's leftovers cannot slow the next."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro_fn())


def run(quick: bool = False, baseline: str | None = None) -> Report:
    """Direct and through modelswap at each stream count; RSS of modelswap at each peak.

    ``baseline``: a git revision also measured (``modelswap@<rev>``, its own upstream).
    """
    fd_limit = raise_fd_limit()
    chunks, interval = (20 if quick else 40), 0.05
    counts = (100, 1000)
    runs: dict[tuple[str, int], StreamRun] = {}
    rss: dict[tuple[str, int], tuple[int, int]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="modelswap-bench-") as tmpdir,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmpdir)
        port = free_port()
        config = write_config(tmp, port, chunks=chunks, chunk_interval=interval)
        ms = stack.enter_context(ModelswapProcess(config))
        urls = {"direct": f"http://127.0.0.1:{port}{PATH}", "modelswap": f"{ms.url}{PATH}"}
        pids = {"modelswap": ms.pid}
        if baseline is not None:
            env = stack.enter_context(baseline_checkout(baseline, tmp))
            old_config = write_config(
                tmp, free_port(), name="baseline", chunks=chunks, chunk_interval=interval
            )
            old = stack.enter_context(ModelswapProcess(old_config, env=env))
            urls[f"modelswap@{baseline}"] = f"{old.url}{PATH}"
            pids[f"modelswap@{baseline}"] = old.pid

        async def warm() -> None:
            async with aiohttp.ClientSession() as session:
                for name, url in urls.items():
                    if name != "direct":
                        await wait_ok(session, url)

        _run_async(warm)
        for n in counts:
            for target, url in urls.items():
                pid = pids.get(target)
                idle = psutil.Process(pid).memory_info().rss if pid else 0
                with RssSampler(pid or ms.pid) as sampler:
                    result = _run_async(functools.partial(stream_load, target, url, n, interval))
                runs[target, n] = result
                if pid is not None:
                    rss[target, n] = (idle, sampler.peak)
                print(
                    f"  {target:9s} {n:5d} streams: ok {result.ok}, peak open "
                    f"{result.peak_open}, per-chunk delay p50 "
                    f"{statistics.median(result.lateness) * 1e3:.2f} ms p99 "
                    f"{percentile(result.lateness, 99) * 1e3:.2f} ms, "
                    f"wall {result.wall:.2f} s",
                    flush=True,
                )
    return _report(runs, rss, counts, chunks, interval, fd_limit, quick)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _report(
    runs: dict[tuple[str, int], StreamRun],
    rss: dict[tuple[str, int], tuple[int, int]],
    counts: tuple[int, ...],
    chunks: int,
    interval: float,
    fd_limit: int,
    quick: bool,
) -> Report:
    md = [
        f"`stream: true` chat completions, {chunks} chunks {interval * 1e3:.0f} ms apart, "
        f"N streams opened in a {RAMP_BATCH}-per-{RAMP_PAUSE * 1e3:.0f} ms ramp; "
        "first chunk = request sent → first frame; per-chunk delay = arrival of chunk i − "
        "request sent − i × interval, over all chunks; "
        f"fd limit {fd_limit}.",
        "",
        "| streams | target | ok | peak open | first chunk p50 / p99 | per-chunk delay p50 / p99 "
        "| added per chunk p50 / p99 | modelswap RSS idle → peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    goals: list[Goal] = []
    targets = list(dict.fromkeys(target for target, _ in runs))
    for n in counts:
        direct = runs["direct", n]
        for target in targets:
            r = runs[target, n]
            lat50, lat99 = percentile(r.lateness, 50), percentile(r.lateness, 99)
            if target == "direct":
                added, mem = "—", "—"
            else:
                d50, d99 = percentile(direct.lateness, 50), percentile(direct.lateness, 99)
                added = f"{(lat50 - d50) * 1e3:+.2f} / {(lat99 - d99) * 1e3:+.2f} ms"
                idle, peak = rss[target, n]
                mem = f"{idle / 1e6:.0f} → {peak / 1e6:.0f} MB"
            md.append(
                f"| {n} | {target} | {r.ok}/{r.streams} | {r.peak_open} | "
                f"{_ms(percentile(r.ttfb, 50))} / {_ms(percentile(r.ttfb, 99))} | "
                f"{_ms(lat50)} / {_ms(lat99)} | {added} | {mem} |"
            )
    if ("modelswap", 1000) in rss:
        goals.append(Goal("modelswap peak RSS, 1,000 streams", rss["modelswap", 1000][1] / 1e6,
                          GOAL_RSS_MB, "MB"))  # fmt: skip
    failed = sum(r.streams - r.ok for r in runs.values())
    notes = [f"{failed} streams failed."] if failed else []
    for n in counts:
        d50 = percentile(runs["direct", n].lateness, 50)
        if d50 > 4 * interval:  # the floor itself is saturated: upstream or client out of CPU
            notes.append(
                f"At {n} streams the direct per-chunk delay ({d50 * 1e3:.0f} ms p50) is far "
                "above the interval: the upstream and the client are out of CPU, so the added "
                "column there is within noise."
            )
    return Report("Streaming (`bench/streaming.py`)", md, goals, notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="also measure this git revision")
    args = parser.parse_args()
    report = run(args.quick, args.baseline)
    print("\n".join(report.markdown))
    for goal in report.goals:
        print(goal.line())
    for note in report.notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
