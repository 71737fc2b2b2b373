"""Warm requests to a Nagle-bound upstream: direct vs through modelswap, and a normal fake.

Run: ``python3 bench/nagle_warm.py [--quick] [--baseline REV]`` (``bench/run.py`` runs it too).

Why: an upstream that leaves Nagle on and writes headers and body in two
sends (Python's ``http.server``; the fake's ``--nagle`` mode) answers every
request on a kept-alive connection ~40 ms late for a client whose kernel
delays its ACK. modelswap keeps its upstream connections alive, so before
issue 13 item 3 every warm request through it paid that stall; now its
upstream sockets re-arm ``TCP_QUICKACK`` (:mod:`modelswap.quickack`).

One ``python -m modelswap`` with two preloaded models side by side — a normal
fake and a ``--nagle`` fake — and, with ``--baseline REV``, a second one run
from a worktree of REV (its children are today's fake, via the model's
``env``). Each target gets sequential requests on one kept-alive client
connection (the steady state of one user), rounds interleaved across targets
so load drift hits all alike. Direct rows show the upstream alone three ways:
a plain keep-alive client (the stall, for Nagle), a new connection per
request (how the stall was first missed: a fresh connection ACKs at once), and
a keep-alive client with quick ACKs — the upstream's own answer time, the
baseline for "added".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from loadgen import ROOT, Goal, ModelswapProcess, Report, loop_factory, percentile
from proxy_overhead import baseline_checkout

from modelswap.quickack import QuickAckConnector
from modelswap.testing.fake_process import fake_upstream_cmd, free_port

PATH = "/v1/chat/completions"
KINDS = ("normal", "nagle")
GOAL_ADDED_MS = 2.0
STALLED = 0.035
"""A request this slow waited for a delayed ACK (≥ 40 ms on Linux)."""
BODIES: list[dict[str, object]] = [
    {"messages": []},
    {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    {"messages": [{"role": "user", "content": "x " * 1000}]},
]
"""Request shapes, one per round in turn: whether a connection falls into the stall
depends on segment sizes (Linux's delayed-ACK heuristics) as well as timing."""


def write_config(tmp: Path, name: str, ports: dict[str, int], fake_path: Path | None) -> Path:
    """Both fakes preloaded, never evicting each other; ``fake_path``: PYTHONPATH for them."""
    models: dict[str, dict[str, object]] = {}
    for kind in KINDS:
        model: dict[str, object] = {
            "cmd": fake_upstream_cmd(ports[kind], kind, nagle=kind == "nagle"),
            "proxy": f"http://127.0.0.1:{ports[kind]}",
        }
        if fake_path is not None:
            model["env"] = [f"PYTHONPATH={fake_path}"]
        models[kind] = model
    config = {
        "healthCheckTimeout": 30,
        "models": models,
        "groups": {"both": {"swap": False, "exclusive": True, "members": list(KINDS)}},
        "hooks": {"onStartup": {"preload": list(KINDS)}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


Connector = Callable[[], aiohttp.BaseConnector]


async def timed(
    url: str, model: str, n: int, connector: Connector, shape: dict[str, object]
) -> list[float]:
    """``n`` sequential requests on one session (one kept-alive connection, unless the
    connector closes each); seconds each. Two untimed requests first warm the pool."""
    body = {**shape, "model": model}
    took: list[float] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector(), timeout=timeout) as session:
        for i in range(n + 2):
            began = time.perf_counter()
            async with session.post(url, json=body) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url} ({model}): {resp.status}")
            if i >= 2:
                took.append(time.perf_counter() - began)
    return took


async def wait_loaded(url: str, model: str, timeout: float = 60.0) -> None:
    """Until the preloaded model answers (condition check with a deadline)."""
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.post(url, json={**BODIES[0], "model": model}) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)


