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

Traces (:func:`named_trace`): ``hot`` (95 % to one model: the starvation
case), ``uniform`` (4 models equally, near capacity: everybody queues, nobody
starves), ``70/30`` (two models) and ``bursts`` (agents asking A B C A B C,
each step after the previous answer). ``slots`` models an upstream that
serves N requests at once while the rest wait inside it.

Run: ``python bench/churn_sim.py [--seed 1] [--duration 7200] ...``; the
BENCHMARKS.md table: ``python bench/churn_sim.py --compare 5``.
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
    """One request. ``after``: in an agent burst, the request whose answer this one waits
    for (it arrives ``arrival`` seconds after that answer); None: ``arrival`` is absolute."""

    request_id: int
    model: str
    arrival: float
    service: float
    after: int | None = None


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


def make_weighted_trace(
    seed: int, duration: float, rate: float, weights: dict[str, float], mean_service: float
) -> list[Request]:
    """Poisson arrivals, each for a model drawn with ``weights`` (uniform, 70/30, …)."""
    rng = random.Random(seed)
    names, shares = list(weights), list(weights.values())
    trace: list[Request] = []
    now = 0.0
    for rid in itertools.count(1):
        now += rng.expovariate(rate)
        if now >= duration:
            return trace
        model = rng.choices(names, shares)[0]
        trace.append(Request(rid, model, now, rng.expovariate(1.0 / mean_service)))
    raise AssertionError("unreachable")


def make_burst_trace(
    seed: int,
    duration: float,
    agent_rate: float,
    steps: int,
    mean_service: float,
    think: float = 0.5,
    cycle: tuple[str, ...] = MODELS[:3],
) -> list[Request]:
    """Agent-like bursts: agents arrive (Poisson, ``agent_rate``/s), each asks A B C A B C…

    Every step after the first waits for the previous step's answer, then
    ``think`` seconds (a closed loop, like a tool-calling agent that alternates
    between a planner, a coder and an embedder).
    """
    rng = random.Random(seed)
    trace: list[Request] = []
    now = 0.0
    rid = 0
    while True:
        now += rng.expovariate(agent_rate)
        if now >= duration:
            return trace
        previous: int | None = None
        for step in range(steps):
            rid += 1
            model = cycle[step % len(cycle)]
            service = rng.expovariate(1.0 / mean_service)
            if previous is None:
                trace.append(Request(rid, model, now, service))
            else:
                trace.append(Request(rid, model, think, service, after=previous))
            previous = rid


TRACES = ("hot", "uniform", "70/30", "bursts")


def named_trace(name: str, seed: int, duration: float) -> list[Request]:
    """The benchmark's traces, with the parameters BENCHMARKS.md reports.

    ``hot``: 95 % to one model, the starvation case. ``uniform``: 4 models
    equally, near capacity (nobody starves, everybody queues). ``70/30``: two
    models. ``bursts``: agents cycling over 3 models.
    """
    if name == "hot":
        return make_trace(seed, duration, 1.0, 0.95, 3.0)
    if name == "uniform":
        return make_weighted_trace(seed, duration, 1.0, dict.fromkeys(MODELS, 1.0), 3.0)
    if name == "70/30":
        return make_weighted_trace(seed, duration, 1.0, {"hot": 0.7, "cold1": 0.3}, 3.0)
    if name == "bursts":
        return make_burst_trace(seed, duration, 0.1, 6, 3.0)
    raise ValueError(f"unknown trace {name!r} (known: {', '.join(TRACES)})")


def simulate(
    trace: list[Request],
    load_time: float,
    max_wait: float,
    min_residency: float,
    name: str,
    *,
    slots: int = 0,
) -> Result:
    """Play the runtime around a real FifoScheduler over ``trace``.

    ``slots`` > 0: a model's upstream serves that many requests at once; the
    rest of its granted requests wait inside the upstream (they are in flight
    for the scheduler, so they keep the model busy), as llama-server's
    ``--parallel`` slots do. 0: unlimited.
    """
    policy = GroupPolicy({"(default)": GroupSpec(members=MODELS)})
    limits = dict.fromkeys(MODELS, 10_000)  # measure waiting, not 429s
    sched = FifoScheduler(
        MODELS, policy, limits=limits, max_wait=max_wait, min_residency=min_residency
    )
    return _play(sched, trace, load_time, name, slots)


