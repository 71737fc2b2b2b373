"""Run every benchmark, print a summary, append one dated section to BENCHMARKS.md.

Run: ``python3 bench/run.py`` (full, a few minutes) or ``python3 bench/run.py --quick``
(smoke run: shorter loads, fewer swaps, a shorter churn trace). ``--no-write``
prints without touching BENCHMARKS.md, ``--output FILE`` appends elsewhere,
``--only proxy,swap`` runs a subset.

Why one command: each number in BENCHMARKS.md is only meaningful next to its
baseline measured in the same run on the same machine, so the runner records
the machine (cores, CPU, Python, load average at start, which tools were
found) with the results, and every section carries its own baseline column.
One benchmark failing does not lose the others: its section says it failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import churn_sim
import instructions
import nagle_warm
import proxy_overhead
import streaming
import swap_overhead
from loadgen import Report

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def churn(quick: bool) -> Report:
    """The pure scheduler on a seeded trace: modelswap default, maxWait 30, naive policies."""
    duration, seed, load, max_wait = (1800.0 if quick else 7200.0), 1, 1.0, 30.0
    trace = churn_sim.make_trace(seed, duration, rate=1.0, hot_share=0.95, mean_service=3.0)
    results = [
        ("modelswap default (`maxWait` off, as llama-swap)",
         churn_sim.simulate(trace, load, 0.0, 0.0, "default")),
        (f"modelswap `maxWait: {max_wait:g}` (minResidency {max_wait / 3:g} s, the default)",
         churn_sim.simulate(trace, load, max_wait, max_wait / 3, "maxWait")),
        ("naive, no collation: strict arrival order, a swap at every model change",
         churn_sim.simulate_naive(trace, load)),
        ("naive one-at-a-time: one lock, swap-if-needed then serve (over capacity)",
         churn_sim.simulate_serial(trace, load)),
    ]  # fmt: skip
    md = [
        f"Pure simulation driving the real `FifoScheduler`: {len(trace)} requests over "
        f"{duration:.0f} s at 1 req/s, 4 mutually-evicting models, 95 % to one hot model, "
        f"mean serve 3 s, load {load:g} s, seed {seed}.",
        "",
        "| policy | swaps | queue wait p50 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for label, r in results:
        md.append(
            f"| {label} | {r.swaps} | {churn_sim._pct(r.waits, 50):.1f} s | "
            f"{churn_sim._pct(r.waits, 99):.1f} s | {max(r.waits):.1f} s |"
        )
    for label, r in results:
        print(f"  {r.row()}  [{label}]", flush=True)
    notes = [
        "One-at-a-time serving cannot keep up with 3 s serves arriving every second, so "
        "its waits grow with the trace length; it shows what concurrent serving buys, "
        "the naive FIFO row what collation buys."
    ]
    return Report("Churn (`bench/churn_sim.py`)", md, [], notes)


BASELINE: str | None = None
"""``--baseline REV``: proxy, streaming, swap, nagle and instructions also measure this revision."""

BENCHES: dict[str, Callable[[bool], Report]] = {
    "proxy": lambda quick: proxy_overhead.run(quick, baseline=BASELINE, repeat=1 if quick else 3),
    "streaming": lambda quick: streaming.run(quick, BASELINE),
    "swap": lambda quick: swap_overhead.run(quick, BASELINE),
    "nagle": lambda quick: nagle_warm.run(quick, BASELINE),
    "churn": churn,
    "instructions": lambda quick: instructions.run(BASELINE, quick=quick),
}


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> str:
    """Cores, CPU model, Python, load at start, tools found — the context every number needs."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    wrk = _first_line(["wrk", "--version"]).split(" [")[0] if shutil.which("wrk") else "absent"
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    nginx = _first_line([nginx_bin, "-v"]) if os.path.exists(nginx_bin) else "absent"
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; load average at start {load}; "
        f"wrk: {wrk}; nginx: {nginx.removeprefix('nginx version: ')}"
    )


def render(
    reports: list[Report], quick: bool, started: dt.datetime, took: float, machine_line: str
) -> str:
    mode = " --quick" if quick else ""
    lines = [
        "",
        f"## Benchmark run {started:%Y-%m-%d %H:%M} UTC (`python3 bench/run.py{mode}"
        + (f" --baseline {BASELINE}" if BASELINE else "")
        + "`)",
        "",
        f"Machine: {machine_line}. Took {took:.0f} s."
        + (" Quick smoke run: short loads, not for comparison." if quick else ""),
    ]
    goals = [g for r in reports for g in r.goals]
    if goals:
        lines += ["", "| goal | measured | target | verdict |", "|---|---|---|---|"]
        for g in goals:
            op = "≥" if g.higher_is_better else "≤"
            lines.append(
                f"| {g.name} | {g.measured:,.1f} {g.unit} | {op} {g.target:,.0f} {g.unit} | "
                f"{g.verdict()} |"
            )
    for r in reports:
        lines += ["", f"### {r.title}", "", *r.markdown]
        if r.notes:
            lines += ["", *r.notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fast smoke run")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--output", type=Path, default=BENCHMARKS, help="file to append to")
    parser.add_argument("--only", default="", help=f"comma list of {','.join(BENCHES)}")
    parser.add_argument(
        "--baseline", metavar="REV", help="also measure this git revision (all but churn)"
    )
    args = parser.parse_args()
    global BASELINE
    BASELINE = args.baseline
    selected = [s for s in args.only.split(",") if s] or list(BENCHES)
    unknown = set(selected) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started = dt.datetime.now(dt.UTC)
    machine_line = machine()  # before our own load skews the load average
    print(f"Machine: {machine_line}", flush=True)
    began = time.monotonic()
    reports: list[Report] = []
    for name in selected:
        print(f"\n== {name} ==", flush=True)
        t0 = time.monotonic()
        try:
            report = BENCHES[name](args.quick)
        except Exception as exc:  # one failure must not lose the other sections
            traceback.print_exc()
            report = Report(f"{name}: FAILED", [f"`{type(exc).__name__}: {exc}`"], [], [])
        print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)
        reports.append(report)
    took = time.monotonic() - began
    section = render(reports, args.quick, started, took, machine_line)
    print("\n== summary ==")
    for goal in (g for r in reports for g in r.goals):
        print(goal.line())
    for r in reports:
        for note in r.notes:
            print(f"note ({r.title.split(' (')[0]}): {note}")
    if args.no_write:
        print(section)
    else:
        with args.output.open("a", encoding="utf-8") as f:
            f.write(section)
        print(f"appended to {args.output} ({took:.0f} s)")
    return 1 if any(r.title.endswith("FAILED") for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