async def reload(base: str, model: str) -> None:
    """Unload ``model`` and load it again, so the timed requests that follow at once
    use a new upstream connection, as after any swap. Whether a connection falls into
    the stall is settled early (its first answers, the fake starting a thread for it,
    then the next request within the delayed-ACK timeout), and it stays there; so
    each round samples a new connection, started the way real ones are."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/api/models/unload/{model}") as resp,
    ):
        if resp.status != 200:
            raise RuntimeError(f"unload {model}: {resp.status}")
    await wait_loaded(f"{base}{PATH}", model)


def _plain() -> aiohttp.BaseConnector:
    return aiohttp.TCPConnector(limit=1)


def _fresh() -> aiohttp.BaseConnector:
    return aiohttp.TCPConnector(limit=1, force_close=True)


def _quick() -> aiohttp.BaseConnector:
    return QuickAckConnector(limit=1)


def run(quick: bool = False, baseline: str | None = None) -> Report:
    n, rounds = (15, 3) if quick else (30, 6)
    samples: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="modelswap-bench-") as tmpdir:
        tmp = Path(tmpdir)
        with contextlib.ExitStack() as stack:
            ports = {kind: free_port() for kind in KINDS}
            ms = stack.enter_context(ModelswapProcess(write_config(tmp, "modelswap", ports, None)))

            def direct(kind: str) -> str:
                return f"http://127.0.0.1:{ports[kind]}{PATH}"

            targets: dict[str, tuple[Callable[[str], str], Connector]] = {
                "direct, keep-alive": (direct, _plain),
                "direct, new connection each": (direct, _fresh),
                "direct, keep-alive + quick ACK": (direct, _quick),
                "modelswap": (lambda kind: f"{ms.url}{PATH}", _plain),
            }
            if baseline is not None:
                env = stack.enter_context(baseline_checkout(baseline, tmp))
                env["PYTHONSAFEPATH"] = "1"  # else `-m` run from the repo root imports it
                old_ports = {kind: free_port() for kind in KINDS}
                config = write_config(tmp, "baseline", old_ports, ROOT)
                old = stack.enter_context(ModelswapProcess(config, env=env))
                targets[f"modelswap@{baseline}"] = (lambda kind: f"{old.url}{PATH}", _plain)
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                for target, (url, _) in targets.items():
                    if target.startswith("modelswap"):  # preloaded: wait until it is done
                        for kind in KINDS:
                            runner.run(wait_loaded(url(kind), kind))
                for round_ in range(rounds):
                    shape = BODIES[round_ % len(BODIES)]
                    for kind in KINDS:
                        for target, (url, connector) in targets.items():
                            if target.startswith("modelswap"):
                                runner.run(reload(url(kind).removesuffix(PATH), kind))
                            took = runner.run(timed(url(kind), kind, n, connector, shape))
                            samples.setdefault((kind, target), []).extend(took)
                            print(
                                f"  {kind:6s} {target:32s} median "
                                f"{statistics.median(took) * 1e3:6.2f} ms",
                                flush=True,
                            )
    return _report(samples, list(targets), n * rounds)


def _report(samples: dict[tuple[str, str], list[float]], targets: list[str], n: int) -> Report:
    md = [
        f"Sequential warm `POST {PATH}` (non-streaming; the body one of {len(BODIES)} shapes, "
        "by round: no messages, one short message, a 2 KB prompt) on one kept-alive client "
        f"connection unless said, n={n} per cell in interleaved rounds (the model reloaded in "
        "modelswap right before each of its cells: a new upstream connection each); `nagle` is "
        "the fake's "
        "`--nagle` mode (stdlib `http.server`, Nagle on, headers and body in two sends). "
        "Added = median − the same upstream's median with a quick-ACK keep-alive client.",
        "",
        "| upstream | target | median | p90 | p99 | stalled (≥ 35 ms) | added (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    goals: list[Goal] = []
    for kind in KINDS:
        own = statistics.median(samples[kind, "direct, keep-alive + quick ACK"])
        for target in targets:
            values = samples[kind, target]
            median = statistics.median(values)
            added = "—" if target.startswith("direct") else f"{(median - own) * 1e3:+.2f} ms"
            md.append(
                f"| {kind} | {target} | {median * 1e3:.2f} ms | "
                f"{percentile(values, 90) * 1e3:.2f} ms | {percentile(values, 99) * 1e3:.2f} ms "
                f"| {sum(v >= STALLED for v in values)} of {len(values)} | {added} |"
            )
        goals.append(
            Goal(
                f"warm request added latency, {kind} upstream (median)",
                (statistics.median(samples[kind, "modelswap"]) - own) * 1e3,
                GOAL_ADDED_MS,
                "ms",
            )
        )
    return Report("Nagle upstreams: warm requests (`bench/nagle_warm.py`)", md, goals, [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="also measure this git revision")
    args = parser.parse_args()
    report = run(args.quick, args.baseline)
    print("\n".join(report.markdown))
    for goal in report.goals:
        print(goal.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