def _play(
    sched: FifoScheduler, trace: list[Request], load_time: float, name: str, slots: int
) -> Result:
    view = dict.fromkeys(MODELS, "stopped")
    by_id = {r.request_id: r for r in trace}
    followers = {r.after: r for r in trace if r.after is not None}
    arrived: dict[int, float] = {}
    heap: list[tuple[float, int, e.Event]] = []
    seq = itertools.count()
    for r in trace:
        if r.after is None:
            heapq.heappush(
                heap, (r.arrival, next(seq), e.RequestArrived(r.request_id, r.model, r.arrival))
            )
    heapq.heappush(heap, (1.0, next(seq), e.Tick(1.0)))
    pending = len(heap) - 1  # events other than ticks
    slot_free: dict[str, list[float]] = {m: [] for m in MODELS}
    swaps: dict[int, d.StartSwap] = {}
    waits: list[float] = []
    cold: list[float] = []
    rejected = started = 0
    while heap:
        now, _, event = heapq.heappop(heap)
        if isinstance(event, e.Tick):
            if pending == 0:
                continue
            heapq.heappush(heap, (now + 1.0, next(seq), e.Tick(now + 1.0)))
        else:
            pending -= 1
        if isinstance(event, e.RequestArrived):
            arrived[event.request_id] = now
        if isinstance(event, e.SwapDone):
            swap = swaps.pop(event.swap_id)
            for m in swap.evict:
                view[m] = "stopped"
            view[swap.model] = "ready"
        if isinstance(event, e.ServeDone):
            follower = followers.get(event.request_id)
            if follower is not None:
                at = now + follower.arrival
                arrival = e.RequestArrived(follower.request_id, follower.model, at)
                heapq.heappush(heap, (at, next(seq), arrival))
                pending += 1
        for x in sched.handle(event, view):
            if isinstance(x, d.GrantServe):
                req = by_id[x.request_id]
                begin = now
                if slots > 0:
                    free = slot_free[req.model]
                    if len(free) >= slots:
                        begin = max(now, heapq.heappop(free))
                    heapq.heappush(free, begin + req.service)
                # The wait a client sees: until its request is being served, which
                # with slots can be later than the grant (it waits inside the upstream).
                waits.append(begin - arrived[req.request_id])
                if req.model != "hot":
                    cold.append(begin - arrived[req.request_id])
                done = e.ServeDone(x.request_id, begin + req.service)
                heapq.heappush(heap, (begin + req.service, next(seq), done))
                pending += 1
            elif isinstance(x, d.StartSwap):
                started += 1
                swaps[x.swap_id] = x
                for m in x.evict:
                    view[m] = "stopping"
                view[x.model] = "starting"
                done_at = now + load_time
                heapq.heappush(heap, (done_at, next(seq), e.SwapDone(x.swap_id, None, done_at)))
                pending += 1
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


def compare(
    seeds: int, duration: float, max_wait: float, slot_options: tuple[int, ...] = (0, 4, 8)
) -> list[str]:
    """Markdown rows: every trace x upstream slots, ``maxWait`` off vs on, summed over seeds.

    Swaps are totals over the seeds; the max wait is the range of each seed's worst wait.
    """
    rows = [
        f"| trace | slots | swaps, off | swaps, maxWait {max_wait:g} | change | "
        "max wait, off | max wait, on |",
        "|---|---|---|---|---|---|---|",
    ]
    for trace_name in TRACES:
        for slots in slot_options:
            off_swaps = on_swaps = 0
            off_max: list[float] = []
            on_max: list[float] = []
            for seed in range(1, seeds + 1):
                trace = named_trace(trace_name, seed, duration)
                off = simulate(trace, 1.0, 0.0, 0.0, "off", slots=slots)
                on = simulate(trace, 1.0, max_wait, max_wait / 3, "on", slots=slots)
                off_swaps += off.swaps
                on_swaps += on.swaps
                off_max.append(max(off.waits))
                on_max.append(max(on.waits))
            change = (on_swaps / off_swaps - 1.0) * 100.0 if off_swaps else 0.0
            row = (
                f"| {trace_name} | {slots or 'unlimited'} | {off_swaps} | {on_swaps} | "
                f"{change:+.1f} % | {min(off_max):.0f}–{max(off_max):.0f} s | "
                f"{min(on_max):.0f}–{max(on_max):.0f} s |"
            )
            rows.append(row)
            print(row, flush=True)
    return rows


def sweep(seeds: int, duration: float, slot_options: tuple[int, ...] = (4, 8)) -> list[str]:
    """Markdown rows: the hot trace under ever smaller ``maxWait``, per slot count.

    Tells a rule that bounds too loosely from a machine out of capacity: if
    the worst cold wait does not fall as ``maxWait`` does, no rule can bound it.
    """
    rows = [
        "| slots | maxWait | swaps | worst cold wait | p99 wait (all) |",
        "|---|---|---|---|---|",
    ]
    for slots in slot_options:
        for max_wait in (5.0, 10.0, 20.0, 30.0):
            swaps = 0
            worst: list[float] = []
            p99: list[float] = []
            for seed in range(1, seeds + 1):
                trace = named_trace("hot", seed, duration)
                on = simulate(trace, 1.0, max_wait, max_wait / 3, "on", slots=slots)
                swaps += on.swaps
                worst.append(max(on.cold_waits))
                p99.append(_pct(on.waits, 99))
            row = (
                f"| {slots} | {max_wait:g} s | {swaps} | {min(worst):.0f}–{max(worst):.0f} s | "
                f"{min(p99):.0f}–{max(p99):.0f} s |"
            )
            rows.append(row)
            print(row, flush=True)
    return rows


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
    parser.add_argument(
        "--compare",
        type=int,
        metavar="SEEDS",
        default=0,
        help="print the markdown table of every trace (hot, uniform, 70/30, bursts) with and "
        "without upstream slots, maxWait off vs --max-wait, over seeds 1..SEEDS",
    )
    parser.add_argument(
        "--sweep",
        type=int,
        metavar="SEEDS",
        default=0,
        help="print the hot trace with 4 and 8 upstream slots under maxWait 5/10/20/30 s",
    )
    args = parser.parse_args(argv)
    if args.sweep:
        sweep(args.sweep, args.duration)
        return 0
    if args.compare:
        compare(args.compare, args.duration, args.max_wait)
        return 0
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
