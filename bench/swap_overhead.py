"""Swap overhead: what a forced swap costs beyond the upstream's own cold start.

Run: ``python3 bench/swap_overhead.py [--quick]`` (``bench/run.py`` runs it too).

Two fake models (``--startup-delay 0.3``) share one swap group, so every
request for the other model forces a swap: stop the loaded one, spawn the
requested one, detect it healthy, forward. The client alternates a, b, a, …
through a real ``python -m modelswap`` and times each request.

Why a measured baseline and not just "minus 300 ms": an upstream's cold start
is interpreter start + imports + the 300 ms delay, and the first part alone is
hundreds of ms on a busy 2-core box. So the same fake is also cold-started
directly in the same run (spawn → the instant its ``/health`` turns 200, from
the fake's own event log), interleaved with the swaps so load drift hits
both; overhead = swap request latency − the median direct cold start. That
is modelswap's whole share: scheduling, stopping the evicted model,
readiness detection, the forward.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from loadgen import CHAT_BODY, Goal, ModelswapProcess, Report, percentile

from modelswap.testing.fake_process import (
    FakeUpstreamProcess,
    fake_upstream_cmd,
    free_port,
    read_events,
)

STARTUP_DELAY = 0.3
GOAL_OVERHEAD_MS = 20.0


def write_config(tmp: Path) -> Path:
    """Models a and b evict each other (one swap group), nothing preloaded.

    Ports are picked free here rather than from ``startPort`` (5800…), which
    other modelswap instances on a shared machine may hold.
    """
    models = {}
    for name in ("a", "b"):
        port = free_port()
        models[name] = {
            "cmd": fake_upstream_cmd(port, name, startup_delay=STARTUP_DELAY),
            "proxy": f"http://127.0.0.1:{port}",
        }
    config = {
        "healthCheckTimeout": 30,
        "logLevel": "warn",
        "models": models,
        "groups": {"pair": {"swap": True, "exclusive": True, "members": ["a", "b"]}},
    }
    path = tmp / "modelswap.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def direct_cold_start(events: Path) -> float:
    """Spawn the fake ourselves; seconds from spawn until its ``/health`` turns 200.

    The instant it turns healthy comes from the fake's own event log
    (``listening`` time + the startup delay, as in ``bench/readiness.py``), not
    from polling: on 2 cores a tight client poll steals CPU from the child's
    imports and makes the baseline slower than the thing it is a baseline for.
    Waiting for the "listening" stdout line is a blocking ``select``, no spin.
    """
    fake = FakeUpstreamProcess("direct", event_log=events, startup_delay=STARTUP_DELAY)
    spawned = time.time()
    with fake:
        listening = next(e["t"] for e in read_events(events) if e["event"] == "listening")
    return float(listening) + STARTUP_DELAY - spawned


async def swap_request(session: aiohttp.ClientSession, url: str, model: str) -> float:
    began = time.perf_counter()
    async with session.post(url, json={**CHAT_BODY, "model": model}) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"swap to {model}: {resp.status} {body[:200]!r}")
    return time.perf_counter() - began


async def unload_all(session: aiohttp.ClientSession, base: str) -> None:
    async with session.post(f"{base}/api/models/unload") as resp:
        if resp.status != 200:
            raise RuntimeError(f"unload: {resp.status}")


async def measure(base: str, swaps: int, tmp: Path) -> tuple[list[float], list[float], list[float]]:
    """(swap latencies, cold latencies, direct cold starts), interleaved.

    A swap evicts the other model first, so it also pays that model's exit; a
    cold request finds nothing running (everything unloaded before it) and
    pays only the start — the pure "beyond the model's own load time" cost.
    The direct starts block this loop briefly; nothing else runs on it meanwhile.
    """
    url = f"{base}/v1/chat/completions"
    latencies: list[float] = []
    cold: list[float] = []
    baseline: list[float] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await swap_request(session, url, "b")  # initial load: nothing to evict yet
        for i in range(swaps):
            latencies.append(await swap_request(session, url, "ab"[i % 2]))
            if i % 2 == 0:
                baseline.append(direct_cold_start(tmp / f"direct{i}.events"))
        for _ in range(swaps // 2):
            await unload_all(session, base)
            cold.append(await swap_request(session, url, "a"))
    return latencies, cold, baseline


def run(quick: bool = False) -> Report:
    swaps = 6 if quick else 24
    with (
        tempfile.TemporaryDirectory(prefix="modelswap-bench-") as tmpdir,
        ModelswapProcess(write_config(Path(tmpdir))) as ms,
    ):
        latencies, cold, baseline = asyncio.run(measure(ms.url, swaps, Path(tmpdir)))
    base = statistics.median(baseline)
    minus_delay = [x - STARTUP_DELAY for x in latencies]
    overhead = [x - base for x in latencies]
    cold_overhead = [x - base for x in cold]

    def fmt(values: list[float], p: float) -> str:
        return f"{percentile(values, p) * 1e3:.1f} ms"

    md = [
        f"Two fakes (`--startup-delay {STARTUP_DELAY}`) in one swap group, requests "
        f"alternating a/b through modelswap, every one a swap (n={len(latencies)}); "
        f"baseline: the same fake cold-started directly, spawn → `/health` turns 200 "
        "(from its event log) "
        f"(n={len(baseline)}, interleaved).",
        "",
        "| what | median | p90 | max |",
        "|---|---|---|---|",
        f"| swap request latency | {fmt(latencies, 50)} | {fmt(latencies, 90)} | "
        f"{max(latencies) * 1e3:.1f} ms |",
        f"| latency − {STARTUP_DELAY * 1e3:.0f} ms startup delay | {fmt(minus_delay, 50)} | "
        f"{fmt(minus_delay, 90)} | {max(minus_delay) * 1e3:.1f} ms |",
        f"| baseline: direct cold start (spawn → healthy) | {fmt(baseline, 50)} | "
        f"{fmt(baseline, 90)} | {max(baseline) * 1e3:.1f} ms |",
        f"| swap overhead = swap latency − baseline median (includes the evicted "
        f"model's exit) | {fmt(overhead, 50)} | {fmt(overhead, 90)} | "
        f"{max(overhead) * 1e3:.1f} ms |",
        f"| cold request latency (nothing running, n={len(cold)}) | {fmt(cold, 50)} | "
        f"{fmt(cold, 90)} | {max(cold) * 1e3:.1f} ms |",
        f"| **cold overhead** = cold latency − baseline median | {fmt(cold_overhead, 50)} | "
        f"{fmt(cold_overhead, 90)} | {max(cold_overhead) * 1e3:.1f} ms |",
    ]
    goals = [
        Goal(
            "cold-start overhead (median, vs direct cold start)",
            percentile(cold_overhead, 50) * 1e3,
            GOAL_OVERHEAD_MS,
            "ms",
        ),
        Goal(
            "swap overhead incl. evicting the other model (median)",
            percentile(overhead, 50) * 1e3,
            GOAL_OVERHEAD_MS,
            "ms",
        ),
    ]
    return Report("Swap overhead (`bench/swap_overhead.py`)", md, goals, [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    report = run(args.quick)
    print("\n".join(report.markdown))
    for goal in report.goals:
        print(goal.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
