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

A second measure needs no baseline at all: each fake logs the instant its
``/health`` first answers 200 (its own "ready" moment), so "answered − ready"
is exactly what modelswap adds after the model is up: noticing it (health
polling) and forwarding. Both are measured for the normal fake and for its
``--nagle`` mode (Nagle on, headers and body in two sends), whose health
probes on a kept-alive connection used to come back ~40 ms late (issue 13
item 3). ``--baseline REV`` also measures modelswap at git revision REV in
the same run (its children are today's fake, via the model's ``env``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from loadgen import CHAT_BODY, ROOT, Goal, ModelswapProcess, Report, percentile
from proxy_overhead import baseline_checkout

from modelswap.testing.fake_process import (
    FakeUpstreamProcess,
    fake_upstream_cmd,
    free_port,
    read_events,
)

STARTUP_DELAY = 0.3
GOAL_OVERHEAD_MS = 20.0
KINDS = ("normal", "nagle")


def events_path(tmp: Path, target: str, kind: str, model: str) -> Path:
    return tmp / f"{target}-{kind}-{model}.events".replace("@", "-")


def write_config(
    tmp: Path, target: str = "modelswap", kind: str = "normal", fake_path: Path | None = None
) -> Path:
    """Models a and b evict each other (one swap group), nothing preloaded.

    Ports are picked free here rather than from ``startPort`` (5800…), which
    other modelswap instances on a shared machine may hold. Each model's fake
    appends to its own event log (one ``healthy`` line per start);
    ``fake_path`` is the PYTHONPATH its children get (a baseline's own tree
    has no ``--nagle``).
    """
    models: dict[str, dict[str, object]] = {}
    for name in ("a", "b"):
        port = free_port()
        models[name] = {
            "cmd": fake_upstream_cmd(
                port,
                name,
                startup_delay=STARTUP_DELAY,
                nagle=kind == "nagle",
                event_log=events_path(tmp, target, kind, name),
            ),
            "proxy": f"http://127.0.0.1:{port}",
        }
        if fake_path is not None:
            models[name]["env"] = [f"PYTHONPATH={fake_path}"]
    config = {
        "healthCheckTimeout": 30,
        "logLevel": "warn",
        "models": models,
        "groups": {"pair": {"swap": True, "exclusive": True, "members": ["a", "b"]}},
    }
    path = tmp / f"{target}-{kind}.yaml".replace("@", "-")
    path.write_text(json.dumps(config, indent=2))
    return path


def direct_cold_start(events: Path, kind: str = "normal") -> float:
    """Spawn the fake ourselves; seconds from spawn until its ``/health`` turns 200.

    The instant it turns healthy comes from the fake's own event log
    (``listening`` time + the startup delay, as in ``bench/readiness.py``), not
    from polling: on 2 cores a tight client poll steals CPU from the child's
    imports and makes the baseline slower than the thing it is a baseline for.
    Waiting for the "listening" stdout line is a blocking ``select``, no spin.
    """
    fake = FakeUpstreamProcess(
        "direct", event_log=events, startup_delay=STARTUP_DELAY, nagle=kind == "nagle"
    )
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


def after_ready(events: Path, starts_before: int) -> float:
    """Now − the newest start's first 200 on ``/health`` (its own "ready" moment).

    Call right after the request that started it returned; ``starts_before``
    (healthy lines before that request) proves the newest line is this start's.
    """
    answered = time.time()
    healthy = [e["t"] for e in read_events(events) if e["event"] == "healthy"]
    if len(healthy) != starts_before + 1:
        raise RuntimeError(f"{events}: {len(healthy)} healthy lines, expected {starts_before + 1}")
    return answered - float(healthy[-1])


def direct_events(model_events: Path, i: int) -> Path:
    """A fresh log per direct start (``direct_cold_start`` reads its first line)."""
    return model_events.with_name(f"{model_events.stem}-direct{i}.events")


def healthy_count(events: Path) -> int:
    return sum(1 for e in read_events(events) if e["event"] == "healthy")


async def unload_all(session: aiohttp.ClientSession, base: str) -> None:
    async with session.post(f"{base}/api/models/unload") as resp:
        if resp.status != 200:
            raise RuntimeError(f"unload: {resp.status}")


@dataclasses.dataclass
class Samples:
    """Seconds, per measure, for one (target, kind) run."""

    swap: list[float] = dataclasses.field(default_factory=list)
    cold: list[float] = dataclasses.field(default_factory=list)
    direct: list[float] = dataclasses.field(default_factory=list)
    after_ready: list[float] = dataclasses.field(default_factory=list)
    """Request answered − the started fake's first 200 (swaps and cold starts)."""


async def measure(
    base: str, swaps: int, tmp: Path, events: dict[str, Path], kind: str = "normal"
) -> Samples:
    """Swap latencies, cold latencies, direct cold starts (interleaved) and after-ready.

    A swap evicts the other model first, so it also pays that model's exit; a
    cold request finds nothing running (everything unloaded before it) and
    pays only the start — the pure "beyond the model's own load time" cost.
    The direct starts block this loop briefly; nothing else runs on it meanwhile.
    """
    url = f"{base}/v1/chat/completions"
    out = Samples()
    timeout = aiohttp.ClientTimeout(total=60)

    async def timed_start(model: str) -> float:
        before = healthy_count(events[model])
        took = await swap_request(session, url, model)
        out.after_ready.append(after_ready(events[model], before))
        return took

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await swap_request(session, url, "b")  # initial load: nothing to evict yet
        for i in range(swaps):
            out.swap.append(await timed_start("ab"[i % 2]))
            if i % 2 == 0:
                out.direct.append(direct_cold_start(direct_events(events["a"], i), kind))
        for _ in range(swaps // 2):
            await unload_all(session, base)
            out.cold.append(await timed_start("a"))
    return out


def run(quick: bool = False, baseline: str | None = None) -> Report:
    """Both fake kinds through modelswap (and modelswap@``baseline``); one report."""
    swaps = 6 if quick else 24
    results: dict[tuple[str, str], Samples] = {}
    with tempfile.TemporaryDirectory(prefix="modelswap-bench-") as tmpdir:
        tmp = Path(tmpdir)
        with contextlib.ExitStack() as stack:
            targets: dict[str, dict[str, str] | None] = {"modelswap": None}
            if baseline is not None:
                env = stack.enter_context(baseline_checkout(baseline, tmp))
                env["PYTHONSAFEPATH"] = "1"  # else `-m` run from the repo root imports it
                targets[f"modelswap@{baseline}"] = env
            for kind in KINDS:
                for target, env in targets.items():
                    fake_path = None if env is None else ROOT
                    config = write_config(tmp, target, kind, fake_path)
                    events = {m: events_path(tmp, target, kind, m) for m in ("a", "b")}
                    with ModelswapProcess(config, env=env) as ms:
                        samples = asyncio.run(measure(ms.url, swaps, tmp, events, kind))
                    results[target, kind] = samples
                    print(
                        f"  {kind:6s} {target:22s} swap median "
                        f"{statistics.median(samples.swap) * 1e3:7.1f} ms, answered − ready "
                        f"median {statistics.median(samples.after_ready) * 1e3:6.1f} ms",
                        flush=True,
                    )
    return _report(results, list(targets))


def _ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p) * 1e3:.1f} ms"


