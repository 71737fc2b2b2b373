"""Churn simulation: how long do requests for cold models wait behind a hot one?

A pure discrete-event simulation (no sockets, no sleeps, no asyncio): a seeded
random trace of requests over 4 models that evict each other (one model at a
time, like llama-swap's default group), one of which gets most of the traffic.
Loading a model takes ``--load-time`` seconds; serving a request takes an
exponentially distributed time. The real :class:`FifoScheduler` makes every
decision; this file only plays the runtime (applies decisions, reports back).

It compares

* ``llama-swap``: the scheduler as llama-swap behaves (``max_wait`` off): new
  requests for the hot model keep taking the fast path, so a cold request waits
  until the hot model happens to go idle;
* ``max_wait=N``: the starvation bound — after N s the hot model stops taking
  new work until the waiting swap has happened;
* ``naive FIFO``: strict arrival order, no collation, no fast path (every model
  change in the arrival sequence is a swap, once the loaded model is idle);
* ``naive one-at-a-time``: the simplest proxy one could write — a single lock
  taken in arrival order around "swap if needed, then serve". No joining of
  an in-flight swap, no serving of same-model requests side by side: each
  request gets its own turn (and its own swap when its model is not loaded).

Run: ``python bench/churn_sim.py [--seed 1] [--duration 7200] ...``
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import statistics
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelswap.core import decisions as d
from modelswap.core import events as e
from modelswap.core.groups import GroupPolicy, GroupSpec
from modelswap.core.scheduler import FifoScheduler

MODELS = ("hot", "cold1", "cold2", "cold3")


@dataclass(frozen=True, slots=True)
class Request:
    request_id: int
    model: str
    arrival: float
    service: float


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    swaps: int
    waits: list[float]
    cold_waits: list[float]
    rejected: int

    def row(self) -> str:
        return (
            f"{self.name:<22} swaps={self.swaps:>5}  "
            f"wait p50={_pct(self.waits, 50):6.2f}s p99={_pct(self.waits, 99):7.2f}s "
            f"max={max(self.waits):7.2f}s  cold p50={_pct(self.cold_waits, 50):6.2f}s "
            f"cold max={max(self.cold_waits):7.2f}s  rejected={self.rejected}"
        )


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def make_trace(
    seed: int, duration: float, rate: float, hot_share: float, mean_service: float
) -> list[Request]:
    """Poisson arrivals; ``hot_share`` of them for ``hot``, the rest spread evenly."""
    rng = random.Random(seed)
    trace: list[Request] = []
    now = 0.0
    for rid in itertools.count(1):
        now += rng.expovariate(rate)
        if now >= duration:
            return trace
        model = "hot" if rng.random() < hot_share else rng.choice(MODELS[1:])
        trace.append(Request(rid, model, now, rng.expovariate(1.0 / mean_service)))
    raise AssertionError("unreachable")


def simulate(
    trace: list[Request], load_time: float, max_wait: float, min_residency: float, name: str
) -> Result:
    """Play the runtime around a real FifoScheduler over ``trace``."""
    policy = GroupPolicy({"(default)": GroupSpec(members=MODELS)})
    limits = dict.fromkeys(MODELS, 10_000)  # measure waiting, not 429s
    sched = FifoScheduler(
        MODELS, policy, limits=limits, max_wait=max_wait, min_residency=min_residency
    )
    view = dict.fromkeys(MODELS, "stopped")
    by_id = {r.request_id: r for r in trace}
    heap: list[tuple[float, int, e.Event]] = []
    seq = itertools.count()
    for r in trace:
        heapq.heappush(
            heap, (r.arrival, next(seq), e.RequestArrived(r.request_id, r.model, r.arrival))
        )
    end = trace[-1].arrival if trace else 0.0
    for t in range(1, int(end) + 2):
        heapq.heappush(heap, (float(t), next(seq), e.Tick(float(t))))
    swaps: dict[int, d.StartSwap] = {}
    waits: list[float] = []
    cold: list[float] = []
    rejected = started = 0
    while heap:
        now, _, event = heapq.heappop(heap)
        if isinstance(event, e.SwapDone):
            swap = swaps.pop(event.swap_id)
            for m in swap.evict:
                view[m] = "stopped"
            view[swap.model] = "ready"
        for x in sched.handle(event, view):
            if isinstance(x, d.GrantServe):
                req = by_id[x.request_id]
                waits.append(now - req.arrival)
                if req.model != "hot":
                    cold.append(now - req.arrival)
                done = e.ServeDone(x.request_id, now + req.service)
                heapq.heappush(heap, (now + req.service, next(seq), done))
            elif isinstance(x, d.StartSwap):
                started += 1
                swaps[x.swap_id] = x
                for m in x.evict:
                    view[m] = "stopping"
                view[x.model] = "starting"
                done_at = now + load_time
                heapq.heappush(heap, (done_at, next(seq), e.SwapDone(x.swap_id, None, done_at)))
            elif isinstance(x, d.Reject):
                rejected += 1
            elif isinstance(x, d.Diagnostic | d.GrantError):
                raise AssertionError(x)
    assert len(waits) + rejected == len(trace)
    return Result(name, started, waits, cold, rejected)


def simulate_naive(trace: list[Request], load_time: float) -> Result:
    """Strict FIFO, no collation: the head request blocks everything behind it."""
    queue = deque(trace)
    loaded: str | None = None
    busy_until: list[float] = []  # heap of serve completion times of the loaded model
    now = 0.0
    swaps = 0
    waits: list[float] = []
    cold: list[float] = []
    while queue:
        head = queue[0]
        now = max(now, head.arrival)
        if head.model != loaded:
            if busy_until:  # wait for the loaded model to go idle
                now = max(now, max(busy_until))
                busy_until.clear()
            now += load_time
            loaded = head.model
            swaps += 1
        queue.popleft()
        waits.append(now - head.arrival)
        if head.model != "hot":
            cold.append(now - head.arrival)
        busy_until.append(now + head.service)
    return Result("naive FIFO", swaps, waits, cold, 0)


def simulate_serial(trace: list[Request], load_time: float) -> Result:
    """One request at a time in arrival order: wait for the previous to finish, swap, serve.

    The baseline that shows what collation and concurrent serving buy: with
    mean serve time above the arrival interval it is over capacity, so its
    waits grow for as long as the trace runs.
    """
    loaded: str | None = None
    free_at = 0.0  # when the previous request finished
    swaps = 0
    waits: list[float] = []
    cold: list[float] = []
    for req in trace:
        start = max(free_at, req.arrival)
        if req.model != loaded:
            start += load_time
            loaded = req.model
            swaps += 1
        waits.append(start - req.arrival)
        if req.model != "hot":
            cold.append(start - req.arrival)
        free_at = start + req.service
    return Result("naive one-at-a-time", swaps, waits, cold, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=7200.0, help="trace length, s")
    parser.add_argument("--rate", type=float, default=1.0, help="arrivals per second")
    parser.add_argument("--hot-share", type=float, default=0.95)
    parser.add_argument("--service", type=float, default=3.0, help="mean serve time, s")
    parser.add_argument("--load-time", type=float, default=1.0, help="swap time, s")
    parser.add_argument("--max-wait", type=float, default=30.0)
    parser.add_argument("--min-residency", type=float, default=0.0)
    args = parser.parse_args(argv)
    trace = make_trace(args.seed, args.duration, args.rate, args.hot_share, args.service)
    print(
        f"{len(trace)} requests over {args.duration:.0f}s, {args.hot_share:.0%} for 'hot', "
        f"rate {args.rate}/s, mean serve {args.service}s, load {args.load_time}s, "
        f"seed {args.seed}"
    )
    results = [
        simulate(trace, args.load_time, 0.0, 0.0, "llama-swap (max_wait off)"),
        simulate(
            trace, args.load_time, args.max_wait, args.min_residency, f"max_wait={args.max_wait:g}s"
        ),
        simulate_naive(trace, args.load_time),
        simulate_serial(trace, args.load_time),
    ]
    for result in results:
        print(result.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
