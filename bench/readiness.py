"""Process supervision numbers: readiness-detection latency and kill-escalation time.

Run: ``python3 bench/readiness.py [--starts 20] [--stops 5]``

1. **Readiness detection.** Start a fake upstream whose ``/health`` turns 200
   exactly ``--startup-delay`` (0.3 s) after it starts listening, 20 times.
   The instant it turns healthy is taken from the fake's own record: its
   ``listening`` event time plus the delay (the fake measures the delay from
   the moment it marks itself listening, just before writing that event).
   Latency = the moment ``ensure_ready()`` returned minus that instant.
   For comparison, the same starts are replayed against llama-swap's schedule
   (first probe 250 ms after spawn, then one every 1 s) — modelled, not run.
2. **Kill escalation.** ``stop(1.0)`` on a child that ignores SIGTERM: time
   from the call to the child being reaped (expect the 1 s grace + a little).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelswap.process.managed import ManagedProcess
from modelswap.process.spec import ProcessSpec
from modelswap.testing.fake_process import (
    fake_upstream_cmd,
    fake_upstream_env,
    free_port,
    read_events,
)

LLAMA_SWAP_FIRST_PROBE = 0.25
LLAMA_SWAP_INTERVAL = 1.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, math.ceil(p / 100 * len(ordered)) - 1)
    return ordered[k]


def summary(name: str, values: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    v = [x * scale for x in values]
    return (
        f"{name}: median {statistics.median(v):.1f} {unit}, p90 {percentile(v, 90):.1f} {unit}, "
        f"max {max(v):.1f} {unit}, min {min(v):.1f} {unit} (n={len(v)})"
    )


def spec_for(model_id: str, port: int, events: Path, **fake: object) -> ProcessSpec:
    return ProcessSpec(
        model_id=model_id,
        cmd=fake_upstream_cmd(port, model_id, event_log=events, **fake),
        proxy=f"http://127.0.0.1:{port}",
        health_check_timeout=30,
    )


async def one_start(tmp: Path, i: int, delay: float) -> tuple[float, float, float]:
    """(our latency, fake-side first-200 lag, modelled llama-swap latency) for one start."""
    port, events = free_port(), tmp / f"start{i}.events"
    proc = ManagedProcess(
        spec_for(f"bench{i}", port, events, startup_delay=delay), base_env=fake_upstream_env()
    )
    try:
        spawned = time.time()
        await proc.ensure_ready()
        returned = time.time()
    finally:
        await proc.shutdown()
    log = read_events(events)
    listening = next(e["t"] for e in log if e["event"] == "listening")
    first_200 = next(e["t"] for e in log if e["event"] == "healthy")
    healthy_at = listening + delay
    # llama-swap: probes at spawn + 0.25 + k*1.0; the first one after healthy_at wins.
    k = max(0, math.ceil((healthy_at - spawned - LLAMA_SWAP_FIRST_PROBE) / LLAMA_SWAP_INTERVAL))
    llama_swap_detect = spawned + LLAMA_SWAP_FIRST_PROBE + k * LLAMA_SWAP_INTERVAL
    return returned - healthy_at, first_200 - healthy_at, llama_swap_detect - healthy_at


async def one_stop(tmp: Path, i: int, grace: float) -> float:
    port = free_port()
    spec = spec_for(f"stop{i}", port, tmp / f"stop{i}.events", ignore_sigterm=True)
    proc = ManagedProcess(spec, base_env=fake_upstream_env())
    try:
        await proc.ensure_ready()
        began = time.monotonic()
        await proc.stop(grace)  # returns once the child is reaped and its pipes closed
        return time.monotonic() - began
    finally:
        await proc.shutdown()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--startup-delay", type=float, default=0.3)
    parser.add_argument("--stops", type=int, default=5)
    parser.add_argument("--grace", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        ours, lag, modelled = [], [], []
        for i in range(args.starts):
            a, b, c = await one_start(tmp, i, args.startup_delay)
            ours.append(a)
            lag.append(b)
            modelled.append(c)
        stops = [await one_stop(tmp, i, args.grace) for i in range(args.stops)]
    print(f"readiness detection, fake upstream with {args.startup_delay:g}s startup delay")
    print("  " + summary("health turns 200 -> ensure_ready returns", ours))
    print("  " + summary("  of which: turns 200 -> fake answers its first 200", lag))
    print("  " + summary("llama-swap schedule (250 ms, then 1 s), modelled", modelled))
    print(f"kill escalation, SIGTERM-ignoring child, stop({args.grace:g})")
    print("  " + summary("stop() -> reaped", stops))


if __name__ == "__main__":
    asyncio.run(main())