def _report(results: dict[tuple[str, str], Samples], targets: list[str]) -> Report:
    first = results["modelswap", "normal"]
    md = [
        f"Two fakes (`--startup-delay {STARTUP_DELAY}`) in one swap group, requests "
        f"alternating a/b through modelswap, every one a swap (n={len(first.swap)} per row); "
        "baseline: the same kind of fake cold-started directly, spawn → `/health` turns 200 "
        f"(from its event log) (n={len(first.direct)}, interleaved); cold: nothing running "
        f"(n={len(first.cold)}). **Answered − ready**: the request's answer − the started "
        "fake's own first 200 on `/health` (from its event log), swaps and cold starts "
        "together: readiness detection + forward, no baseline needed. `nagle`: the fake's "
        "`--nagle` mode (stdlib `http.server`, Nagle on, headers and body in two sends).",
        "",
        "| upstream | target | swap latency (median / p90) | direct cold start (median) "
        "| swap overhead (median / p90) | cold overhead (median / p90) "
        "| answered − ready (median / p90 / max) |",
        "|---|---|---|---|---|---|---|",
    ]
    goals: list[Goal] = []
    for kind in KINDS:
        for target in targets:
            r = results[target, kind]
            base = statistics.median(r.direct)
            overhead = [x - base for x in r.swap]
            cold = [x - base for x in r.cold]
            md.append(
                f"| {kind} | {target} | {_ms(r.swap, 50)} / {_ms(r.swap, 90)} | "
                f"{base * 1e3:.1f} ms | {_ms(overhead, 50)} / {_ms(overhead, 90)} | "
                f"{_ms(cold, 50)} / {_ms(cold, 90)} | {_ms(r.after_ready, 50)} / "
                f"{_ms(r.after_ready, 90)} / {max(r.after_ready) * 1e3:.1f} ms |"
            )
        r = results["modelswap", kind]
        base = statistics.median(r.direct)
        prefix = "" if kind == "normal" else "Nagle upstream: "
        goals += [
            Goal(
                f"{prefix}cold-start overhead (median, vs direct cold start)",
                percentile([x - base for x in r.cold], 50) * 1e3,
                GOAL_OVERHEAD_MS,
                "ms",
            ),
            Goal(
                f"{prefix}swap overhead incl. evicting the other model (median)",
                percentile([x - base for x in r.swap], 50) * 1e3,
                GOAL_OVERHEAD_MS,
                "ms",
            ),
            Goal(
                f"{prefix}answered − upstream's own ready moment (median)",
                percentile(r.after_ready, 50) * 1e3,
                GOAL_OVERHEAD_MS,
                "ms",
            ),
        ]
    notes = [
        "Swap overhead includes the evicted model's exit; cold overhead and answered − "
        "ready do not."
    ]
    return Report("Swap overhead (`bench/swap_overhead.py`)", md, goals, notes)


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
